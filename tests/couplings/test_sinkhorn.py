"""Sinkhorn coupling: exact assignment at small epsilon, groups, masks, errors, no retracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from flowzoo.couplings import plans
from flowzoo.couplings.sinkhorn import PAIRS, Sinkhorn
from flowzoo.registry import COUPLINGS


def sq_cost(x0, x1):
  return ((np.asarray(x0)[:, None] - np.asarray(x1)[None]) ** 2).sum(-1)


@pytest.mark.parametrize("pairs", ["argmax", "round"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_epsilon_recovers_exact_assignment(pairs, seed):
  rng = np.random.default_rng(seed)
  x0, x1 = rng.normal(size=(12, 3)), rng.normal(size=(12, 3)) + 0.5
  _, col = linear_sum_assignment(sq_cost(x0, x1))
  coupling = COUPLINGS.build("sinkhorn", dict(epsilon=1e-3, pairs=pairs, max_iterations=5000,
                                              threshold=1e-5))
  i, j = coupling(jax.random.key(seed), jnp.asarray(x0, jnp.float32), jnp.asarray(x1, jnp.float32))
  np.testing.assert_array_equal(i, np.arange(12))
  np.testing.assert_array_equal(j, col)


def test_plan_marginals_and_cost_hook():
  rng = np.random.default_rng(0)
  x0, x1 = jnp.asarray(rng.normal(size=(6, 2))), jnp.asarray(rng.normal(size=(9, 2)))
  s = Sinkhorn(epsilon=0.1, threshold=1e-6, max_iterations=2000)
  p = jnp.exp(s.plan(x0, x1).log_plan)
  np.testing.assert_allclose(p.sum(1), np.full(6, 1 / 6), atol=1e-5)
  np.testing.assert_allclose(p.sum(0), np.full(9, 1 / 9), atol=1e-5)
  # A precomputed cost matrix and a pytree cost_fn give the same plan.
  p_cost = jnp.exp(s.plan(x0, x1, cost=jnp.asarray(sq_cost(x0, x1))).log_plan)
  tree = Sinkhorn(epsilon=0.1, threshold=1e-6, max_iterations=2000,
                  cost_fn=lambda u, v: plans.sq_euclidean(u["m"], v["m"]))
  p_tree = jnp.exp(tree.plan({"m": x0}, {"m": x1}).log_plan)
  np.testing.assert_allclose(p_cost, p, atol=1e-6)
  np.testing.assert_allclose(p_tree, p, atol=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_kernel_mode_matches_log_domain(tau):
  # Kernel mode reuses one precomputed exp(-C/eps) (plans._KernelGeometry); it must
  # solve the same problem as log-domain Sinkhorn, with masks, groups and tau.
  rng = np.random.default_rng(3)
  x0, x1 = jnp.asarray(rng.normal(size=(10, 3))), jnp.asarray(rng.normal(size=(10, 3)) + 0.3)
  kw = dict(groups=jnp.asarray([0, 0, 1, 1, 1, 2, 2, 2, 2, 0]),
            mask1=jnp.asarray([True] * 9 + [False]))
  opts = dict(epsilon=0.1, threshold=0.0, max_iterations=500, tau_a=tau, tau_b=tau)
  lse = Sinkhorn(**opts).plan(x0, x1, **kw)
  ker = Sinkhorn(**opts, lse_mode=False).plan(x0, x1, **kw)
  np.testing.assert_array_equal(np.isfinite(ker.log_plan), np.isfinite(lse.log_plan))
  np.testing.assert_allclose(jnp.exp(ker.log_plan), jnp.exp(lse.log_plan), atol=1e-5)


def test_unbalanced_plan_moves_less_mass_to_outliers():
  rng = np.random.default_rng(0)
  x0 = rng.normal(size=(8, 2))
  x1 = np.concatenate([rng.normal(size=(7, 2)), [[30.0, 30.0]]])  # one far outlier target
  bal = jnp.exp(Sinkhorn(epsilon=0.05).plan(x0, x1).log_plan)
  unb = jnp.exp(Sinkhorn(epsilon=0.05, tau_b=0.5).plan(x0, x1).log_plan)
  assert float(bal[:, -1].sum()) == pytest.approx(1 / 8, abs=1e-3)
  assert float(unb[:, -1].sum()) < 0.1 * float(bal[:, -1].sum())


@pytest.mark.parametrize("pairs", PAIRS)
def test_groups_never_pair_across(pairs):
  rng = np.random.default_rng(1)
  n = 16
  groups = jnp.asarray(rng.integers(0, 3, size=n))
  # Make cross-group partners much closer than own-group ones: only the mask keeps pairs inside.
  x0 = jnp.asarray(rng.normal(size=(n, 2)))
  x1 = x0[jnp.asarray(rng.permutation(n))] + 0.01
  c = Sinkhorn(epsilon=0.01, pairs=pairs)
  for seed in range(3):
    i, j = c(jax.random.key(seed), x0, x1, groups=groups)
    np.testing.assert_array_equal(groups[i], groups[j])
  if pairs == "round":
    assert sorted(np.asarray(j)) == list(range(n))


@pytest.mark.parametrize("pairs", ["sample", "row_sample", "argmax", "round"])
def test_masked_rows_take_no_part(pairs):
  rng = np.random.default_rng(2)
  x0, x1 = jnp.asarray(rng.normal(size=(10, 2))), jnp.asarray(rng.normal(size=(10, 2)))
  mask0 = jnp.arange(10) < 7
  mask1 = jnp.arange(10) < 7
  i, j = Sinkhorn(epsilon=0.05, pairs=pairs)(jax.random.key(0), x0, x1, mask0=mask0, mask1=mask1)
  keep = np.asarray(mask0)[np.asarray(i)]
  assert keep.sum() >= 7
  assert np.asarray(mask1)[np.asarray(j)[keep]].all()
  if pairs == "round":
    assert sorted(np.asarray(j)) == list(range(10))


def test_sampling_follows_the_plan():
  x0 = jnp.asarray([[0.0], [10.0]])
  x1 = jnp.asarray([[10.1], [0.1]])
  i, j = Sinkhorn(epsilon=0.01)(jax.random.key(0), jnp.tile(x0, (32, 1)), jnp.tile(x1, (32, 1)))
  np.testing.assert_array_equal(np.asarray(i) % 2, 1 - np.asarray(j) % 2)


@pytest.mark.parametrize("pairs", PAIRS)
def test_compiles_once(pairs):
  c = Sinkhorn(epsilon=0.1, pairs=pairs)

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def pair(rng, x0, x1, groups):
    return c(rng, x0, x1, groups=groups)

  rng = np.random.default_rng(0)
  for k in range(3):
    pair(jax.random.key(k), jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
         jnp.asarray(rng.normal(size=(8, 3)), jnp.float32), jnp.asarray(rng.integers(0, 2, 8)))


def test_bad_arguments_raise_clearly():
  x = jnp.zeros((4, 3))
  for eps in (0.0, -1.0):
    with pytest.raises(ValueError, match="epsilon must be a number > 0"):
      COUPLINGS.build("sinkhorn", dict(epsilon=eps))
  with pytest.raises(ValueError, match="pairs must be one of"):
    Sinkhorn(pairs="best")
  with pytest.raises(ValueError, match="tau_a must be in"):
    Sinkhorn(tau_a=0.0)
  with pytest.raises(ValueError, match="same event shape"):
    Sinkhorn()(jax.random.key(0), x, jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="equal-size"):
    Sinkhorn(pairs="round")(jax.random.key(0), x, jnp.zeros((5, 3)))
  with pytest.raises(ValueError, match=r"group 1 has 2 valid sources but 0 valid targets"):
    Sinkhorn()(jax.random.key(0), x, x, groups=jnp.asarray([0, 0, 1, 1]),
               mask1=jnp.asarray([True, True, False, False]))
  with pytest.raises(ValueError, match="cost must have shape"):
    Sinkhorn()(jax.random.key(0), x, x, cost=jnp.zeros((4, 5)))


def test_plan_reports_iterations():
  x0, x1 = np.random.default_rng(0).normal(size=(2, 6, 2)).astype(np.float32)
  done = Sinkhorn(epsilon=0.5, max_iterations=500, inner_iterations=10).plan(x0, x1)
  assert bool(done.converged) and 0 < int(done.iterations) < 500
  assert int(done.iterations) % 10 == 0
  capped = Sinkhorn(epsilon=0.001, max_iterations=20, inner_iterations=10).plan(x0, x1)
  assert int(capped.iterations) == 20 and not bool(capped.converged)
