"""Distances between two empirical point clouds, for scoring generated cells.

Every metric takes `x` `[n, dim]` and `y` `[m, dim]` (numpy or jax arrays),
treats them as uniform empirical measures, and returns a python float:

* `wasserstein` / `w1` / `w2`: exact optimal transport (Peyré & Cuturi,
  "Computational Optimal Transport", Ch. 3), solved by POT's network simplex
  `ot.emd2` — not Sinkhorn, so the value carries no entropic bias.
* `mmd`: the biased (V-statistic) MMD^2 of Gretton et al. ("A Kernel
  Two-Sample Test", JMLR 2012) averaged over a family of RBF kernels, the
  convention of CellFlow's `compute_scalar_mmd` that MixFlow also reports.
* `energy_distance`: the V-statistic energy distance of Székely & Rizzo
  ("Energy statistics", JSPI 2013) with the Euclidean norm;
  `energy_distance_unbiased` its U-statistic sibling for tiny samples (the
  unbiased MMD^2 is `flowzoo.metrics_perturbation.mmd_unbiased`).

`METRICS` maps the names used by `flowzoo.evaluate` to these functions and
`compute_all` evaluates several of them at once.

Everything runs in float64 numpy/scipy rather than JAX: the populations of an
evaluation have a different size per condition, so a jitted kernel would
recompile for nearly every call, and small MMD values lose digits in float32.
Pairwise distances come from `scipy.spatial.distance.cdist`, which computes
each difference directly, so identical point sets give exactly zero.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import ot
from scipy.spatial import distance

# Exact OT builds the dense [n, m] cost matrix (8 bytes per entry) and network
# simplex is roughly cubic in n: above this many entries, subsample instead.
MAX_OT_ENTRIES = 20_000_000
# POT's default of 1e5 simplex iterations is reached already near n = 2000 and
# then POT only warns and returns a sub-optimal cost, so allow far more and
# check the solver's status ourselves.
_OT_MAX_ITER = 100_000_000
# The gammas of CellFlow's `compute_scalar_mmd`.
DEFAULT_GAMMAS = (2.0, 1.0, 0.5, 0.1, 0.01, 0.005)


def _as_points(x, name: str) -> np.ndarray:
  """`x` as a float64 `[n, dim]` array; raises ValueError naming the problem."""
  arr = np.asarray(x, dtype=np.float64)
  if arr.ndim != 2:
    raise ValueError(f"{name} must be a 2-D array [num_points, dim], got shape {arr.shape}"
                     " (reshape 1-D samples with .reshape(-1, 1)).")
  if arr.shape[0] == 0:
    raise ValueError(f"{name} is empty (shape {arr.shape}): need at least one point.")
  if arr.shape[1] == 0:
    raise ValueError(f"{name} has zero features (shape {arr.shape}).")
  if not np.all(np.isfinite(arr)):
    bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
    raise ValueError(f"{name} contains non-finite values (NaN or inf) in {bad} of "
                     f"{arr.shape[0]} rows.")
  return arr


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
  """Validates both point sets and that they live in the same space."""
  x, y = _as_points(x, "x"), _as_points(y, "y")
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"x and y must have the same dimension, got x {x.shape} and y {y.shape}.")
  return x, y


def _as_weights(w, n: int, name: str) -> np.ndarray:
  """Uniform weights when `w` is None, else `w` `[n]` normalised to sum 1."""
  if w is None:
    return np.full(n, 1.0 / n)
  w = np.asarray(w, dtype=np.float64)
  if w.shape != (n,):
    raise ValueError(f"{name} must have shape ({n},) to match the points, got {w.shape}.")
  if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
    raise ValueError(f"{name} must be finite, non-negative and not all zero.")
  return w / w.sum()


def wasserstein(x, y, p: int = 2, a=None, b=None) -> float:
  """Exact p-Wasserstein distance between two weighted point clouds.

  W_p = (min_P sum_ij P_ij ||x_i - y_j||^p)^(1/p) over couplings P with
  marginals `a`, `b`; W1 uses the Euclidean cost and W2 the square root of
  the squared-Euclidean OT cost. Solved exactly by network simplex
  (`ot.emd2`), which costs roughly O(n^3) time and O(n m) memory for the
  dense cost matrix — a few seconds at n = m = 2000 — so subsample larger sets.

  Args:
    x: `[n, dim]` points.
    y: `[m, dim]` points.
    p: 1 or 2.
    a: optional `[n]` non-negative weights of `x` (normalised to sum 1);
      uniform when None.
    b: optional `[m]` weights of `y`, likewise.

  Returns:
    W_p as a float.

  Raises:
    ValueError: on invalid input, `p` not in {1, 2}, or more than
      `MAX_OT_ENTRIES` cost entries.
    RuntimeError: if the simplex solver does not reach optimality.
  """
  if p not in (1, 2):
    raise ValueError(f"p must be 1 or 2, got {p!r}.")
  x, y = _check_pair(x, y)
  n, m = len(x), len(y)
  # Checked before building the cost matrix, which is what would exhaust memory.
  if n * m > MAX_OT_ENTRIES:
    raise ValueError(f"Exact OT between {n} and {m} points needs an {n}x{m} cost matrix "
                     f"({n * m:.3g} > {MAX_OT_ENTRIES:.3g} entries) and roughly cubic time; "
                     "subsample both sets (e.g. to 2000 points each).")
  a, b = _as_weights(a, n, "a"), _as_weights(b, m, "b")
  cost = distance.cdist(x, y, "euclidean" if p == 1 else "sqeuclidean")
  with warnings.catch_warnings():
    # POT warns about a non-optimal status; we raise on it below instead.
    warnings.simplefilter("ignore", UserWarning)
    value, log = ot.emd2(a, b, cost, numItermax=_OT_MAX_ITER, log=True)
  if log["result_code"] != 1:
    raise RuntimeError(f"Exact OT did not reach optimality ({log['warning']}).")
  # Rounding can leave a tiny negative cost for (near-)identical sets.
  value = max(float(value), 0.0)
  return value if p == 1 else float(np.sqrt(value))


def w1(x, y) -> float:
  """Exact W1 with Euclidean ground cost and uniform weights; see `wasserstein`."""
  return wasserstein(x, y, p=1)


def w2(x, y) -> float:
  """Exact W2 (root of squared-Euclidean OT cost), uniform weights; see `wasserstein`."""
  return wasserstein(x, y, p=2)


def mmd(x, y, gammas: Sequence[float] = DEFAULT_GAMMAS) -> float:
  """Biased MMD^2 averaged over RBF kernels, as in CellFlow and MixFlow.

  For each gamma in `gammas`, with k(u, v) = exp(-gamma ||u - v||^2):

      MMD^2_gamma = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j),

  the means running over all pairs including i = j (the V-statistic, biased
  but never negative); the result is the plain mean of MMD^2_gamma over the
  gammas. This is the *squared* MMD, as CellFlow's `compute_scalar_mmd`
  reports it, not its square root. The gammas multiply squared distances, so
  the metric depends on the scale of the features (e.g. the PCA space).

  Args:
    x: `[n, dim]` points.
    y: `[m, dim]` points.
    gammas: RBF inverse bandwidths; CellFlow's six by default.

  Returns:
    The gamma-averaged biased MMD^2 as a float.
  """
  x, y = _check_pair(x, y)
  gammas = np.asarray(gammas, dtype=np.float64).reshape(-1)
  if gammas.size == 0 or np.any(~np.isfinite(gammas)) or np.any(gammas <= 0):
    raise ValueError(f"gammas must be a non-empty sequence of positive numbers, got {gammas}.")
  # Squared distances once, shared by every gamma.
  sq = [distance.cdist(u, v, "sqeuclidean") for u, v in ((x, x), (y, y), (x, y))]
  per_gamma = [np.exp(-g * sq[0]).mean() + np.exp(-g * sq[1]).mean()
               - 2.0 * np.exp(-g * sq[2]).mean() for g in gammas]
  return float(np.mean(per_gamma))


def energy_distance(x, y) -> float:
  """Energy distance 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||, Euclidean norm.

  Expectations are plain means over all pairs, including the zero i = j
  terms of the within-set means (the V-statistic), so the value is >= 0 and
  exactly 0 for identical sets. This is the *squared* energy distance of
  Székely & Rizzo: in 1-D it equals `scipy.stats.energy_distance(x, y) ** 2`
  (scipy returns the square root, sqrt(2) times the L2 distance between CDFs).

  Note: CellFlow's `compute_e_distance` (after Peidli et al.) uses *squared*
  Euclidean distances instead, which reduces to 2 ||mean(x) - mean(y)||^2 and
  only compares means; the two are not interchangeable.

  The zero diagonal biases the within-set means down by a factor (n-1)/n, so
  the value grows as the sets shrink; for a handful of points (e.g. 3-9
  wells) use `energy_distance_unbiased`.

  Args:
    x: `[n, dim]` points.
    y: `[m, dim]` points.

  Returns:
    The energy distance as a float.
  """
  x, y = _check_pair(x, y)
  between = distance.cdist(x, y).mean()
  within_x = distance.cdist(x, x).mean()
  within_y = distance.cdist(y, y).mean()
  # Non-negative in exact arithmetic; clip rounding noise for identical sets.
  return max(float(2.0 * between - within_x - within_y), 0.0)


def energy_distance_unbiased(x, y) -> float:
  """Unbiased energy distance: within-set means as U-statistics (i != j only).

      E_u = 2/(n m) sum_{i,j} ||x_i - y_j||
            - 1/(n(n-1)) sum_{i != j} ||x_i - x_j||
            - 1/(m(m-1)) sum_{i != j} ||y_i - y_j||,

  Euclidean norm. Each term is an unbiased estimate of its expectation, so
  E_u estimates the population energy distance without the small-sample
  inflation of `energy_distance` (whose within-set means include the zero
  i = j terms). Unlike it, E_u may be slightly negative when x and y come
  from the same distribution; it is not clipped, so averages stay unbiased.

  Args:
    x: `[n, dim]` points, n >= 2.
    y: `[m, dim]` points, m >= 2.

  Returns:
    E_u as a float.

  Raises:
    ValueError: on invalid input or fewer than 2 points in either set (a
      within-set U-statistic needs a pair).
  """
  x, y = _check_pair(x, y)
  for name, arr in (("x", x), ("y", y)):
    if len(arr) < 2:
      raise ValueError(f"energy_distance_unbiased needs at least 2 points in {name} "
                       f"(within-set pairs i != j), got shape {arr.shape}.")
  n, m = len(x), len(y)
  between = distance.cdist(x, y).mean()
  # The diagonal of a self-distance matrix is zero, so the full sum is the i != j sum.
  within_x = distance.cdist(x, x).sum() / (n * (n - 1))
  within_y = distance.cdist(y, y).sum() / (m * (m - 1))
  return float(2.0 * between - within_x - within_y)


# The unbiased estimators (`energy_distance_unbiased`, metrics_perturbation's
# `mmd_unbiased`) are not registered: they need >= 2 points per set, which a
# generic population need not have (a single generated sample is valid here).
METRICS: dict[str, Callable[..., float]] = {
    "w1": w1,
    "w2": w2,
    "mmd": mmd,
    "energy": energy_distance,
}


def compute_all(x, y, names: Sequence[str] = ("w1", "w2", "mmd", "energy")) -> dict[str, float]:
  """Evaluates several metrics of `METRICS` on the same pair of point clouds.

  Args:
    x: `[n, dim]` points (e.g. generated cells).
    y: `[m, dim]` points (e.g. real cells).
    names: keys of `METRICS`, in the order of the returned dict.

  Returns:
    `{name: value}` with python floats.

  Raises:
    KeyError: for a name not in `METRICS`, listing the valid names.
    ValueError: on invalid input (checked once, before any metric runs).
  """
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise KeyError(f"Unknown metric(s) {unknown}; valid: {sorted(METRICS)}.")
  x, y = _check_pair(x, y)
  return {name: float(METRICS[name](x, y)) for name in names}
