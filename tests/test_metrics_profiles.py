"""Compound-profile metrics (BBBC021) against hand-computed cases."""

import numpy as np
import pytest

from flowzoo import metrics
from flowzoo import metrics_perturbation as mp
from flowzoo import metrics_profiles as mpr

GAMMAS = (2.0, 1.0, 0.5, 0.1, 0.01, 0.005)  # the documented kernel set, written out


def _col(*v):
  return np.array(v, np.float64).reshape(-1, 1)


# ------------------------------------------------------------------ energy_u


def test_energy_unbiased_hand_value_and_needs_pairs():
  x, y = _col(0, 2), _col(1, 3)
  # between |0-1|, |0-3|, |2-1|, |2-3| = 1, 3, 1, 1 -> mean 1.5, doubled 3;
  # within x: |0-2| twice / (2*1) = 2; within y: |1-3| twice / 2 = 2. E_u = 3 - 2 - 2 = -1.
  assert metrics.energy_distance_unbiased(x, y) == pytest.approx(-1.0, abs=1e-12)
  # The V-statistic divides the within sums by 4 instead: 3 - 1 - 1 = 1.
  assert metrics.energy_distance(x, y) == pytest.approx(1.0, abs=1e-12)
  with pytest.raises(ValueError, match="at least 2 points in y"):
    metrics.energy_distance_unbiased(_col(0, 1), _col(3))
  with pytest.raises(ValueError, match="at least 2 points in x"):
    metrics.energy_distance_unbiased(_col(3), _col(0, 1))
  with pytest.raises(ValueError, match="same dimension"):
    metrics.energy_distance_unbiased(np.zeros((2, 2)), np.zeros((2, 3)))
  with pytest.raises(ValueError, match="non-finite"):
    metrics.energy_distance_unbiased(x, _col(1, np.nan))


def test_mmd_unbiased_one_gamma():
  x, y = _col(0, 2), _col(1, 3)
  # gamma 1: within x off-diagonal e^-4 (twice / 2), within y e^-4;
  # between sq. distances 1, 9, 1, 1 -> (3e^-1 + e^-9) / 4, doubled.
  expected = 2 * np.exp(-4) - (3 * np.exp(-1) + np.exp(-9)) / 2
  assert mp.mmd_unbiased(x, y, gammas=(1.0,)) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------- profile_metrics


def test_profile_distribution_metrics_hand_values():
  pred, real, control = _col(0, 2), _col(1, 3), _col(0, 5)
  out = mpr.profile_metrics(pred, real, control)
  assert list(out) == list(mpr.PROFILE_METRICS)
  g = np.array(GAMMAS)
  # Per gamma (see test_mmd_unbiased_one_gamma): U = 2e^-4g - (3e^-g + e^-9g)/2;
  # V adds the diagonals, within means (1 + e^-4g)/2 each: V = 1 + e^-4g - (3e^-g + e^-9g)/2.
  u = 2 * np.exp(-4 * g) - (3 * np.exp(-g) + np.exp(-9 * g)) / 2
  v = 1 + np.exp(-4 * g) - (3 * np.exp(-g) + np.exp(-9 * g)) / 2
  assert out["mmd_u"] == pytest.approx(u.mean(), abs=1e-12)
  assert out["mmd_biased"] == pytest.approx(v.mean(), abs=1e-12)
  assert out["energy_u"] == pytest.approx(-1.0, abs=1e-12)
  assert out["energy_biased"] == pytest.approx(1.0, abs=1e-12)
  # Means 1 and 2: RMSE 1.
  assert out["rmse_mean"] == pytest.approx(1.0)


def test_profile_delta_metrics_and_rmse():
  control = np.array([[0.0, 0, 1], [2, 0, 3]])    # mean [1, 0, 2]
  real = np.array([[1.0, 2, 5], [3, 2, 5]])        # mean [2, 2, 5] -> dR = [1, 2, 3]
  pred = np.array([[4.0, 0, 4], [4, 2, 4]])        # mean [4, 1, 4] -> dP = [3, 1, 2]
  out = mpr.profile_metrics(pred, real, control)
  # cos = (3 + 2 + 6) / (sqrt(14) sqrt(14)) = 11/14.
  assert out["cosine_delta"] == pytest.approx(11 / 14)
  # Centred: dP - 2 = [1, -1, 0], dR - 2 = [-1, 0, 1]: r = -1 / (sqrt2 sqrt2) = -0.5.
  # (Without subtracting control, the raw means would give r = 0.5 and cos = 30/33.)
  assert out["pearson_delta"] == pytest.approx(-0.5)
  # Mean difference [2, -1, -1]: sqrt(6 / 3).
  assert out["rmse_mean"] == pytest.approx(np.sqrt(2))
  # A prediction equal to control has no change: both are 0, not NaN.
  flat = mpr.profile_metrics(control, real, control)
  assert flat["cosine_delta"] == 0.0 and flat["pearson_delta"] == 0.0


def test_profile_metrics_input_errors():
  ok = np.zeros((3, 2))
  with pytest.raises(ValueError, match="real needs at least 2 rows"):
    mpr.profile_metrics(ok, ok[:1], ok)
  with pytest.raises(ValueError, match="pred needs at least 2 rows"):
    mpr.profile_metrics(ok[:1], ok, ok)
  with pytest.raises(ValueError, match="control is empty"):
    mpr.profile_metrics(ok, ok, np.zeros((0, 2)))
  bad = ok.copy()
  bad[0, 1] = np.nan
  with pytest.raises(ValueError, match="control contains non-finite"):
    mpr.profile_metrics(ok, ok, bad)
  with pytest.raises(ValueError, match="feature dimensions differ"):
    mpr.profile_metrics(ok, ok, np.zeros((3, 4)))


# ---------------------------------------------------------------- retrieval


def test_retrieval_rank_ties_and_top1():
  candidates = _col(0, 2, 4)                       # N = 3, so ranks are counts / 2
  query = _col(1, 4.5, -1)
  idx = [0, 2, 1]
  truth = candidates[idx]
  rank, top1 = mpr.retrieval(query, truth, candidates, idx)
  # q=1 (own 0): distances 1, 1, 3 -> 0 closer, 1 tie -> 0.5 / 2 = 0.25, not top-1.
  # q=4.5 (own 4): distances 4.5, 2.5, 0.5 -> own nearest -> 0, top-1.
  # q=-1 (own 2): distances 1, 3, 5 -> 1 closer -> 1 / 2 = 0.5.
  np.testing.assert_allclose(rank, [0.25, 0.0, 0.5])
  assert top1.tolist() == [False, True, False]
  # Own profile the farthest: rank 1.
  rank, top1 = mpr.retrieval(_col(5), _col(0), candidates, [0])
  assert rank.tolist() == [1.0] and top1.tolist() == [False]


def test_retrieval_refuses_misaligned_index():
  candidates = _col(0, 2, 4)
  with pytest.raises(ValueError, match="differs from truth"):
    mpr.retrieval(_col(1), _col(2), candidates, [0])
  with pytest.raises(ValueError, match="distinct"):
    mpr.retrieval(_col(1, 1), _col(0, 0), candidates, [0, 0])
  with pytest.raises(ValueError, match=r"in \[0, 3\)"):
    mpr.retrieval(_col(1), _col(0), candidates, [3])
  with pytest.raises(ValueError, match="candidates needs at least 2 rows"):
    mpr.retrieval(_col(1), _col(0), _col(0), [0])


# ---------------------------------------------------------------------- MoA


def test_moa_nearest_centroid_accuracy():
  train = np.array([[0.0, 0], [0, 2], [10, 0], [10, 2]])
  clf = mpr.moa_classifier(train, ["A", "A", "B", "B"])   # centroids A (0, 1), B (10, 1)
  x = np.array([[1.0, 1], [4, 0], [4.9, 3], [6, 1]])       # x < 5 -> A: A, A, A, B
  assert mpr.moa_accuracy(clf, x, "A") == pytest.approx(0.75)
  assert mpr.moa_accuracy(clf, x, "B") == pytest.approx(0.25)
  with pytest.raises(ValueError, match="'C' is not among"):
    mpr.moa_accuracy(clf, x, "C")
  with pytest.raises(ValueError, match="at least 2 distinct MoAs"):
    mpr.moa_classifier(train, ["A"] * 4)
  with pytest.raises(ValueError, match="train_moa must have shape"):
    mpr.moa_classifier(train, ["A", "B"])


# ------------------------------------------------------------ score_compounds


def test_score_compounds_end_to_end():
  reals = {"h1": np.array([[0.0, 0], [2, 0]]),        # mean [1, 0]
           "h2": np.array([[10.0, 0], [10, 2]])}      # mean [10, 1]
  preds = {"h1": np.array([[1.0, 0], [1, 0.2]]),      # mean [1, 0.1]
           "h2": np.array([[6.0, 4], [6, 4]])}        # mean [6, 4]
  controls = {"h1": np.zeros((2, 2)), "h2": np.zeros((2, 2))}
  candidates = {"t": np.full((3, 2), 5.0), **reals}   # training compound at [5, 5]
  clf = mpr.moa_classifier(np.array([[5.0, 5], [0, 10]]), ["X", "Y"])
  out = mpr.score_compounds(preds, reals, controls, candidates=candidates,
                            moa={"h1": "X", "h2": "Z"}, classifier=clf)
  assert list(out) == [*mpr.METRICS, "info"]
  for name in reals:
    single = mpr.profile_metrics(preds[name], reals[name], controls[name])
    for m, v in single.items():
      assert out[m][name] == v
  # h1: own at 0.1, t at ~6.4, h2 at ~9.1 -> rank 0. h2 [6, 4]: t at sqrt2 < own 5 < h1 sqrt41
  # -> 1 closer of N - 1 = 2 -> 0.5.
  assert out["retrieval_rank"] == {"h1": 0.0, "h2": 0.5}
  assert out["top1"] == {"h1": 1.0, "h2": 0.0}
  # h1's wells are nearer X (5, 5) than Y (0, 10); h2's MoA Z is unknown: NaN and reported.
  assert out["moa_accuracy"]["h1"] == 1.0 and np.isnan(out["moa_accuracy"]["h2"])
  assert out["info"] == {"moa_skipped": {"h2": "Z"}}
  with pytest.raises(ValueError, match="differs from truth"):
    mpr.score_compounds(preds, reals, controls, candidates={**candidates, "h1": reals["h2"]},
                        moa={"h1": "X", "h2": "Z"}, classifier=clf)
  with pytest.raises(KeyError, match="no moa"):
    mpr.score_compounds(preds, reals, controls, candidates=candidates, moa={"h1": "X"},
                        classifier=clf)


# ---------------------------------------------------------------- summaries


def test_bootstrap_ci():
  mean, lo, hi = mpr.bootstrap_ci([0.3] * 5)
  assert mean == pytest.approx(0.3) and lo == hi          # constant: zero width
  # Values {0, 1}: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the
  # 2.5 % / 97.5 % quantiles are 0 and 1, and the 30 % / 70 % quantiles both 0.5.
  assert mpr.bootstrap_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)
  assert mpr.bootstrap_ci([0.0, 1.0], level=0.4) == (0.5, 0.5, 0.5)
  vals = [1.0, 2.0, 3.0, 10.0]
  mean, lo, hi = mpr.bootstrap_ci(vals)
  assert mean == 4.0 and 1.0 <= lo < mean < hi <= 10.0
  assert mpr.bootstrap_ci([1.0, np.nan, 2.0, 3.0, 10.0]) == (mean, lo, hi)  # NaN dropped
  assert mpr.bootstrap_ci([7.0]) == (7.0, 7.0, 7.0)
  assert all(np.isnan(mpr.bootstrap_ci([np.nan, np.nan])))


def test_paired_comparison():
  a, b = [3.0, 5.0, 4.0], [1.0, 2.0, 3.0]
  out = mpr.paired_comparison(a, b, higher_is_better=True)
  # d = [2, 3, 1]: mean 2, sd 1, half-width t_{0.975, 2} / sqrt(3) = 4.302653 / 1.732051.
  half = 4.302652729911275 / np.sqrt(3)
  assert out["mean_diff"] == pytest.approx(2.0)
  assert out["half_width"] == pytest.approx(half)
  assert (out["lo"], out["hi"]) == pytest.approx((2 - half, 2 + half))
  assert (out["a_wins"], out["b_wins"], out["ties"], out["n_seeds"]) == (3, 0, 0, 3)
  lower = mpr.paired_comparison(a, b, higher_is_better=False)
  assert (lower["a_wins"], lower["b_wins"]) == (0, 3)
  tie = mpr.paired_comparison([1.0, 2.0], [1.0, 3.0], higher_is_better=True)
  assert (tie["a_wins"], tie["b_wins"], tie["ties"]) == (0, 1, 1)
  one = mpr.paired_comparison([2.0], [1.0], higher_is_better=True)
  assert one["mean_diff"] == 1.0 and np.isnan(one["half_width"])
  with pytest.raises(ValueError, match="same shape"):
    mpr.paired_comparison([1.0, 2.0], [1.0], higher_is_better=True)
  with pytest.raises(ValueError, match="finite"):
    mpr.paired_comparison([1.0, np.nan], [1.0, 2.0], higher_is_better=True)
