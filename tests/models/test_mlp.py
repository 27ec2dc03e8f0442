"""MLP velocity field: the residual / layer-norm variant (WFM App. E.1) against a hand-written forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowzoo.models.embeddings import fourier_time
from flowzoo.models.mlp import MLP


def _layer_norm(h, p):
  mu = h.mean(-1, keepdims=True)
  var = ((h - mu) ** 2).mean(-1, keepdims=True)
  return (h - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _relu(h):
  return np.maximum(h, 0.0)


def test_residual_layer_norm_matches_hand_forward():
  model = MLP(hidden=(16, 16, 16), act="relu", time_frequencies=3, cond_embed=0,
              residual=True, layer_norm=True)
  rng = np.random.default_rng(0)
  t = jnp.asarray(rng.uniform(size=5), jnp.float32)
  x = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)
  params = model.init(jax.random.key(0), t, x, c)
  # Random (non-default) norm parameters so a skipped or misplaced norm shows.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(p.size), p.shape),
                        params)
  p = jax.tree.map(np.asarray, params["params"])
  h = np.concatenate([np.asarray(x), np.asarray(fourier_time(t, 3)), np.asarray(c)], -1)
  for i in range(3):
    z = h @ p[f"dense_{i}"]["kernel"] + p[f"dense_{i}"]["bias"]
    z = _relu(_layer_norm(z, p[f"norm_{i}"]))
    h = z + h if i > 0 else z  # no skip around the first layer (widths differ)
  want = h @ p["out"]["kernel"] + p["out"]["bias"]
  np.testing.assert_allclose(model.apply(params, t, x, c), want, rtol=2e-4, atol=2e-5)


def test_input_fourier_features_match_hand_forward():
  # Octaves ending at input_max_frequency, per coordinate, sin block then cos.
  model = MLP(hidden=(8,), act="relu", time_frequencies=2, cond_embed=0, input_frequencies=3,
              input_max_frequency=2.0)
  rng = np.random.default_rng(1)
  t = jnp.asarray(rng.uniform(size=6), jnp.float32)
  x = jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  params = model.init(jax.random.key(0), t, x, c)
  p = jax.tree.map(np.asarray, params["params"])
  angles = 2 * np.pi * (np.asarray(x)[:, :, None] * np.array([0.5, 1.0, 2.0])).reshape(6, -1)
  h = np.concatenate([np.asarray(x), np.asarray(fourier_time(t, 2)), np.sin(angles),
                      np.cos(angles), np.asarray(c)], -1)
  h = _relu(h @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
  want = h @ p["out"]["kernel"] + p["out"]["bias"]
  np.testing.assert_allclose(model.apply(params, t, x, c), want, rtol=2e-4, atol=2e-5)


def test_residual_needs_equal_widths():
  model = MLP(hidden=(16, 8), residual=True)
  with pytest.raises(ValueError, match="residual=True needs equal hidden widths"):
    model.init(jax.random.key(0), jnp.zeros((2,)), jnp.zeros((2, 3)))


@pytest.mark.parametrize("hidden, match", [
    (("hello",), r"hidden widths must be a sequence of ints, e.g. \(64, 64\), got \('hello',\)"),
    ("hello", r"hidden widths must be a sequence of ints"),
    ((16, 2.5), r"hidden widths must be a sequence of ints"),
    ((16, True), r"hidden widths must be a sequence of ints"),
    ((16, 0), r"hidden widths must be >= 1, got \(16, 0\)"),
])
def test_bad_hidden_widths_fail_at_construction(hidden, match):
  with pytest.raises(ValueError, match=match):
    MLP(hidden=hidden)
  MLP(hidden=())  # no hidden layer: the affine baseline


def test_cli_typo_in_hidden_names_the_field():
  # `--config.model.hidden=hello` arrives as ('hello',); it used to fail in init
  # with "the components cannot take data of event shape (2,) ...".
  from flowzoo.experiment import setup  # pylint: disable=import-outside-toplevel
  from tests.helpers import tiny_letters_config  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"model 'mlp' do not fit: mlp: hidden widths must be a sequence of ints"):
    setup(tiny_letters_config(**{"model.hidden": ("hello",)}))


@pytest.mark.parametrize("kw", [dict(input_frequencies=-1), dict(input_frequencies=2.5),
                                dict(input_frequencies=2, input_max_frequency=0.0)])
def test_bad_input_frequencies_are_refused(kw):
  model = MLP(hidden=(4,), **kw)
  with pytest.raises(ValueError, match="input_frequencies must be an integer >= 0"):
    model.init(jax.random.key(0), jnp.zeros(2), jnp.zeros((2, 2)), None)
