"""Every registered model, base and coupling is built through the registry and run once.

A component registered without an entry here fails `test_every_component_has_a_spec`,
so new components cannot skip this check.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowzoo import build  # noqa: F401  (registers everything)
from flowzoo.registry import BASES, COUPLINGS, MODELS

B = 4
KEY = jax.random.key(0)

# name -> (kwargs, x_t `[B, *event]`, mask or None)
MODEL_SPECS = {
    "mlp": (dict(hidden=(8, 8), cond_embed=4), np.ones((B, 3)), None),
    "unet": (dict(base_channels=8, channel_mult=(1, 2), norm_groups=4, emb_dim=16),
             np.ones((B, 4, 4, 2)), None),
    "transformer": (dict(width=8, num_blocks=1, num_heads=2), np.ones((B, 5, 2)),
                    np.arange(5)[None, :] < np.array([[5], [3], [4], [1]])),
}


def _clouds():
  x = np.random.default_rng(0).normal(size=(B, 5, 2)).astype(np.float32)
  mask = np.arange(5)[None, :] < np.array([[5], [3], [4], [2]])
  return {"x1": x * mask[..., None], "mask1": mask}


def _gaussians(d=2):
  rng = np.random.default_rng(0)
  a = rng.normal(size=(B, d, d))
  cov = a @ a.transpose(0, 2, 1) + np.eye(d)
  return {"x1": np.concatenate([rng.normal(size=(B, 1, d)), cov], 1).astype(np.float32)}


# name -> (kwargs, batch without cond/group, expected event shape)
BASE_SPECS = {
    "gaussian": (dict(event_shape=(3,)), {"x1": np.ones((B, 3))}, (3,)),
    "gmm": (dict(event_shape=(3,), num_modes=2, hidden=(8,)), {"x1": np.ones((B, 3))}, (3,)),
    "empirical": ({}, {"x1": np.ones((B, 3)), "x0": np.zeros((B, 3))}, (3,)),
    "gaussian_clouds": (dict(event_shape=(5, 2)), _clouds(), (5, 2)),
    "wishart": (dict(event_shape=(3, 2)), _gaussians(), (3, 2)),
}

COUPLING_SPECS = {
    "independent": {},
    "sinkhorn": dict(epsilon=0.05),
    "exact": {},
    "rounded_matching": dict(epsilon=0.01, max_iterations=500),
    "entropic_map": dict(epsilon=0.05),
}


def test_every_component_has_a_spec():
  for registry, specs in ((MODELS, MODEL_SPECS), (BASES, BASE_SPECS),
                          (COUPLINGS, COUPLING_SPECS)):
    missing = sorted(set(registry.names()) - set(specs))
    assert not missing, f"add a spec for {registry.kind}(s) {missing} in tests/test_components.py"


@pytest.mark.parametrize("name", sorted(MODEL_SPECS))
def test_model_runs_and_keeps_the_state_shape(name):
  kwargs, x, mask = MODEL_SPECS[name]
  model = MODELS.build(name, kwargs, wired={"event_shape": x.shape[1:]})
  t, cond = jnp.linspace(0, 1, B), jnp.ones((B, 2))
  kw = {} if mask is None else {"mask": jnp.asarray(mask)}
  params = model.init(KEY, t, jnp.asarray(x), cond, **kw)
  v = model.apply(params, t, jnp.asarray(x), cond, **kw)
  assert v.shape == x.shape
  assert np.all(np.isfinite(np.asarray(v)))


@pytest.mark.parametrize("name", sorted(BASE_SPECS))
def test_base_samples_one_row_per_batch_row(name):
  kwargs, batch, event = BASE_SPECS[name]
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  batch |= {"cond": jnp.ones((B, 2)), "group": jnp.zeros((B,), jnp.int32)}
  base = BASES.build(name, kwargs)
  params = base.init(KEY, batch)
  x0 = base.sample(params, jax.random.key(1), batch)
  assert x0.shape == (B, *event)
  assert np.all(np.isfinite(np.asarray(x0)))


@pytest.mark.parametrize("name", sorted(COUPLING_SPECS))
def test_coupling_pairs_rows(name):
  rng = np.random.default_rng(0)
  x0 = jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)
  x1 = jnp.asarray(rng.normal(size=(6, 2)) + 1.0, jnp.float32)
  coupling = COUPLINGS.build(name, COUPLING_SPECS[name])
  if coupling.is_map:
    out = coupling.transport(x0, x1)
    assert out.shape == x0.shape and np.all(np.isfinite(np.asarray(out)))
    return
  i, j = coupling(KEY, x0, x1)
  assert i.shape == j.shape == (6,)
  assert np.all((0 <= np.asarray(j)) & (np.asarray(j) < 6))
  assert np.all((0 <= np.asarray(i)) & (np.asarray(i) < 6))
