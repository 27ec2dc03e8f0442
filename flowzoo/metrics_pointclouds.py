"""1-nearest-neighbour accuracy between sets of point clouds (WFM Tables 3-4).

1-NNA (Lopez-Paz & Oquab 2017; PointFlow, Yang et al. 2019) pools generated
clouds S_g and reference clouds S_r, classifies each cloud by the set of its
nearest neighbour among all other clouds, and reports the accuracy: 50 % when
the two sets are indistinguishable, 100 % when every cloud's nearest
neighbour lies in its own set (e.g. memorised or collapsed samples).

Distances between two clouds X, Y (over their real points only, padding
ignored), following PointFlow's conventions:
* Chamfer: mean_x min_y |x - y|^2 + mean_y min_x |x - y|^2;
* EMD: exact optimal transport with uniform weights and Euclidean ground cost,
  i.e. W1 between the empirical measures (= the mean matched distance of the
  optimal bijection when |X| = |Y|, solved with scipy's
  `linear_sum_assignment`; POT's network simplex `ot.emd2` otherwise).

Everything is float64 numpy: clouds differ in size, so a jitted kernel would
recompile for nearly every pair.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import ot
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist


def real_clouds(x: np.ndarray, mask: np.ndarray | None, what: str) -> list[np.ndarray]:
  """Unpads `[n, N, D]` clouds into a list of `[n_i, D]` arrays; rejects empty clouds."""
  x = np.asarray(x, np.float64)
  if x.ndim != 3:
    raise ValueError(f"{what}: point clouds must be [n, N, D], got shape {x.shape}.")
  if mask is None:
    return list(x)
  mask = np.asarray(mask, bool)
  if mask.shape != x.shape[:2]:
    raise ValueError(f"{what}: mask shape {mask.shape} != clouds' {x.shape[:2]}.")
  empty = np.flatnonzero(~mask.any(1))
  if empty.size:
    raise ValueError(f"{what}: {empty.size} empty point cloud(s) (all points masked), "
                     f"e.g. cloud {empty[0]}.")
  return [c[m] for c, m in zip(x, mask)]


def chamfer(x: np.ndarray, y: np.ndarray) -> float:
  """Chamfer distance (squared Euclidean) between clouds `[n, D]` and `[m, D]`."""
  d = cdist(x, y, "sqeuclidean")
  return float(d.min(1).mean() + d.min(0).mean())


def emd(x: np.ndarray, y: np.ndarray) -> float:
  """Exact W1 (Euclidean ground cost, uniform weights) between two clouds."""
  d = cdist(x, y, "euclidean")
  if len(x) == len(y):
    r, c = linear_sum_assignment(d)
    return float(d[r, c].mean())
  return float(ot.emd2(np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y)), d))


DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"chamfer": chamfer,
                                                                   "emd": emd}


def distance_matrix(clouds: list[np.ndarray], distance: str) -> np.ndarray:
  """Symmetric `[n, n]` matrix of `distance` between all pairs of clouds."""
  try:
    fn = DISTANCES[distance]
  except KeyError:
    raise KeyError(f"Unknown cloud distance {distance!r}; valid: {sorted(DISTANCES)}.") from None
  n = len(clouds)
  out = np.zeros((n, n))
  for i in range(n):
    for j in range(i + 1, n):
      out[i, j] = out[j, i] = fn(clouds[i], clouds[j])
  return out


def one_nn_accuracy(dist: np.ndarray, is_fake: np.ndarray) -> float:
  """1-NNA from a pooled distance matrix `[n, n]` and set labels `[n]` bool.

  Each cloud's nearest other cloud (ties: lowest index) predicts its label.
  """
  d = np.array(dist, np.float64)
  np.fill_diagonal(d, np.inf)
  nn = np.argmin(d, axis=1)
  return float(np.mean(is_fake[nn] == is_fake))


def nna(fake: np.ndarray, real: np.ndarray, *, fake_mask: np.ndarray | None = None,
        real_mask: np.ndarray | None = None, distance: str = "chamfer") -> float:
  """1-NN accuracy between generated and reference clouds (0.5 is ideal).

  Args:
    fake: `[n, N, D]` generated clouds; real: `[m, M, D]` reference clouds.
    fake_mask, real_mask: `[n, N]`, `[m, M]` bool, True on real points.
    distance: "chamfer" or "emd".
  Returns:
    accuracy in [0, 1].
  """
  f = real_clouds(fake, fake_mask, "nna (generated)")
  r = real_clouds(real, real_mask, "nna (reference)")
  if np.shape(fake)[-1] != np.shape(real)[-1]:
    raise ValueError(f"nna: generated clouds have dimension {np.shape(fake)[-1]}, "
                     f"reference clouds {np.shape(real)[-1]}.")
  if len(f) + len(r) < 2 or not f or not r:
    raise ValueError(f"nna: needs at least one generated and one reference cloud, got "
                     f"{len(f)} and {len(r)}.")
  labels = np.r_[np.ones(len(f), bool), np.zeros(len(r), bool)]
  return one_nn_accuracy(distance_matrix(f + r, distance), labels)


def nna_chamfer(fake, real, *, fake_mask=None, real_mask=None) -> float:
  """1-NNA with the Chamfer distance (WFM Tables 3-4, "CD")."""
  return nna(fake, real, fake_mask=fake_mask, real_mask=real_mask, distance="chamfer")


def nna_emd(fake, real, *, fake_mask=None, real_mask=None) -> float:
  """1-NNA with the earth mover's distance (WFM Tables 3-4, "EMD")."""
  return nna(fake, real, fake_mask=fake_mask, real_mask=real_mask, distance="emd")


METRICS = {"nna_chamfer": nna_chamfer, "nna_emd": nna_emd}
