"""Entropic Brenier map (WFM Eq. 13): translations, unequal sizes, masks, weights, ott agreement."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ott.geometry import pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

from flowzoo.couplings.entropic_map import EntropicMap
from flowzoo.registry import COUPLINGS

SHIFT = np.array([3.0, -2.0])
# Small epsilon (relative to the mean cost, which the shift dominates) and enough iterations to
# converge: the entropic bias is then far below the tolerance, which the bug of applying ott's
# `transport` to a scaled cost (errors of order 1) or a missing weight would exceed.
SHARP = dict(epsilon=1e-4, max_iterations=5000)
ATOL = 1e-2


def cloud(n, seed=0):
  return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


def test_translation_equal_sizes():
  x0 = cloud(30)
  out = COUPLINGS.build("entropic_map", SHARP)(x0, x0 + SHIFT)
  np.testing.assert_allclose(out, x0 + SHIFT, atol=ATOL)


@pytest.mark.parametrize("copies0,copies1", [(1, 2), (3, 1)])
def test_translation_unequal_sizes(copies0, copies1):
  base = cloud(20)  # repeated copies: the OT map is still the translation.
  x0, x1 = np.tile(base, (copies0, 1)), np.tile(base + SHIFT, (copies1, 1))
  out = EntropicMap(**SHARP)(x0, x1)
  assert out.shape == x0.shape
  np.testing.assert_allclose(out, x0 + SHIFT, atol=ATOL)


def test_translation_with_padding_masks_and_weights():
  base = cloud(20)
  junk = np.random.default_rng(5).normal(size=(6, 2)).astype(np.float32) * 50
  x0 = np.concatenate([base, junk[:4]])
  x1 = np.concatenate([base + SHIFT, base[:5] + SHIFT, junk])
  mask0 = np.arange(24) < 20
  mask1 = np.arange(31) < 25
  w = np.random.default_rng(1).uniform(0.5, 2.0, 20).astype(np.float32)
  a = np.concatenate([w, np.ones(4)]).astype(np.float32)
  # Target weights: the first 5 points appear twice, so their copies share their mass.
  b = np.concatenate([w, np.zeros(11)]).astype(np.float32)
  b[:5] *= 0.5
  b[20:25] = b[:5]
  out = EntropicMap(**SHARP)(x0, x1, mask0=mask0, mask1=mask1, a=a, b=b)
  np.testing.assert_allclose(out[:20], base + SHIFT, atol=ATOL)


def test_out_of_sample_matches_ott_on_unscaled_cost_and_scaling_is_handled():
  x0, x1, x = cloud(25, 0), cloud(35, 1) * 0.5 + 1.0, cloud(10, 2)
  eps = 0.1
  geom = pointcloud.PointCloud(jnp.asarray(x0), jnp.asarray(x1), epsilon=eps)
  out = sinkhorn.Sinkhorn(threshold=1e-6, max_iterations=5000)(linear_problem.LinearProblem(geom))
  ref = out.to_dual_potentials().transport(jnp.asarray(x))  # correct when the cost is not scaled
  ours = EntropicMap(epsilon=eps, scale_cost=None, threshold=1e-6, max_iterations=5000)
  np.testing.assert_allclose(ours(x0, x1, x=x), ref, atol=1e-3)
  # The same problem on a cost scaled by 4 with eps / 4 must give the same map.
  scaled = EntropicMap(epsilon=eps / 4, scale_cost=4.0, threshold=1e-6, max_iterations=5000)
  np.testing.assert_allclose(scaled(x0, x1, x=x), ref, atol=1e-3)


def test_compiles_once_and_errors():
  m = EntropicMap(epsilon=0.01)

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(x0, x1):
    return m(x0, x1)

  for k in range(3):
    f(cloud(8, k), cloud(12, k + 10))
  with pytest.raises(ValueError, match="epsilon must be a number > 0"):
    EntropicMap(epsilon=0.0)
  with pytest.raises(ValueError, match="same event shape"):
    m(cloud(8), np.zeros((8, 3), np.float32))
  with pytest.raises(ValueError, match="mask1 must have shape"):
    m(cloud(8), cloud(9), mask1=np.ones(8, bool))
  with pytest.raises(ValueError, match="weights b must be >= 0"):
    m(cloud(8), cloud(9), b=-np.ones(9, np.float32))
