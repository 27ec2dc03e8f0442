"""Exact OT coupling (host callback to scipy) vs linear_sum_assignment."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from flowzoo.couplings.exact import Exact


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
