"""Host assignment solvers (`assignment.linear_assignment`): lapx's lapjvh vs scipy."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from flowzoo.couplings import assignment


def problems(seed: int, count: int):
  """Costs on which a solver bug shows: ties, zeros, offsets, rectangles, FM costs."""
  rng = np.random.default_rng(seed)
  for k in range(count):
    n = int(rng.integers(1, 80))
    m = n if k % 3 else int(rng.integers(1, 80))
    kind = k % 5
    if kind == 0:
      yield rng.normal(size=(n, m))
    elif kind == 1:  # many optimal matchings
      yield rng.integers(0, 3, size=(n, m)).astype(float)
    elif kind == 2:  # squared Euclidean, shifted target (a flow-matching minibatch)
      d = int(rng.integers(1, 32))
      x0, x1 = rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 3 * rng.normal()
      yield ((x0[:, None] - x1[None]) ** 2).sum(-1)
    elif kind == 3:
      yield np.zeros((n, m))
    else:  # large offset: relative precision
      yield rng.normal(size=(n, m)) * 1e6 + 1e9


def test_lapx_finds_the_optimum():
  for cost in problems(0, 400):
    r0, c0 = linear_sum_assignment(cost)
    r1, c1 = assignment.linear_assignment(cost, "lapx")
    k = min(cost.shape)
    assert len(r1) == k and len(set(r1.tolist())) == k and len(set(c1.tolist())) == k
    np.testing.assert_array_equal(r1, np.sort(r1))
    optimum = cost[r0, c0].sum()
    assert cost[r1, c1].sum() == pytest.approx(optimum, rel=1e-12, abs=1e-9)


def test_unique_optimum_gives_scipy_pairs():
  # Continuous costs: one optimal matching, so training is bit-identical across solvers.
  rng = np.random.default_rng(1)
  for _ in range(20):
    x0, x1 = rng.normal(size=(2, 64, 8))
    cost = ((x0[:, None] - x1[None] - 1.0) ** 2).sum(-1)
    np.testing.assert_array_equal(assignment.linear_assignment(cost, "lapx")[1],
                                  linear_sum_assignment(cost)[1])


def test_unknown_solver():
  with pytest.raises(ValueError, match=r"solver must be one of \('lapx', 'scipy'\)"):
    assignment.linear_assignment(np.zeros((2, 2)), "lapjv")


def test_incomplete_lapx_matching_falls_back_to_scipy(monkeypatch):
  cost = np.random.default_rng(2).normal(size=(6, 6))
  monkeypatch.setattr(assignment.lap, "lapjvh",
                      lambda c, **kw: (np.arange(5), np.arange(5)))  # one pair short
  with pytest.warns(RuntimeWarning, match="incomplete matching"):
    rows, cols = assignment.linear_assignment(cost, "lapx")
  np.testing.assert_array_equal(cols, linear_sum_assignment(cost)[1])
