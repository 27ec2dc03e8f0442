"""CFM's CellFlux noise augmentation (CellFlux Eq. 5): training pairs only, rate p_e."""

import jax
import numpy as np
import pytest

from flowzoo.bases.empirical import Empirical
from flowzoo.couplings.independent import Independent
from flowzoo.methods.cfm import CFM
from flowzoo.models.mlp import MLP

B, D = 4000, 3


def _cfm(**kw):
  return CFM(model=MLP(hidden=(4,), cond_embed=4), base=Empirical(), coupling=Independent(), **kw)


def _batch():
  rng = np.random.default_rng(0)
  return {"x0": rng.normal(size=(B, D)).astype(np.float32),
          "x1": rng.normal(size=(B, D)).astype(np.float32),
          "cond": np.zeros((B, 2), np.float32), "group": np.zeros((B,), np.int32)}


def test_source_noise_perturbs_rows_with_probability_p_e():
  batch = _batch()
  m = _cfm(source_noise=2.0, source_noise_prob=0.3)
  x0, x1, _, _, _ = m.pair({"base": {}}, m.split_keys(jax.random.key(1)), batch, 0)
  moved = np.asarray(x0) - batch["x0"]  # independent coupling keeps the row order
  hit = np.any(moved != 0, axis=1)
  assert abs(hit.mean() - 0.3) < 0.03  # rows, not entries, are perturbed
  assert np.all(moved[~hit] == 0)
  assert abs(moved[hit].std() - 2.0) < 0.1
  np.testing.assert_array_equal(x1, batch["x1"])  # targets untouched


def test_no_noise_by_default_and_none_at_generation():
  batch = _batch()
  m = _cfm()
  x0 = m.pair({"base": {}}, m.split_keys(jax.random.key(1)), batch, 0).x0
  np.testing.assert_array_equal(x0, batch["x0"])
  # Generation starts from the measured sources, whatever the augmentation.
  m = _cfm(source_noise=2.0, source_noise_prob=1.0)
  small = {k: v[:8] for k, v in batch.items()}
  params = m.init(jax.random.key(0), small)
  _, traj = m.generate(params, jax.random.key(2), small, num_steps=2, save_at=(0.0, 1.0))
  np.testing.assert_allclose(np.asarray(traj)[0], small["x0"])


def test_inference_noise_at_generation_only():
  batch = _batch()
  m = _cfm(inference_noise=1.0)
  # Training pairs start from the measured sources: no inference noise there.
  x0 = m.pair({"base": {}}, m.split_keys(jax.random.key(1)), batch, 0).x0
  np.testing.assert_array_equal(x0, batch["x0"])
  small = {k: v[:500] for k, v in batch.items()}
  small["x0"] = np.repeat(small["x0"][:5], 100, axis=0)  # 5 control samples, 100 draws each
  params = m.init(jax.random.key(0), small)
  _, traj = m.generate(params, jax.random.key(2), small, num_steps=2, save_at=(0.0, 1.0))
  start = np.asarray(traj)[0]
  assert abs((start - small["x0"]).std() - 1.0) < 0.05  # x0 + N(0, I)
  assert len(np.unique(np.asarray(traj)[1], axis=0)) == 500  # distinct samples, not 5 paths


@pytest.mark.parametrize("kwargs, match", [
    (dict(source_noise=-1.0), "source_noise must be >= 0"),
    (dict(inference_noise=-1.0), "inference_noise must be >= 0"),
    (dict(source_noise_prob=1.5), r"source_noise_prob must be in \[0, 1\]"),
])
def test_bad_source_noise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _cfm(**kwargs)


# -- CellFlux's code vs its Algorithm 1: per-batch decisions, skewed t ----------------------
def test_decide_per_batch_gives_every_row_the_same_choice():
  batch = {k: v[:64] for k, v in _batch().items()}
  per_batch = _cfm(source_noise=2.0, source_noise_prob=0.5, p_uncond=0.5, decide_per="batch")
  per_row = _cfm(source_noise=2.0, source_noise_prob=0.5, p_uncond=0.5)
  batch_noise, batch_keep = set(), set()
  for seed in range(16):
    keys = per_batch.split_keys(jax.random.key(seed))
    for m, seen_noise, seen_keep in ((per_batch, batch_noise, batch_keep), (per_row, None, None)):
      x0 = m.pair({"base": {}}, keys, batch, 0).x0
      hit = tuple(np.any(np.asarray(x0) != batch["x0"], axis=1))
      keep = tuple(np.asarray(m.keep_condition(keys.uncond, 64)))
      if seen_noise is None:  # per sample: mixed choices within the minibatch
        assert 0 < sum(hit) < 64 and 0 < sum(keep) < 64
      else:  # per batch: one choice for all rows
        assert len(set(hit)) == 1 and len(set(keep)) == 1
        seen_noise.add(hit[0])
        seen_keep.add(keep[0])
  assert batch_noise == batch_keep == {True, False}  # both choices occur over minibatches
  # The per-row default is the earlier draw, bit for bit.
  keys = per_row.split_keys(jax.random.key(0))
  np.testing.assert_array_equal(per_row.keep_condition(keys.uncond, 64),
                                jax.random.bernoulli(keys.uncond, 0.5, (64,)))


def test_skewed_time_has_the_documented_mean():
  from flowzoo.methods import cfm as cfm_lib
  n = 200_000
  t = np.asarray(_cfm(time_sampling="skewed").sample_time(jax.random.key(0), n))
  assert t.min() >= cfm_lib.SKEW_T_MIN and t.max() <= 1.0
  # Monte Carlo: standard error 0.2014 / sqrt(n) = 4.5e-4.
  assert abs(t.mean() - cfm_lib.SKEWED_TIME_MEAN) < 2e-3
  assert abs(np.median(t) - 0.7685) < 3e-3 and abs(t.std() - 0.2014) < 2e-3
  u = np.asarray(_cfm().sample_time(jax.random.key(0), n))  # default: U(0, 1)
  np.testing.assert_array_equal(u, jax.random.uniform(jax.random.key(0), (n,)))
  assert abs(u.mean() - 0.5) < 3e-3


@pytest.mark.parametrize("kwargs, match", [
    (dict(decide_per="row"), r"decide_per must be one of \('sample', 'batch'\)"),
    (dict(time_sampling="edm"), r"time_sampling must be one of \('uniform', 'skewed'\)"),
    (dict(cond_encoder="frozen"), r"cond_encoder must be one of"),
    (dict(cond_encoder_dropout=1.0), r"cond_encoder_dropout must be in \[0, 1\)"),
])
def test_bad_switches(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _cfm(**kwargs)


def test_path_backward_from_the_forward_end_returns_to_the_source():
  # CellFlux's interpolation figure: forward from a control, backward from a
  # treated cell. On the same field, running back from the forward path's end
  # must retrace it (rk4: error far below the distances travelled).
  m = _cfm()
  batch = {k: v[:16] for k, v in _batch().items()}
  params = m.init(jax.random.key(0), batch)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])
  fwd = np.asarray(m.path(params, batch, batch["x0"], [0.0, 0.5, 1.0], solver="rk4",
                          num_steps=256))
  np.testing.assert_array_equal(fwd[0], batch["x0"])
  assert np.abs(fwd[2] - fwd[0]).mean() > 0.1  # the field moves the points
  back = np.asarray(m.path(params, batch, fwd[2], [0.0, 1.0, 0.5], backward=True, solver="rk4",
                           num_steps=256))
  np.testing.assert_array_equal(back[1], fwd[2])  # times come back in the order given
  np.testing.assert_allclose(back[2], fwd[1], atol=1e-5)
  np.testing.assert_allclose(back[0], fwd[0], atol=1e-5)
