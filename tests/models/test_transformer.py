"""Point-cloud transformer: equivariance, padding, zero init, shape errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowzoo.models.transformer import Transformer
from flowzoo.registry import MODELS

B, N, D = 3, 7, 2


def tiny(**kw):
  return Transformer(**{**dict(width=16, num_blocks=2, num_heads=4, mlp_dim=16,
                               time_frequencies=4), **kw})


def perturbed(params, rng):
  """Random non-zero output layer (the zero init would make every test trivial)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(rng, len(leaves))
  return jax.tree.unflatten(tree, [l + 0.3 * jax.random.normal(k, l.shape)
                                   for l, k in zip(leaves, keys)])


@pytest.fixture
def setup(rng):
  k1, k2, k3, k4 = jax.random.split(rng, 4)
  x = jax.random.normal(k1, (B, N, D))
  t = jax.random.uniform(k2, (B,))
  cond = jax.random.normal(k3, (B, 4))
  model = tiny()
  params = perturbed(model.init(k4, t, x, cond), k4)
  return model, params, t, x, cond


def test_zero_initialised_output(rng):
  model = tiny()
  x = jax.random.normal(rng, (B, N, D))
  params = model.init(rng, jnp.zeros(B), x, None)
  np.testing.assert_array_equal(model.apply(params, jnp.zeros(B), x, None), 0.0)


def test_permutation_equivariant(setup):
  model, params, t, x, cond = setup
  perm = np.random.default_rng(0).permutation(N)
  v = model.apply(params, t, x, cond)
  v_perm = model.apply(params, t, x[:, perm], cond)
  assert float(jnp.abs(v).max()) > 1e-3
  np.testing.assert_allclose(v_perm, v[:, perm], atol=1e-5)


def test_padding_leaves_real_points_unchanged(setup):
  model, params, t, x, cond = setup
  n_real = 4
  mask = jnp.arange(N)[None, :] < n_real
  mask = jnp.broadcast_to(mask, (B, N))
  v = model.apply(params, t, x, cond, mask=mask)
  # Other values on padded points (and fewer padded points) change nothing on real ones.
  x_other = x.at[:, n_real:].set(100.0)
  v_other = model.apply(params, t, x_other, cond, mask=mask)
  v_small = model.apply(params, t, x[:, :n_real], cond)
  np.testing.assert_allclose(v_other[:, :n_real], v[:, :n_real], atol=1e-5)
  np.testing.assert_allclose(v_small, v[:, :n_real], atol=1e-5)
  np.testing.assert_array_equal(v[:, n_real:], 0.0)
  # Without the mask the padded points do matter: the test can fail.
  v_nomask = model.apply(params, t, x_other, cond)
  assert float(jnp.abs(v_nomask[:, :n_real] - v[:, :n_real]).max()) > 1e-3


def test_depends_on_time_and_condition(setup):
  model, params, t, x, cond = setup
  v = model.apply(params, t, x, cond)
  assert float(jnp.abs(model.apply(params, t * 0 + 0.9, x, cond) - v).max()) > 1e-4
  assert float(jnp.abs(model.apply(params, t, x, cond + 1.0) - v).max()) > 1e-4


def test_dropout_in_training_only(setup):
  model = tiny(dropout=0.5)
  _, params, t, x, cond = setup
  v1 = model.apply(params, t, x, cond, train=True, rngs={"dropout": jax.random.key(1)})
  v2 = model.apply(params, t, x, cond, train=True, rngs={"dropout": jax.random.key(2)})
  assert float(jnp.abs(v1 - v2).max()) > 1e-4
  np.testing.assert_array_equal(model.apply(params, t, x, cond), model.apply(params, t, x, cond))


def test_no_retrace_across_calls(setup):
  model, params, t, x, cond = setup
  fn = jax.jit(chex.assert_max_traces(lambda p, t, x, c: model.apply(p, t, x, c), n=1))
  fn(params, t, x, cond)
  fn(params, t + 0.1, x * 2, cond)


def test_built_from_registry_with_wired_event_shape(rng):
  model = MODELS.build("transformer", dict(width=8, num_blocks=1, num_heads=2),
                       wired={"event_shape": (N, D), "cond_dim": 3})
  x = jnp.ones((B, N, D))
  params = model.init(rng, jnp.zeros(B), x, jnp.ones((B, 3)))
  assert model.apply(params, jnp.zeros(B), x, jnp.ones((B, 3))).shape == (B, N, D)


@pytest.mark.parametrize("shape,mask_shape,match", [
    ((B, N, 3), None, "dimension 3 but the model was built for dimension 2"),
    ((B, N * D), None, "point clouds"),
    ((B, N, D), (B, N + 1), "mask must be"),
])
def test_bad_input_raises_clear_error(rng, shape, mask_shape, match):
  model = tiny(event_shape=(N, D))
  x = jnp.ones(shape)
  mask = None if mask_shape is None else jnp.ones(mask_shape, bool)
  with pytest.raises(ValueError, match=match):
    model.init(rng, jnp.zeros(B), x, None, mask=mask)


def test_width_must_divide_heads(rng):
  with pytest.raises(ValueError, match="divisible"):
    tiny(width=10, num_heads=4).init(rng, jnp.zeros(B), jnp.ones((B, N, D)), None)
