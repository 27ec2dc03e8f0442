"""Tests for flowzoo.metrics against closed forms, LPs and brute-force loops."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

from flowzoo import metrics


def _points(seed, n, d, shift=0.0):
  return np.random.default_rng(seed).normal(size=(n, d)) + shift


# ---------------------------------------------------------------- Wasserstein


def test_w1_w2_1d_equal_sizes_match_sorted_pairing():
  # In 1-D the monotone (sorted) pairing is optimal for every convex cost.
  x, y = _points(0, 9, 1), _points(1, 9, 1, shift=0.7) * 2.0
  diff = np.sort(x[:, 0]) - np.sort(y[:, 0])
  np.testing.assert_allclose(metrics.w1(x, y), np.abs(diff).mean(), rtol=1e-10)
  np.testing.assert_allclose(metrics.w2(x, y), np.sqrt(np.mean(diff**2)), rtol=1e-10)


def test_w2_gaussians_closed_form():
  # Samples placed at the Gaussian quantiles: W2 between them tends to the
  # closed form sqrt((m1 - m2)^2 + (s1 - s2)^2) as n grows.
  n = 400
  q = stats.norm.ppf((np.arange(n) + 0.5) / n)
  rng = np.random.default_rng(0)
  x = (1.0 + 0.5 * q)[rng.permutation(n), None]  # shuffled so no pairing is given away
  y = (-1.0 + 2.0 * q)[:, None]
  expected = np.sqrt((1.0 - -1.0) ** 2 + (0.5 - 2.0) ** 2)
  np.testing.assert_allclose(metrics.w2(x, y), expected, rtol=0.01)


def test_w2_of_translation_is_translation_norm():
  x = _points(2, 12, 3)
  shift = np.array([0.3, -1.2, 2.0])
  np.testing.assert_allclose(metrics.w2(x, x + shift), np.linalg.norm(shift), rtol=1e-10)
  assert metrics.w2(x, x) == 0.0
  assert metrics.w1(x, x) == 0.0


def _lp_ot(cost, a, b):
  """Brute-force OT: min <P, cost> s.t. P 1 = a, P^T 1 = b, P >= 0, via linprog."""
  n, m = cost.shape
  rows = np.kron(np.eye(n), np.ones((1, m)))  # sum_j P_ij
  cols = np.kron(np.ones((1, n)), np.eye(m))  # sum_i P_ij
  res = optimize.linprog(cost.ravel(), A_eq=np.vstack([rows, cols]),
                         b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
  assert res.success
  return res.fun


def test_w1_w2_unequal_sizes_match_linprog():
  x, y = _points(3, 4, 2), _points(4, 6, 2, shift=0.5)
  diff = x[:, None] - y[None]
  a, b = np.full(4, 1 / 4), np.full(6, 1 / 6)
  np.testing.assert_allclose(metrics.w1(x, y), _lp_ot(np.linalg.norm(diff, axis=-1), a, b),
                             rtol=1e-7)
  np.testing.assert_allclose(metrics.w2(x, y), np.sqrt(_lp_ot((diff**2).sum(-1), a, b)),
                             rtol=1e-7)


def test_weighted_wasserstein_matches_linprog():
  x, y = _points(5, 4, 2), _points(6, 6, 2)
  a = np.array([1.0, 2.0, 3.0, 4.0])  # unnormalised on purpose
  b = np.array([0.5, 0.0, 1.0, 2.0, 1.0, 0.5])
  cost = np.linalg.norm(x[:, None] - y[None], axis=-1)
  np.testing.assert_allclose(metrics.wasserstein(x, y, p=1, a=a, b=b),
                             _lp_ot(cost, a / a.sum(), b / b.sum()), rtol=1e-7)


def test_equal_sizes_match_linear_sum_assignment():
  # With uniform weights and n = m the optimal plan is a permutation.
  x, y = _points(7, 30, 5), _points(8, 30, 5, shift=0.3)
  for p, cost in ((1, np.linalg.norm(x[:, None] - y[None], axis=-1)),
                  (2, ((x[:, None] - y[None]) ** 2).sum(-1))):
    r, c = optimize.linear_sum_assignment(cost)
    np.testing.assert_allclose(metrics.wasserstein(x, y, p=p), cost[r, c].mean() ** (1 / p),
                               rtol=1e-9)


def test_wasserstein_rejects_bad_p_and_huge_problems():
  x = _points(0, 3, 2)
  with pytest.raises(ValueError, match="p must be 1 or 2"):
    metrics.wasserstein(x, x, p=3)
  # Refused before any [n, m] matrix is allocated.
  big = np.zeros((5000, 1))
  with pytest.raises(ValueError, match="subsample"):
    metrics.w1(big, big)
  with pytest.raises(ValueError, match=r"a must have shape \(3,\)"):
    metrics.wasserstein(x, x, a=np.ones(2))


# ------------------------------------------------------------------------ MMD


def _mmd_loop(x, y, gammas):
  """Double-loop reference of the gamma-averaged biased MMD^2."""
  def kmean(u, v, g):
    return np.mean([[np.exp(-g * np.sum((ui - vj) ** 2)) for vj in v] for ui in u])
  return np.mean([kmean(x, x, g) + kmean(y, y, g) - 2 * kmean(x, y, g) for g in gammas])


def test_mmd_matches_double_loop():
  x, y = _points(9, 5, 3), _points(10, 7, 3, shift=0.4)
  np.testing.assert_allclose(metrics.mmd(x, y), _mmd_loop(x, y, metrics.DEFAULT_GAMMAS),
                             rtol=1e-10)
  np.testing.assert_allclose(metrics.mmd(x, y, gammas=(0.3,)), _mmd_loop(x, y, (0.3,)),
                             rtol=1e-10)


def test_mmd_hand_computed_single_points():
  # One point each at distance 1: 1 + 1 - 2 exp(-gamma), averaged over gammas.
  x, y = np.zeros((1, 1)), np.ones((1, 1))
  gammas = (2.0, 0.1)
  expected = np.mean([2 - 2 * np.exp(-g) for g in gammas])
  np.testing.assert_allclose(metrics.mmd(x, y, gammas=gammas), expected, rtol=1e-12)


def test_mmd_zero_symmetric_and_positive():
  x, y = _points(11, 20, 4), _points(12, 25, 4, shift=1.0)
  assert metrics.mmd(x, x) == pytest.approx(0.0, abs=1e-12)
  np.testing.assert_allclose(metrics.mmd(x, y), metrics.mmd(y, x), rtol=1e-12)
  assert metrics.mmd(x, y) > 0.05


# -------------------------------------------------------------------- energy


def test_energy_1d_is_square_of_scipy():
  # scipy returns sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|); ours is the bracket.
  x, y = _points(13, 11, 1), _points(14, 7, 1, shift=0.5)
  np.testing.assert_allclose(metrics.energy_distance(x, y),
                             stats.energy_distance(x[:, 0], y[:, 0]) ** 2, rtol=1e-10)


def test_energy_uses_euclidean_not_squared_norm():
  # Single points at distance 5: 2 * 5 (a squared-norm version would give 50).
  x, y = np.zeros((1, 2)), np.array([[3.0, 4.0]])
  assert metrics.energy_distance(x, y) == pytest.approx(10.0)
  z = _points(15, 10, 3)
  assert metrics.energy_distance(z, z) == 0.0


# ------------------------------------------------------------ API and inputs


def test_compute_all_and_registry():
  x, y = _points(16, 8, 3), jnp.asarray(_points(17, 10, 3, shift=0.5))  # jax input too
  vals = metrics.compute_all(x, y)
  assert list(vals) == ["w1", "w2", "mmd", "energy"]
  assert set(metrics.METRICS) == set(vals)
  for name, v in vals.items():
    assert type(v) is float
    assert v == pytest.approx(metrics.METRICS[name](np.asarray(x), np.asarray(y)))
  assert metrics.compute_all(x, y, names=("mmd",)) == {"mmd": vals["mmd"]}
  with pytest.raises(KeyError, match="valid"):
    metrics.compute_all(x, y, names=("w3",))


@pytest.mark.parametrize("name", sorted(metrics.METRICS))
def test_bad_inputs_raise_value_error(name):
  fn = metrics.METRICS[name]
  good = np.zeros((3, 2))
  with pytest.raises(ValueError, match=r"same dimension.*\(3, 2\).*\(3, 4\)"):
    fn(good, np.zeros((3, 4)))
  bad = good.copy()
  bad[1, 0] = np.nan
  with pytest.raises(ValueError, match="y contains non-finite"):
    fn(good, bad)
  with pytest.raises(ValueError, match="x is empty"):
    fn(np.zeros((0, 2)), good)
  with pytest.raises(ValueError, match="2-D"):
    fn(np.zeros(3), good)
