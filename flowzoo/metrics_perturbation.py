"""PerturBench's metrics for predicted single-cell perturbation responses (PRiMeFlow Tables 2-9).

Per held-out condition p (predicted cells P, real cells R, real control cells
C of p's covariate context, G genes), lower is better unless marked (higher):

* `mmd` - unbiased MMD^2 (the U-statistic of Gretton et al. 2012, Lemma 6)
  averaged over RBF kernels k_g(u, v) = exp(-g ||u - v||^2) for the gammas
  g in Gamma = {2, 1, 0.5, 0.1, 0.01, 0.005} (CellFlow's set, also
  `flowzoo.metrics.DEFAULT_GAMMAS`):

      MMD^2_u = 1/(n(n-1)) sum_{i != j} k(P_i, P_j) + 1/(m(m-1)) sum_{i != j} k(R_i, R_j)
                - 2/(nm) sum_{i, j} k(P_i, R_j),

  unbiased, so it may be slightly negative when P and R agree. "MMD GEX" is
  it in gene space; "MMD PCA" in the first 30 principal components of the
  real cells being evaluated (PRiMeFlow §4.3: "computed using 30 PCs";
  PerturBench projects predictions onto the reference PCs).
* `deg_recall` (higher) - |top_50(P vs C) ∩ top_50(R vs C)| / 50, the
  top 50 genes by a two-sided Wilcoxon rank-sum (Mann-Whitney U) test against
  the control cells (`scipy.stats.mannwhitneyu`, normal approximation with tie
  correction, no continuity correction), ranked by p-value, ties broken by
  the effect size |U / (n_1 n_2) - 1/2| and then the gene order.
* `cosine_logfc` (higher) - cos(lfc(P), lfc(R)) with lfc(X)_g =
  log2(mean_g X + 0.1) - log2(mean_g C + 0.1), PerturBench's log fold change
  of the averaged (log1p) expression with pseudocount 0.1; a gene whose mean
  is below -0.1 (possible for generated cells) has no logarithm and counts as
  0, as PerturBench's `fillna(0)` (`aggregation.logFC_helper`).
* `rmse_mean` - sqrt(mean_g (mean_g P - mean_g R)^2).
* rank versions (`*_rank`, PerturBench `metrics.rank_helper`) - within one
  covariate context of K conditions, M[q, p] = metric(P_q, R_p) for every
  pair; condition p's rank is the fraction of the K predictions that score
  better against R_p than P_p does (ties count 1/2, the expectation of
  PerturBench's random tie shuffle): 0 = its own prediction is the closest,
  about 0.5 = no better than another condition's prediction.

Numbers are float64 numpy/scipy (see `flowzoo.metrics`). Absolute MMD values
depend on the kernel set and are not comparable with PRiMeFlow's tables,
whose kernels are not stated.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats
from scipy.spatial import distance

from flowzoo.metrics import DEFAULT_GAMMAS

N_DEGS = 50
PSEUDOCOUNT = 0.1
PCA_COMPONENTS = 30
# name -> higher is better; the table's columns in this order.
METRICS = {"mmd_gex": False, "mmd_pca": False, "deg_recall": True, "cosine_logfc": True,
           "rmse_mean": False}


def _cells(x, name: str, min_rows: int = 1) -> np.ndarray:
  a = np.asarray(x, np.float64)
  if a.ndim != 2 or a.shape[0] < min_rows or a.shape[1] == 0:
    raise ValueError(f"{name} must be [cells >= {min_rows}, genes >= 1], got shape {a.shape}.")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} contains NaN/inf.")
  return a


def mmd_unbiased(x, y, gammas: Sequence[float] = DEFAULT_GAMMAS) -> float:
  """Unbiased MMD^2 (U-statistic) averaged over RBF kernels (module docstring).

  Args:
    x: `[n, D]` with n >= 2; y: `[m, D]` with m >= 2.
    gammas: inverse bandwidths of the kernels exp(-gamma ||u - v||^2).
  """
  x, y = _cells(x, "x", 2), _cells(y, "y", 2)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"x and y must have the same dimension, got {x.shape} and {y.shape}.")
  gammas = np.asarray(gammas, np.float64).reshape(-1)
  if gammas.size == 0 or np.any(~(gammas > 0)):
    raise ValueError(f"gammas must be positive, got {gammas}.")
  sq = [distance.cdist(u, v, "sqeuclidean") for u, v in ((x, x), (y, y), (x, y))]
  return float(np.mean([mmd_u_from_gram(*(np.exp(-g * s) for s in sq)) for g in gammas]))


def mmd_u_from_gram(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
  """Unbiased MMD^2 from the kernel matrices `[n, n]`, `[m, m]`, `[n, m]` (n, m >= 2).

  The within-set means skip the diagonal k(x_i, x_i), which is what biases
  the V-statistic; shared by every kernel (RBF here, the cubic polynomial of
  `flowzoo.metrics_images.kid`).
  """
  n, m = len(kxx), len(kyy)
  return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
               + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean())


def log_fold_change(cells, control, pseudocount: float = PSEUDOCOUNT) -> np.ndarray:
  """`[G]` log2(mean(cells) + c) - log2(mean(control) + c) (PerturBench logFC)."""
  cells, control = _cells(cells, "cells"), _cells(control, "control")
  with np.errstate(invalid="ignore", divide="ignore"):
    lfc = np.log2(cells.mean(0) + pseudocount) - np.log2(control.mean(0) + pseudocount)
  return np.where(np.isfinite(lfc), lfc, 0.0)  # PerturBench: logfc.fillna(0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
  """Cosine similarity; 0 when either vector is zero (no direction to compare)."""
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def cosine_logfc(pred, real, control) -> float:
  """cos(lfc(pred), lfc(real)) against the same real control cells."""
  return cosine(log_fold_change(pred, control), log_fold_change(real, control))


def rmse_mean(pred, real) -> float:
  """Root mean square error of the per-gene mean expression."""
  pred, real = _cells(pred, "pred"), _cells(real, "real")
  return float(np.sqrt(np.mean((pred.mean(0) - real.mean(0)) ** 2)))


def deg_order(cells, control) -> np.ndarray:
  """Gene indices `[G]` from most to least differentially expressed vs control.

  Two-sided Mann-Whitney U (= Wilcoxon rank-sum) per gene; genes constant in
  both groups (p = NaN) come last.
  """
  cells, control = _cells(cells, "cells"), _cells(control, "control")
  res = stats.mannwhitneyu(cells, control, alternative="two-sided", axis=0,
                           use_continuity=False, method="asymptotic")
  p = np.where(np.isnan(res.pvalue), 1.0, res.pvalue)
  effect = np.abs(res.statistic / (len(cells) * len(control)) - 0.5)
  # lexsort: last key is primary -> p ascending, effect descending, gene index.
  return np.lexsort((np.arange(len(p)), -effect, p))


def deg_recall(pred, real, control, n: int = N_DEGS, true_order: np.ndarray | None = None
               ) -> float:
  """Fraction of the real top-n DEGs among the predicted top-n DEGs (both vs control)."""
  genes = np.asarray(real).shape[1]
  if not 1 <= n <= genes:
    raise ValueError(f"DEG recall of the top {n} genes needs 1 <= n <= {genes} genes.")
  true_order = deg_order(real, control) if true_order is None else true_order
  return len(set(deg_order(pred, control)[:n]) & set(true_order[:n])) / n


def rank_scores(matrix: np.ndarray, higher_is_better: bool) -> np.ndarray:
  """PerturBench rank `[K]` from `matrix[q, p] = metric(prediction q, truth p)`.

  rank_p = (#{q != p: M[q, p] better than M[p, p]} + #{q != p: equal} / 2) / K.
  """
  m = np.asarray(matrix, np.float64)
  if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
    raise ValueError(f"rank_scores needs a square [K, K] matrix, got {m.shape}.")
  own = np.diag(m)[None, :]
  better = m > own if higher_is_better else m < own
  ties = (m == own) & ~np.eye(len(m), dtype=bool)
  return (better.sum(0) + 0.5 * ties.sum(0)) / len(m)


def fit_pca(real_cells: Sequence[np.ndarray], n_components: int = PCA_COMPONENTS):
  """A PCA of the real cells being evaluated (shared by every model scored against them)."""
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
  x = np.concatenate([_cells(c, "real cells") for c in real_cells])
  k = min(n_components, *x.shape)
  return PCA(n_components=k, svd_solver="full").fit(x)


def _pairwise(fn: Callable, preds: Sequence, reals: Sequence) -> np.ndarray:
  return np.array([[fn(q, p) for p in range(len(reals))] for q in range(len(preds))])


def score_group(preds: Sequence[np.ndarray], reals: Sequence[np.ndarray],
                controls: Sequence[np.ndarray], pca, *, n_degs: int = N_DEGS
                ) -> dict[str, np.ndarray]:
  """Every metric and its rank for the K conditions of ONE covariate context.

  Args:
    preds, reals: K arrays `[n_k, G]` predicted and real cells, gene space.
    controls: K arrays `[m_k, G]` real control cells of each condition's context.
    pca: from `fit_pca` (fitted on real cells only).
  Returns:
    metric -> `[K]` values, for every name in `METRICS` and `<name>_rank`.
  """
  k = len(reals)
  if not len(preds) == len(controls) == k or k == 0:
    raise ValueError(f"score_group needs K >= 1 predictions, reals and controls, got "
                     f"{len(preds)}, {k}, {len(controls)}.")
  preds = [_cells(p, f"prediction {i}", 2) for i, p in enumerate(preds)]
  reals = [_cells(r, f"real cells {i}", 2) for i, r in enumerate(reals)]
  pz, rz = [pca.transform(p) for p in preds], [pca.transform(r) for r in reals]
  true_degs = [deg_order(r, c) for r, c in zip(reals, controls)]
  real_lfc = [log_fold_change(r, c) for r, c in zip(reals, controls)]
  # Pairs (q, p) use p's control: metric(prediction q, truth p) as PerturBench.
  pred_lfc = [[log_fold_change(preds[q], controls[p]) for p in range(k)] for q in range(k)]
  fns = {
      "mmd_gex": lambda q, p: mmd_unbiased(preds[q], reals[p]),
      "mmd_pca": lambda q, p: mmd_unbiased(pz[q], rz[p]),
      "deg_recall": lambda q, p: len(set(deg_order(preds[q], controls[p])[:n_degs])
                                     & set(true_degs[p][:n_degs])) / n_degs,
      "cosine_logfc": lambda q, p: cosine(pred_lfc[q][p], real_lfc[p]),
      "rmse_mean": lambda q, p: rmse_mean(preds[q], reals[p]),
  }
  out = {}
  for name, higher in METRICS.items():
    m = _pairwise(fns[name], preds, reals)
    out[name] = np.diag(m).copy()
    out[f"{name}_rank"] = rank_scores(m, higher)
  return out


def score_conditions(preds: Mapping[str, np.ndarray], reals: Mapping[str, np.ndarray],
                     controls: Mapping[str, np.ndarray], groups: Mapping[str, tuple], *,
                     pca=None, n_degs: int = N_DEGS) -> dict[str, dict[str, float]]:
  """`score_group` per covariate context; returns metric -> {condition: value}.

  Args:
    preds, reals, controls: condition name -> cells (gene space).
    groups: condition name -> its covariate context (ranks compare within one).
    pca: a shared PCA; default: `fit_pca` of the real and control cells given.
  """
  names = list(reals)
  missing = [n for n in names if n not in preds]
  if missing:
    raise KeyError(f"no predicted cells for condition(s) {missing}.")
  if pca is None:
    pca = fit_pca([reals[n] for n in names] + [controls[n] for n in names])
  out = {name: {} for m in METRICS for name in (m, f"{m}_rank")}
  for g in sorted({groups[n] for n in names}):
    in_g = [n for n in names if groups[n] == g]
    scores = score_group([preds[n] for n in in_g], [reals[n] for n in in_g],
                         [controls[n] for n in in_g], pca, n_degs=n_degs)
    for metric, values in scores.items():
      out[metric].update(zip(in_g, map(float, values)))
  return out
