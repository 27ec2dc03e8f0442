"""Every registered model, base, coupling, dataset and solver is built through the registry and run.

Methods are covered by the swap-safety grid (`tests/swap_grid.py`, `tests/test_swaps_*.py`).

A component registered without an entry here fails `test_every_component_has_a_spec`,
so new components cannot skip this check.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowzoo  # noqa: F401  (registers everything)
from flowzoo.data.populations import Populations
from flowzoo.geometry.bures import pack_gaussians
from flowzoo.registry import BASES, COUPLINGS, DATASETS, MODELS, SOLVERS
from flowzoo.sampling import integrate

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


# -- datasets: every registered loader builds `Populations` ------------------------------------
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _cells_npz(tmp_path):
  """A tiny per-cell table in the `bbbc021_cells` layout: DMSO plus two compounds."""
  rng = np.random.default_rng(0)
  compound = np.repeat(["DMSO", "taxol", "ALLN"], 6)
  path = tmp_path / "cells.npz"
  np.savez(path, X=rng.normal(size=(18, 3)).astype(np.float32), compound=compound,
           dose=np.repeat([0.0, 1.0, 3.0], 6), plate=np.tile(["p1", "p2"], 9),
           moa=np.repeat(["DMSO", "Microtubule stabilizers", "Protein degradation"], 6))
  return dict(path=str(path), descriptors="onehot", split="taxol;", group_by="compound")


# name -> (kwargs or fn(tmp_path) -> kwargs, shared-data file it needs or None)
DATASET_SPECS = {
    "letters": (dict(letters="SH", num_rotations=2, copies=1, points_per_copy=16), None),
    "bbbc021_sim": (dict(dim=3, descriptor_dim=4, cells_per_population=8,
                         control_cells_per_plate=4, num_plates=2, plates_per_compound=1), None),
    "bbbc021_wells": (dict(path=str(SHARED / "bbbc021_wells"
                                    / "BBBC021_feature_selected_mad_robustize.csv"),
                           descriptors=str(SHARED / "compound_embeddings" / "embeddings" / "csv"
                                           / "emb_fp.csv")),
                      "bbbc021_wells/BBBC021_feature_selected_mad_robustize.csv"),
    "bbbc021_cells": (_cells_npz, None),
    "anndata_perturbations": ({}, None),  # the embedded PerturBench devel.h5ad
    "gaussian_spiral": (dict(num=8), None),
    "gaussian_moons": (dict(num=8), None),
    "gaussian_sphere": (dict(num=8), None),
    "pbmc_metacells": ({}, "scanpy"),
    "seqfish_niches": (dict(path=str(SHARED / "seqfish_cortex")), "seqfish_cortex"),
    "digits_clouds": (dict(digits="01"), None),
    "mnist_clouds": (dict(path=str(SHARED / "mnist_test"), max_per_digit=20), "mnist_test"),
    "mesh_clouds": (dict(paths=(str(SHARED / "meshes" / "spot.obj"),), clouds_per_mesh=4,
                         min_points=16, max_points=24), "meshes/spot.obj"),
}


@pytest.mark.parametrize("name", sorted(DATASET_SPECS))
def test_dataset_builds_populations(name, tmp_path):
  spec, needs = DATASET_SPECS[name]
  if needs == "scanpy":
    pytest.importorskip("scanpy", reason="pbmc_metacells reads scanpy's bundled file: "
                        "pip install -e '.[scanpy]'")
  elif needs is not None and not (SHARED / needs).exists():
    pytest.skip(f"{SHARED / needs} is absent")
  pops = DATASETS.build(name, spec(tmp_path) if callable(spec) else spec)
  assert isinstance(pops, Populations) and pops.has_split("train")
  assert all(s.shape[1:] == pops.event_shape and len(s) > 0 for s in pops.samples)
  assert all(np.isfinite(s).all() for s in pops.samples)
  assert pops.descriptors.shape == (len(pops.names), pops.cond_dim)


# -- solvers: every registered solver integrates a known flow ----------------------------------
def _decay(t, x):  # dx/dt = -x: x(1) = x(0) / e
  del t
  return -x


@pytest.mark.parametrize("name", sorted(set(SOLVERS.names()) - {"euler_bw"}))
def test_solver_integrates_exponential_decay(name):
  x0 = jnp.ones((2, 3))
  x1 = integrate(_decay, x0, solver=name, num_steps=64)
  np.testing.assert_allclose(x1, np.exp(-1.0), rtol=1e-2)  # Euler's error at h = 1/64: 0.8 %


def test_bw_solver_follows_a_constant_mean_velocity():
  """`euler_bw` (WFM Alg. 2): with S = 0 the covariance stays and the mean moves by a."""
  x0 = jnp.asarray(_gaussians()["x1"])
  a = jnp.ones((B, 2))
  field = lambda t, x: pack_gaussians(a, jnp.zeros((B, 2, 2)))  # noqa: E731
  x1 = integrate(field, x0, solver="euler_bw", num_steps=8)
  np.testing.assert_allclose(x1[:, 1:], x0[:, 1:], rtol=1e-6)
  np.testing.assert_allclose(x1[:, 0], x0[:, 0] + 1.0, rtol=1e-5)


def test_every_dataset_is_covered():
  # Streamed datasets build no Populations; tests/test_image_experiment.py runs them.
  streamed = {n for n in DATASETS.names() if getattr(DATASETS.get(n), "streamed", False)}
  assert streamed == {"crops"}, f"cover streamed dataset(s) {streamed - {'crops'}} in a test"
  missing = sorted(set(DATASETS.names()) - set(DATASET_SPECS) - streamed)
  assert not missing, f"add a spec for dataset(s) {missing} in tests/test_components.py"
