"""Do morphology features separate BBBC021 conditions? FID, KID, accuracy and extraction time.

Data: the 843 real 68x68x3 uint16 BBBC021 crops of ../shared/data/bbbc021_crops
(DMSO 444, cyclohexamide 15 uM 189, 50 uM 210; read in place, never copied).
Crops are scaled to [-1, 1], the features' default range: x' = 2 clip(x / p_c, 0, 1) - 1 with
p_c the 99.9th percentile of channel c over all crops. 32x32 crops are the
68x68 ones resized (`skimage.transform.resize`, anti-aliased).

A feature space is useful for FID if two halves of one condition are much
closer than two conditions at the same sample size. Over `--splits` random
halvings of DMSO (A, B; 222 crops each), `feature_metrics` scores B and the
cyclohexamide crops against A (standardised with A). The classifier
(`condition_accuracy`) is trained on half of each condition's crops and
tested on the other half (real held-out accuracy: the ceiling a generator
would be compared with).

    python benchmarks/morphology_features.py [--size 68] [--splits 5]

(from a checkout whose flowzoo is the one imported, e.g. `PYTHONPATH=.`).

The numbers measured on this data are in the docstring of flowzoo/morphology.py.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from flowzoo import metrics_images as mi
from flowzoo import morphology

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc021_crops"


def load(data: Path, size: int) -> tuple[np.ndarray, pd.DataFrame]:
  """Crops `[N, size, size, 3]` scaled to [-1, 1] and their index rows."""
  index = pd.read_csv(data / "crops_index.csv")
  x = np.stack([np.load(data / p) for p in index.path]).astype(np.float64)
  top = np.percentile(x, 99.9, axis=(0, 1, 2))
  x = 2.0 * np.clip(x / top, 0.0, 1.0) - 1.0
  if size != x.shape[1]:
    from skimage.transform import resize  # pylint: disable=import-outside-toplevel
    x = resize(x, (len(x), size, size, 3), anti_aliasing=True, preserve_range=True)
  return x, index


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", type=Path, default=DATA)
  parser.add_argument("--size", type=int, default=68)
  parser.add_argument("--splits", type=int, default=5)
  args = parser.parse_args()

  x, index = load(args.data, args.size)
  t0 = time.perf_counter()
  f = morphology.features(x)
  took = time.perf_counter() - t0
  print(f"features of {len(x)} crops {x.shape[1:]}: {took:.2f} s "
        f"({1e3 * took / len(x):.2f} ms/crop), F = {f.shape[1]}")

  cond = np.where(index.compound == "DMSO", "DMSO",
                  index.compound + "_" + index.concentration_uM.map("{:g}".format))
  groups = {c: f[cond == c] for c in ("DMSO", "cyclohexamide_15", "cyclohexamide_50")}
  print("crops per condition:", {c: len(g) for c, g in groups.items()})

  rng = np.random.default_rng(0)
  kw = dict(kid_subset_size=200, kid_num_subsets=50)
  rows = []
  for s in range(args.splits):
    perm = rng.permutation(len(groups["DMSO"]))
    half = len(perm) // 2
    a, b = groups["DMSO"][perm[:half]], groups["DMSO"][perm[half:2 * half]]
    for name, other in (("DMSO B", b), ("cyclohexamide 15 uM", groups["cyclohexamide_15"]),
                        ("cyclohexamide 50 uM", groups["cyclohexamide_50"])):
      m = mi.feature_metrics({"DMSO A": a}, {"DMSO A": other}, seed=s, **kw)
      rows.append((name, m["fid_o"], m["kid_o"]))
  table = pd.DataFrame(rows, columns=["vs DMSO A", "FID", "KID"])
  print(f"\nFID / KID against DMSO half A ({args.splits} random halvings, mean ± sd):")
  stats = table.groupby("vs DMSO A", sort=False).agg(["mean", "std"])
  for name, r in stats.iterrows():
    print(f"  {name:22s} FID {r['FID', 'mean']:7.2f} ± {r['FID', 'std']:5.2f}   "
          f"KID {r['KID', 'mean']:7.3f} ± {r['KID', 'std']:5.3f}")

  print("\nclassifier trained on half of each condition, accuracy on the other half:")
  for names in (("DMSO", "cyclohexamide_50"), ("DMSO", "cyclohexamide_15", "cyclohexamide_50")):
    tr, te = [], []
    for c in names:
      idx = rng.permutation(len(groups[c]))
      tr.append((groups[c][idx[::2]], np.full(len(idx[::2]), c)))
      te.append((groups[c][idx[1::2]], np.full(len(idx[1::2]), c)))
    tx, ty = np.concatenate([t[0] for t in tr]), np.concatenate([t[1] for t in tr])
    hx, hy = np.concatenate([t[0] for t in te]), np.concatenate([t[1] for t in te])
    out = mi.condition_accuracy(tx, ty, hx, hy, real_feats=hx, real_labels=hy)
    chance = max(np.mean(hy == c) for c in names)
    print(f"  {' / '.join(names)}: accuracy {out['real_accuracy']:.3f} "
          f"(majority class {chance:.3f}), macro-F1 {out['real_macro_f1']:.3f}")

  d, c50 = groups["DMSO"], groups["cyclohexamide_50"]
  effect = (c50.mean(0) - d.mean(0)) / np.sqrt((c50.var(0) + d.var(0)) / 2 + 1e-12)
  print("\nlargest standardised differences, cyclohexamide 50 uM - DMSO:")
  for i in np.argsort(-np.abs(effect))[:6]:
    print(f"  {morphology.FEATURE_NAMES[i]:28s} {effect[i]:+.2f} sd "
          f"(DMSO {d[:, i].mean():.3g}, cyclohexamide {c50[:, i].mean():.3g})")


if __name__ == "__main__":
  main()
