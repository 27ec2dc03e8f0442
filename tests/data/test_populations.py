"""Population datasets: validation errors and in-jit minibatch sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowzoo.data.populations import Populations, pack, sample_batch


def make(samples=None, splits=None, **kw):
  samples = samples or [np.full((3, 2), 0.0), np.full((5, 2), 1.0), np.full((4, 2), 2.0)]
  k = len(samples)
  return Populations(names=[f"c{i}" for i in range(k)], samples=samples,
                     descriptors=np.eye(k), splits=splits or ["train"] * (k - 1) + ["heldout"], **kw)


def test_nan_in_data_is_named():
  bad = [np.zeros((3, 2)), np.array([[0.0, np.nan]])]
  with pytest.raises(ValueError, match=r"samples of condition 'c1' contain 1 NaN/inf"):
    make(bad, splits=["train", "train"])


def test_values_whose_squares_overflow_float32_are_named():
  # Finite, but 1e30 ** 2 is inf in float32: it used to fail mid-training
  # inside the OT callback ("cost matrix is infeasible").
  huge = [np.zeros((3, 2)), np.array([[0.0, 1e30], [1.0, 2.0]])]
  with pytest.raises(ValueError, match=r"samples of condition 'c1' contain 1 value\(s\) with "
                                       r"\|x\| > 1.84e\+19 \(largest 1e\+30\): their squares "
                                       r"overflow float32"):
    make(huge, splits=["train", "train"])
  with pytest.raises(ValueError, match=r"source samples of condition 'c0' contain 4 value"):
    make([np.zeros((3, 2)), np.zeros((2, 2))], splits=["train", "train"],
         sources=[np.full((2, 2), -2e19), np.zeros((2, 2))])
  make([np.full((3, 2), 1e19), np.zeros((2, 2))], splits=["train", "train"])  # square is finite


def test_empty_condition_is_named():
  with pytest.raises(ValueError, match="condition 'c1' has no samples"):
    make([np.zeros((3, 2)), np.zeros((0, 2))], splits=["train", "train"])


def test_shape_mismatch_between_conditions():
  with pytest.raises(ValueError, match=r"condition 'c1' has samples of shape \(3,\), expected \(2,\)"):
    make([np.zeros((3, 2)), np.zeros((2, 3))], splits=["train", "train"])


def test_split_without_conditions_and_unknown_split():
  pops = make()
  with pytest.raises(ValueError, match="Split 'validation' has no conditions"):
    pops.split_ids("validation")
  with pytest.raises(ValueError, match="unknown split label"):
    make(splits=["train", "test", "train"])


def test_sample_batch_per_population_layout():
  pops = make()
  packed = pack(pops)
  ids = jnp.asarray(pops.split_ids("train"))
  fn = jax.jit(lambda r: sample_batch(packed, r, ids, batch_size=12, populations_per_batch=3))
  batch = fn(jax.random.key(0))
  assert batch["x1"].shape == (12, 2) and batch["cond"].shape == (12, 3)
  group = np.asarray(batch["group"])
  # Contiguous blocks of 4 rows share one training condition ...
  assert np.all(group.reshape(3, 4) == group.reshape(3, 4)[:, :1])
  assert set(group) <= {0, 1}
  # ... and every sample really belongs to its condition (values encode the id).
  np.testing.assert_array_equal(np.asarray(batch["x1"])[:, 0], group.astype(np.float32))
  np.testing.assert_array_equal(np.asarray(batch["cond"]), np.eye(3)[group])
  assert "x0" not in batch


def test_sample_batch_draws_sources_of_the_same_condition():
  pops = make(sources=[np.full((2, 2), -1.0), np.full((2, 2), -2.0), np.full((1, 2), -3.0)])
  packed = pack(pops)
  batch = sample_batch(packed, jax.random.key(1), jnp.arange(3), batch_size=30,
                       populations_per_batch=30)
  np.testing.assert_array_equal(np.asarray(batch["x0"])[:, 0], -1.0 - np.asarray(batch["group"]))
