"""1-NNA time: batched JAX distances (flowzoo.metrics_pointclouds) vs the old per-pair loop.

Clouds: scikit-learn's digits as point clouds (`digits_clouds`: 2-d, ~15-45
points, padded to the largest). `--sizes` gives n, the clouds per set: n
generated (here: other digits clouds) against n reference clouds, so 2n
clouds are pooled and (2n)(2n - 1)/2 pairs exist.

The old path (a Python loop of scipy `cdist` + `linear_sum_assignment` /
POT `ot.emd2` per pair, float64) is timed in full when it has at most
`--max_old_pairs` pairs, else on a random sample of that many pairs and
extrapolated (printed as "est."). The new path is timed twice: the first
call compiles for the padded shape, the second is what repeated evaluations
cost. Both paths' 1-NNA values are printed: they are equal wherever the old
path ran in full.

    python benchmarks/metrics_pointclouds.py [--sizes 100 500] [--max_old_pairs 5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ot
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from flowzoo.data.pointclouds import digits_clouds
from flowzoo import metrics_pointclouds as mp


def old_distance(x, y, distance):
  """The per-pair distances of the old `distance_matrix` loop."""
  if distance == "chamfer":
    d = cdist(x, y, "sqeuclidean")
    return float(d.min(1).mean() + d.min(0).mean())
  d = cdist(x, y, "euclidean")
  if len(x) == len(y):
    r, c = linear_sum_assignment(d)
    return float(d[r, c].mean())
  return float(ot.emd2(np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y)), d))


def old_nna(clouds, labels, distance, max_pairs, rng):
  """(seconds, 1-NNA or None when only a sample of pairs was timed, estimated?)."""
  n = len(clouds)
  i, j = np.triu_indices(n, 1)
  sample = i.size > max_pairs
  if sample:
    pick = rng.choice(i.size, max_pairs, replace=False)
    i, j = i[pick], j[pick]
  t0 = time.perf_counter()
  vals = [old_distance(clouds[a], clouds[b], distance) for a, b in zip(i, j)]
  seconds = time.perf_counter() - t0
  if sample:
    return seconds * (n * (n - 1) / 2) / max_pairs, None, True
  d = np.zeros((n, n))
  d[i, j] = d[j, i] = vals
  return seconds, mp.one_nn_accuracy(d, labels), False


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
  p.add_argument("--max_old_pairs", type=int, default=5000)
  a = p.parse_args()
  pops = digits_clouds()
  x = np.concatenate(pops.samples)
  mask = np.concatenate(pops.masks)
  print(f"digits clouds: {len(x)} available, padded to {x.shape[1]} points, dim {x.shape[2]}; "
        f"times move with the machine's load (compare ratios from one run)")
  rng = np.random.default_rng(0)
  for n in a.sizes:
    if 2 * n > len(x):
      raise SystemExit(f"--sizes {n}: needs {2 * n} clouds, the digits give {len(x)}.")
    pick = rng.choice(len(x), 2 * n, replace=False)
    fake, real = x[pick[:n]], x[pick[n:]]
    fm, rm = mask[pick[:n]], mask[pick[n:]]
    clouds = [c[m] for c, m in zip(np.concatenate([fake, real]), np.concatenate([fm, rm]))]
    labels = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    for distance in mp.DISTANCES:
      t0 = time.perf_counter()  # first call: includes compiling for this padded shape
      new = mp.nna(fake, real, fake_mask=fm, real_mask=rm, distance=distance)
      t_first = time.perf_counter() - t0
      t0 = time.perf_counter()
      mp.nna(fake, real, fake_mask=fm, real_mask=rm, distance=distance)
      t_new = time.perf_counter() - t0
      t_old, old, est = old_nna(clouds, labels, distance, a.max_old_pairs, rng)
      old_s = "n/a (sampled)" if old is None else f"{old:.4f}"
      print(f"n={n:5d} per set ({2 * n} pooled) {distance:8s} new {t_new:8.2f} s "
            f"(first call {t_first:7.2f} s)  "
            f"old {t_old:9.2f} s{' (est.)' if est else '       '}  speed-up {t_old / t_new:7.1f}x  "
            f"1-NNA new {new:.4f} old {old_s}", flush=True)


if __name__ == "__main__":
  main()
