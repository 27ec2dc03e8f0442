"""Metrics of predicted compound profiles (BBBC021 held-out compounds).

Per held-out compound, P `[n, D]` are predicted well profiles, R `[m, D]` the
real wells (only 3-9 of them) and C `[c, D]` the DMSO control wells of that
compound's plates, all in the robust-z-scored feature space (D = 189). Lower
is better unless marked (higher); `METRICS` lists name -> higher_is_better.

* `mmd_u` - unbiased MMD^2 (U-statistic, Gretton et al. 2012), averaged over
  RBF kernels k_g(u, v) = exp(-g ||u - v||^2) for g in
  Gamma = {2, 1, 0.5, 0.1, 0.01, 0.005} (`flowzoo.metrics.DEFAULT_GAMMAS`):

      MMD^2_u = 1/(n(n-1)) sum_{i != j} k(P_i, P_j) + 1/(m(m-1)) sum_{i != j} k(R_i, R_j)
                - 2/(nm) sum_{i,j} k(P_i, R_j)

  (`flowzoo.metrics_perturbation.mmd_unbiased`); may be slightly negative.
* `energy_u` - unbiased energy distance (`flowzoo.metrics.energy_distance_unbiased`):

      E_u = 2/(nm) sum_{i,j} ||P_i - R_j|| - 1/(n(n-1)) sum_{i != j} ||P_i - P_j||
            - 1/(m(m-1)) sum_{i != j} ||R_i - R_j||.

* `mmd_biased`, `energy_biased` - the same with every mean over all pairs,
  i = j included (V-statistics, `flowzoo.metrics.mmd` / `energy_distance`).
  Reported for comparison only: with m = 3 wells the diagonal terms dominate,
  e.g. a kernel that has decayed to 0 between distinct wells still adds
  1/n + 1/m to the biased MMD^2.
* `rmse_mean` - sqrt(mean_d (mean(P)_d - mean(R)_d)^2)
  (`flowzoo.metrics_perturbation.rmse_mean`).
* `pearson_delta` (higher), `cosine_delta` (higher) - with the changes from
  control dP = mean(P) - mean(C) and dR = mean(R) - mean(C) `[D]`:
  cosine_delta = cos(dP, dR) and pearson_delta = cos(dP - mean_d dP, dR - mean_d dR),
  Pearson's r over the D features. Either is 0 when a vector (after
  centring, for Pearson) is zero: no direction means no agreement, and a NaN
  would be dropped from the average and so flatter a degenerate prediction.
* `retrieval_rank`, `top1` (higher) - `retrieval`: the predicted mean profile
  mean(P_k) is compared by Euclidean distance with the true mean profiles of
  ALL N candidate compounds (held-out and training, no controls), own one
  included:

      rank_k = (#{j != own: d_kj < d_k,own} + #{j != own: d_kj = d_k,own} / 2) / (N - 1),

  0 = its own profile is the nearest, 1 = the farthest, about 0.5 = chance
  (PerturBench's rank convention: ties count half, the expectation of a random
  tie break). top1_k = 1 if rank_k == 0, so a tie with another compound is
  not a hit.
* `moa_accuracy` (higher) - fraction of the predicted wells P that a
  nearest-centroid classifier fitted on training compounds (`moa_classifier`)
  assigns to the compound's mechanism of action. A compound whose MoA is
  absent from the training MoAs cannot be classified correctly and scores NaN
  (listed in `score_compounds`' info).

Summaries: `bootstrap_ci` (percentile bootstrap over compounds) and
`paired_comparison` (two models paired over training seeds, t-interval).
Numbers are float64 numpy/scipy (see `flowzoo.metrics`).
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
from scipy import stats
from scipy.spatial import distance

from flowzoo import metrics as metrics_lib
from flowzoo import metrics_perturbation as mp

# name -> higher is better; the table's columns in this order.
METRICS = {
    "mmd_u": False,
    "energy_u": False,
    "mmd_biased": False,
    "energy_biased": False,
    "rmse_mean": False,
    "pearson_delta": True,
    "cosine_delta": True,
    "retrieval_rank": False,
    "top1": True,
    "moa_accuracy": True,
}
# Metrics of one compound's wells alone (`profile_metrics`); the rest need all compounds.
PROFILE_METRICS = ("mmd_u", "energy_u", "mmd_biased", "energy_biased", "rmse_mean",
                   "pearson_delta", "cosine_delta")


def _wells(x, name: str, min_rows: int = 1) -> np.ndarray:
  """`x` as float64 `[n >= min_rows, D]`; ValueError naming empty/NaN/shape problems."""
  a = metrics_lib._as_points(x, name)  # pylint: disable=protected-access
  if len(a) < min_rows:
    raise ValueError(f"{name} needs at least {min_rows} rows (wells), got shape {a.shape}.")
  return a


def _same_dim(**arrays: np.ndarray) -> None:
  dims = {name: a.shape[1] for name, a in arrays.items()}
  if len(set(dims.values())) > 1:
    raise ValueError(f"feature dimensions differ: {dims}.")


def profile_metrics(pred, real, control) -> dict[str, float]:
  """Every metric of `PROFILE_METRICS` for one compound (module docstring).

  Args:
    pred: `[n, D]` predicted well profiles, n >= 2.
    real: `[m, D]` real wells of the compound, m >= 2 (U-statistics need a pair).
    control: `[c, D]` DMSO wells of the compound's plates, c >= 1.

  Returns:
    `{name: value}` in the order of `PROFILE_METRICS`.
  """
  pred, real = _wells(pred, "pred", 2), _wells(real, "real", 2)
  control = _wells(control, "control")
  _same_dim(pred=pred, real=real, control=control)
  d_pred = pred.mean(0) - control.mean(0)
  d_real = real.mean(0) - control.mean(0)
  return {
      "mmd_u": mp.mmd_unbiased(pred, real),
      "energy_u": metrics_lib.energy_distance_unbiased(pred, real),
      "mmd_biased": metrics_lib.mmd(pred, real),
      "energy_biased": metrics_lib.energy_distance(pred, real),
      "rmse_mean": mp.rmse_mean(pred, real),
      # Pearson's r is the cosine of the centred vectors.
      "pearson_delta": mp.cosine(d_pred - d_pred.mean(), d_real - d_real.mean()),
      "cosine_delta": mp.cosine(d_pred, d_real),
  }


def retrieval(query, truth, candidates, truth_index) -> tuple[np.ndarray, np.ndarray]:
  """Rank of each compound's own true profile among all candidates (module docstring).

  Not `metrics_perturbation.rank_scores`: that ranks the K predictions
  against one truth (square matrix, / K); here one prediction is ranked
  against N candidate truths, training compounds included.

  Args:
    query: `[K, D]` predicted mean profiles of the held-out compounds.
    truth: `[K, D]` their true mean profiles; must equal
      `candidates[truth_index]` (checked, to catch a misaligned index).
    candidates: `[N, D]` true mean profiles of all compounds (no controls), N >= 2.
    truth_index: `[K]` distinct row indices into `candidates`.

  Returns:
    `(rank [K] float in [0, 1], top1 [K] bool)`; rank 0 = own profile strictly nearest.
  """
  query, truth = _wells(query, "query"), _wells(truth, "truth")
  candidates = _wells(candidates, "candidates", 2)
  _same_dim(query=query, truth=truth, candidates=candidates)
  idx = np.asarray(truth_index)
  k, n = len(query), len(candidates)
  if len(truth) != k or idx.shape != (k,):
    raise ValueError(f"query {query.shape}, truth {truth.shape} and truth_index {idx.shape} "
                     "must have the same number K of compounds.")
  if not np.issubdtype(idx.dtype, np.integer) or np.any((idx < 0) | (idx >= n)):
    raise ValueError(f"truth_index must hold integer row indices in [0, {n}), got {idx}.")
  if len(np.unique(idx)) != k:
    raise ValueError(f"truth_index must be distinct (one candidate per compound), got {idx}.")
  bad = np.flatnonzero(~np.all(np.isclose(candidates[idx], truth, rtol=1e-9, atol=1e-9), axis=1))
  if bad.size:
    raise ValueError(f"candidates[truth_index[k]] differs from truth[k] for rows k = "
                     f"{bad.tolist()}: the index does not point at each compound's own profile.")
  d = distance.cdist(query, candidates)  # [K, N]
  # The own distance is read from the same matrix, so a duplicate profile ties exactly.
  own = d[np.arange(k), idx][:, None]
  closer = (d < own).sum(1)
  ties = (d == own).sum(1) - 1  # minus the own candidate
  rank = (closer + 0.5 * ties) / (n - 1)
  return rank, rank == 0


def moa_classifier(train_x, train_moa):
  """Nearest-centroid MoA classifier (Euclidean) fitted on training compounds.

  Each MoA's centroid is the plain mean of its rows: per-compound mean
  profiles weight compounds equally, wells weight them by well count.

  Args:
    train_x: `[N, D]` profiles of training compounds (never held-out ones).
    train_moa: `[N]` their MoA labels; at least 2 distinct.

  Returns:
    A fitted `sklearn.neighbors.NearestCentroid`; its `classes_` are the known MoAs.
  """
  from sklearn.neighbors import NearestCentroid  # pylint: disable=import-outside-toplevel
  x = _wells(train_x, "train_x")
  labels = np.asarray(train_moa)
  if labels.shape != (len(x),):
    raise ValueError(f"train_moa must have shape ({len(x)},) to match train_x {x.shape}, "
                     f"got {labels.shape}.")
  if len(np.unique(labels)) < 2:
    raise ValueError(f"a MoA classifier needs at least 2 distinct MoAs, got {np.unique(labels)}.")
  with warnings.catch_warnings():
    # fit also estimates within-class spreads, used only for shrinkage and
    # non-uniform priors (neither used here); it warns when a spread is zero or
    # undefined (one row per MoA), which does not affect the centroids.
    warnings.simplefilter("ignore", UserWarning)
    warnings.simplefilter("ignore", RuntimeWarning)
    # Uniform priors: predict is then the plain Euclidean argmin over centroids.
    return NearestCentroid(metric="euclidean", priors="uniform").fit(x, labels)


def moa_accuracy(clf, x, moa: str) -> float:
  """Fraction of the rows of `x` `[n, D]` that `clf` classifies as `moa`.

  Raises:
    ValueError: if `moa` is not among `clf.classes_` (no row could be
      classified correctly; `score_compounds` skips such compounds).
  """
  x = _wells(x, "x")
  if moa not in set(clf.classes_):
    raise ValueError(f"MoA {moa!r} is not among the classifier's training MoAs "
                     f"{sorted(map(str, clf.classes_))}.")
  return float(np.mean(clf.predict(x) == moa))


def score_compounds(preds: Mapping[str, np.ndarray], reals: Mapping[str, np.ndarray],
                    controls: Mapping[str, np.ndarray], *,
                    candidates: Mapping[str, np.ndarray], moa: Mapping[str, str],
                    classifier) -> dict:
  """Every metric of `METRICS` for every held-out compound in `reals`.

  Args:
    preds: compound -> `[n, D]` predicted wells (n >= 2).
    reals: compound -> `[m, D]` real wells (m >= 2); its keys are the compounds scored.
    controls: compound -> `[c, D]` DMSO wells of its plates.
    candidates: compound -> `[., D]` true wells of ALL compounds for retrieval
      (held-out and training, no controls); each held-out compound's entry must
      be its `reals` wells (their means are compared).
    moa: compound -> MoA label, for every held-out compound.
    classifier: from `moa_classifier`, fitted on training compounds only.

  Returns:
    metric -> {compound: float} for every name in `METRICS` (in order), plus
    `"info"`: {"moa_skipped": {compound: moa}} - compounds whose MoA is not
    among the classifier's MoAs, whose `moa_accuracy` is NaN.
  """
  names = list(reals)
  if not names:
    raise ValueError("reals is empty: no held-out compound to score.")
  for label, mapping in (("predicted wells", preds), ("controls", controls),
                         ("candidates", candidates), ("moa", moa)):
    missing = [n for n in names if n not in mapping]
    if missing:
      raise KeyError(f"no {label} for held-out compound(s) {missing}.")
  out = {m: {} for m in METRICS}
  for name in names:
    try:
      values = profile_metrics(preds[name], reals[name], controls[name])
    except ValueError as e:
      raise ValueError(f"compound {name!r}: {e}") from e
    for m, v in values.items():
      out[m][name] = v
  cand_names = list(candidates)
  cand_means = np.stack([_wells(candidates[c], f"candidates[{c!r}]").mean(0)
                         for c in cand_names])
  query = np.stack([np.asarray(preds[n], np.float64).mean(0) for n in names])
  truth = np.stack([np.asarray(reals[n], np.float64).mean(0) for n in names])
  try:
    rank, top1 = retrieval(query, truth, cand_means, [cand_names.index(n) for n in names])
  except ValueError as e:
    raise ValueError(f"retrieval over compounds {names}: {e}") from e
  out["retrieval_rank"] = dict(zip(names, map(float, rank)))
  out["top1"] = dict(zip(names, map(float, top1)))
  known = set(classifier.classes_)
  skipped = {}
  for name in names:
    if moa[name] in known:
      out["moa_accuracy"][name] = moa_accuracy(classifier, preds[name], moa[name])
    else:
      out["moa_accuracy"][name] = float("nan")
      skipped[name] = moa[name]
  out["info"] = {"moa_skipped": skipped}
  return out


def bootstrap_ci(values, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
  """Mean over compounds and its percentile bootstrap interval.

  Compounds are resampled with replacement `n_boot` times; the interval is the
  (1 - level)/2 and (1 + level)/2 quantiles of the resampled means.

  Args:
    values: `[K]` one value per compound; NaNs (skipped compounds) are dropped.

  Returns:
    `(mean, lo, hi)`; lo = hi = mean for one compound, all NaN when none is left.
  """
  v = np.asarray(values, np.float64)
  if v.ndim != 1:
    raise ValueError(f"values must be 1-D [K] (one per compound), got shape {v.shape}.")
  if n_boot < 1 or not 0 < level < 1:
    raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot} and {level}.")
  v = v[~np.isnan(v)]
  if v.size == 0:
    return float("nan"), float("nan"), float("nan")
  mean = float(v.mean())
  if v.size == 1:
    return mean, mean, mean
  rng = np.random.default_rng(seed)
  boot = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
  lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
  return mean, float(lo), float(hi)


def paired_comparison(a, b, higher_is_better: bool, *, level: float = 0.95) -> dict:
  """Model a vs model b on one metric, paired over S training seeds.

  With d_s = a_s - b_s: mean_diff = mean(d) and its t-interval
  mean_diff ± t_{(1+level)/2, S-1} sd(d) / sqrt(S) (sd with ddof 1); the
  half-width is NaN for S = 1 (no spread to estimate).

  Args:
    a, b: `[S]` the metric per seed for each model (seed s paired with seed s).
    higher_is_better: which direction counts as a win.

  Returns:
    {"mean_diff", "lo", "hi", "half_width", "a_wins", "b_wins", "ties", "n_seeds"};
    the win counts are seeds where a is strictly better / worse / equal.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 1 or a.shape != b.shape or a.size == 0:
    raise ValueError(f"a and b must be non-empty 1-D [S] arrays of the same shape, got "
                     f"{a.shape} and {b.shape}.")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("a and b must be finite (a NaN seed cannot be paired).")
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level}.")
  d = a - b
  s = d.size
  mean = float(d.mean())
  half = (float(stats.t.ppf((1 + level) / 2, s - 1) * d.std(ddof=1) / np.sqrt(s))
          if s > 1 else float("nan"))
  better = d > 0 if higher_is_better else d < 0
  worse = d < 0 if higher_is_better else d > 0
  return {"mean_diff": mean, "lo": mean - half, "hi": mean + half, "half_width": half,
          "a_wins": int(better.sum()), "b_wins": int(worse.sum()),
          "ties": int((d == 0).sum()), "n_seeds": s}
