"""Exact OT coupling (lapx and scipy callbacks, in-JAX Hungarian) vs linear_sum_assignment."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from flowzoo.couplings.exact import SOLVERS, Exact


def sq_cost(x0, x1):
  return ((np.asarray(x0)[:, None] - np.asarray(x1)[None]) ** 2).sum(-1)


def test_matches_scipy_and_compiles_once():
  c = Exact()

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def pair(x0, x1):
    return c(None, x0, x1)

  rng = np.random.default_rng(0)
  for _ in range(3):
    x0, x1 = rng.normal(size=(2, 10, 3)).astype(np.float32)
    i, j = pair(x0, x1)
    _, col = linear_sum_assignment(sq_cost(x0, x1))
    np.testing.assert_array_equal(i, np.arange(10))
    np.testing.assert_array_equal(j, col)


def test_groups_are_solved_separately():
  rng = np.random.default_rng(1)
  x0, x1 = rng.normal(size=(2, 12, 2))
  groups = rng.integers(0, 3, 12)
  _, j = Exact()(None, x0, x1, groups=jnp.asarray(groups))
  j = np.asarray(j)
  np.testing.assert_array_equal(groups[j], groups)
  assert sorted(j) == list(range(12))
  for g in np.unique(groups):  # optimal within each group
    idx = np.flatnonzero(groups == g)
    r, col = linear_sum_assignment(sq_cost(x0[idx], x1[idx]))
    assert sq_cost(x0, x1)[idx, j[idx]].sum() == pytest.approx(sq_cost(x0[idx], x1[idx])[r, col].sum())


def test_masks_and_errors():
  rng = np.random.default_rng(2)
  x0, x1 = rng.normal(size=(2, 8, 2))
  mask1 = np.arange(8) < 6
  _, j = Exact()(None, x0, x1, mask0=jnp.asarray(np.arange(8) < 6), mask1=jnp.asarray(mask1))
  assert mask1[np.asarray(j)[:6]].all() and len(set(np.asarray(j)[:6])) == 6
  with pytest.raises(ValueError, match="group 0 has 4 valid sources but 0 valid targets"):
    Exact()(None, x0, x1, groups=jnp.asarray([0] * 4 + [1] * 4),
            mask1=jnp.asarray([False] * 4 + [True] * 4))
  with pytest.raises(ValueError, match="same event shape"):
    Exact()(None, x0, x1[:, :1])


def reference_cost(cost, groups, mask0, mask1):
  """Total cost of the valid rows under the documented semantics, via scipy.

  Per group: scipy's (rectangular) optimum, plus the cheapest valid target
  for sources left over when a group has more valid sources than targets.
  """
  total = 0.0
  for label in np.unique(groups):
    rows = np.flatnonzero(mask0 & (groups == label))
    cols = np.flatnonzero(mask1 & (groups == label))
    sub = cost[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(sub)
    total += sub[r, c].sum()
    left = np.setdiff1d(np.arange(rows.size), r)
    total += sub[left].min(1).sum() if left.size else 0.0
  return total


def random_problem(seed, n=24, runs=3, masked=True):
  """Sources, shifted targets, contiguous groups (sample_batch layout), masks."""
  rng = np.random.default_rng(seed)
  x0 = rng.normal(size=(n, 3)).astype(np.float32)
  x1 = (rng.normal(size=(n, 3)) * 0.5 + 1.0).astype(np.float32)
  groups = np.repeat(np.arange(runs), n // runs)
  mask0, mask1 = np.ones(n, bool), np.ones(n, bool)
  if masked:  # one balanced and one unbalanced group
    mask0[[1, 2]] = mask1[[3, 4]] = False
    mask1[[n - 1, n - 2]] = False
  return x0, x1, groups, mask0, mask1


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("group_size", [None, 8])
@pytest.mark.parametrize("masked", [False, True])
def test_optimal_cost_per_group_vs_scipy(solver, group_size, masked):
  coupling = Exact(solver=solver, group_size=group_size)
  for seed in range(3):
    x0, x1, groups, mask0, mask1 = random_problem(seed, masked=masked)
    i, j = coupling(None, jnp.asarray(x0), jnp.asarray(x1), groups=jnp.asarray(groups),
                    mask0=jnp.asarray(mask0), mask1=jnp.asarray(mask1))
    i, j = np.asarray(i), np.asarray(j)
    np.testing.assert_array_equal(i, np.arange(24))
    cost = sq_cost(x0, x1)
    assert mask1[j[mask0]].all() and (groups[j] == groups)[mask0].all()
    balanced = mask0 & (groups == 0)  # group 0 has as many sources as targets
    assert len(set(j[balanced])) == balanced.sum()
    np.testing.assert_allclose(cost[np.flatnonzero(mask0), j[mask0]].sum(),
                               reference_cost(cost, groups, mask0, mask1), rtol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_warm_start_changes_nothing_and_no_retrace(solver):
  cold, warm = Exact(solver=solver, warm_start=False), Exact(solver=solver)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def pair(x0, x1):
    return warm(None, x0, x1)

  for seed in range(3):
    x0, x1, *_ = random_problem(seed, n=16, masked=False)
    np.testing.assert_array_equal(pair(x0, x1)[1], cold(None, x0, x1)[1])


@pytest.mark.parametrize("solver", SOLVERS)
def test_vmap_solves_each_problem(solver):
  rng = np.random.default_rng(5)
  x0, x1 = rng.normal(size=(2, 3, 10, 2)).astype(np.float32)
  _, j = jax.vmap(lambda a, b: Exact(solver=solver)(None, a, b))(x0, x1)
  for k in range(3):
    np.testing.assert_array_equal(j[k], linear_sum_assignment(sq_cost(x0[k], x1[k]))[1])


def test_bad_arguments():
  with pytest.raises(ValueError, match="solver must be one of"):
    Exact(solver="lapjvh")
  with pytest.raises(ValueError, match="group_size"):
    Exact(group_size=0)
  x = jnp.zeros((10, 2))
  with pytest.raises(ValueError, match="runs of group_size=4"):
    Exact(group_size=4)(None, x, x, groups=jnp.zeros(10, jnp.int32))


def test_group_size_takes_diagonal_blocks_of_a_given_cost():
  x0, x1, groups, *_ = random_problem(7, masked=False)
  cost = jnp.asarray(sq_cost(x0, x1), jnp.float32)
  args = dict(groups=jnp.asarray(groups))
  _, j_blocks = Exact(group_size=8)(None, x0, x1, cost=cost, **args)
  _, j_full = Exact()(None, x0, x1, **args)
  np.testing.assert_array_equal(j_blocks, j_full)


@pytest.mark.parametrize("solver", ["lapx", "scipy"])
def test_non_finite_sources_pair_by_default_and_do_not_raise(solver):
  # A diverged run: the step must finish so that the trainer names the step
  # whose loss is not finite (scipy raised inside the program before).
  rng = np.random.default_rng(6)
  x0, x1 = rng.normal(size=(2, 8, 2)).astype(np.float32)
  x0[3, 1] = np.nan
  _, j = Exact(solver=solver)(None, jnp.asarray(x0), jnp.asarray(x1))
  np.testing.assert_array_equal(j, np.arange(8))
  _, j = Exact(solver=solver, group_size=4)(None, jnp.asarray(x0), jnp.asarray(x1),
                                             groups=jnp.repeat(jnp.arange(2), 4))
  np.testing.assert_array_equal(j[4:], linear_sum_assignment(sq_cost(x0[4:], x1[4:]))[1] + 4)
  np.testing.assert_array_equal(j[:4], np.arange(4))
