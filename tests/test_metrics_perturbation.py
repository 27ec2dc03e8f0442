"""PerturBench metrics against hand-computed cases."""

import numpy as np
import pytest

from flowzoo import metrics_perturbation as mp


def test_mmd_is_the_u_statistic():
  x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
  # k = exp(-|u - v|^2): off-diagonal x-x e^-1, y-y e^-4; x-y pairs 1, e^-4, e^-1, e^-1.
  e1, e4 = np.exp(-1), np.exp(-4)
  expected = e1 + e4 - 2 * (1 + e4 + 2 * e1) / 4  # = (e^-4 - 1) / 2
  assert mp.mmd_unbiased(x, y, gammas=(1.0,)) == pytest.approx(expected, abs=1e-12)
  assert expected == pytest.approx((e4 - 1) / 2)
  # The V-statistic (diagonal included) would be (1 - e^-1) / 2 instead.
  assert mp.mmd_unbiased(x, y, gammas=(1.0,)) != pytest.approx((1 - e1) / 2)
  # Averaged over the kernel set: gamma = 0.5 alone gives e^-.5 + e^-2 - (1 + e^-2 + 2e^-.5)/2.
  g2 = np.exp(-0.5) + np.exp(-2) - (1 + np.exp(-2) + 2 * np.exp(-0.5)) / 2
  assert mp.mmd_unbiased(x, y, gammas=(1.0, 0.5)) == pytest.approx((expected + g2) / 2)
  with pytest.raises(ValueError, match="cells >= 2"):
    mp.mmd_unbiased(x[:1], y)


def test_log_fold_change_and_cosine():
  control = np.array([[0.1, 0.1], [0.1, 0.1]])
  real = np.array([[0.7, 0.1], [0.7, 0.1]])   # lfc = [log2(0.8/0.2), 0] = [2, 0]
  pred = np.array([[0.6, 0.3], [0.8, 0.3]])   # means [0.7, 0.3]: lfc = [2, 1]
  np.testing.assert_allclose(mp.log_fold_change(real, control), [2.0, 0.0], atol=1e-12)
  np.testing.assert_allclose(mp.log_fold_change(pred, control), [2.0, 1.0], atol=1e-12)
  assert mp.cosine_logfc(pred, real, control) == pytest.approx(2 / np.sqrt(5))
  assert mp.cosine(np.zeros(2), np.ones(2)) == 0.0
  # A mean below -pseudocount has no logarithm: that gene's lfc is 0 (PerturBench fillna).
  negative = np.array([[-0.5, 0.7], [-0.5, 0.7]])
  np.testing.assert_allclose(mp.log_fold_change(negative, control), [0.0, 2.0], atol=1e-12)


def test_rmse_of_means():
  real = np.array([[0.0, 0.0], [2.0, 2.0]])            # means [1, 1]
  pred = np.array([[4.0, 5.0], [4.0, 5.0]])            # means [4, 5]
  assert mp.rmse_mean(pred, real) == pytest.approx(np.sqrt((9 + 16) / 2))


def test_deg_order_and_recall():
  rng = np.random.default_rng(0)
  control = np.zeros((30, 4))
  control[:, 1] = rng.normal(0, 1, 30)
  control[:, 3] = rng.normal(0, 1, 30)
  real = np.zeros((30, 4))
  real[:, 0] = 10 + rng.random(30)               # every cell above every control cell
  real[:, 1] = control[:, 1] + 0.8               # shifted, overlapping
  real[:, 3] = control[:, 3]                     # same values: U = n1 n2 / 2, p = 1
  order = mp.deg_order(real, control)
  # gene 0 most significant, then 1; genes 2 (constant: p undefined -> 1) and 3 (p = 1) tie on
  # p and effect 0, so the gene order decides.
  assert list(order) == [0, 1, 2, 3]
  pred = np.zeros((30, 4))
  pred[:, 0] = 10 + rng.random(30)
  pred[:, 3] = 5 + rng.random(30)                # predicted DEGs {0, 3}; true {0, 1}
  assert mp.deg_recall(pred, real, control, n=2) == 0.5
  assert mp.deg_recall(real, real, control, n=2) == 1.0
  with pytest.raises(ValueError, match="top 5 genes needs"):
    mp.deg_recall(pred, real, control, n=5)


def test_rank_scores_by_hand():
  m = np.array([[1.0, 5.0, 2.0],
                [3.0, 2.0, 2.0],
                [0.0, 4.0, 3.0]])
  # Column p: how many other predictions are closer to truth p than prediction p.
  np.testing.assert_allclose(mp.rank_scores(m, higher_is_better=False), [1 / 3, 0, 2 / 3])
  np.testing.assert_allclose(mp.rank_scores(m, higher_is_better=True), [1 / 3, 2 / 3, 0])
  ties = np.array([[1.0, 0.0], [1.0, 0.0]])
  np.testing.assert_allclose(mp.rank_scores(ties, higher_is_better=False), [0.25, 0.25])


def _population(rng, mean, n=40):
  return np.abs(rng.normal(mean, 0.3, size=(n, len(mean))))


def test_score_group_perfect_and_swapped_predictions():
  rng = np.random.default_rng(1)
  genes = 6
  control = _population(rng, np.full(genes, 0.5))
  reals = [_population(rng, np.r_[3.0, np.full(genes - 1, 0.5)]),
           _population(rng, np.r_[0.5, 3.0, np.full(genes - 2, 0.5)])]
  pca = mp.fit_pca(reals + [control], n_components=3)
  exact = mp.score_group(reals, reals, [control, control], pca, n_degs=1)
  np.testing.assert_allclose(exact["rmse_mean"], 0.0, atol=1e-12)
  np.testing.assert_allclose(exact["cosine_logfc"], 1.0)
  np.testing.assert_allclose(exact["deg_recall"], 1.0)
  for name in mp.METRICS:
    np.testing.assert_allclose(exact[f"{name}_rank"], 0.0)
  swapped = mp.score_group(reals[::-1], reals, [control, control], pca, n_degs=1)
  for name in mp.METRICS:  # the other prediction is always the better one: rank 1/2
    np.testing.assert_allclose(swapped[f"{name}_rank"], 0.5, err_msg=name)
  assert np.all(swapped["mmd_gex"] > exact["mmd_gex"])


def test_score_conditions_ranks_within_a_context():
  rng = np.random.default_rng(2)
  c = _population(rng, np.full(4, 0.5))
  a, b, z = (_population(rng, np.r_[m, np.full(3, 0.5)]) for m in (2.0, 4.0, 3.0))
  reals = {"A|x": a, "B|x": b, "Z|y": z}
  out = mp.score_conditions({"A|x": b, "B|x": a, "Z|y": a}, reals,
                            {"A|x": c, "B|x": c, "Z|y": c},
                            {"A|x": ("x",), "B|x": ("x",), "Z|y": ("y",)}, n_degs=2)
  assert out["rmse_mean_rank"] == {"A|x": 0.5, "B|x": 0.5, "Z|y": 0.0}  # Z alone in y
  assert out["rmse_mean"]["Z|y"] == pytest.approx(mp.rmse_mean(a, z))
  with pytest.raises(KeyError, match="no predicted cells"):
    mp.score_conditions({}, reals, {}, {})
