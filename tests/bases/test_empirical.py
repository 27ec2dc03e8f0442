"""Empirical (control-cell) base."""

import jax
import numpy as np
import pytest

from flowzoo.bases.empirical import Empirical
from flowzoo.experiment import setup
from tests.helpers import tiny_letters_config


def test_returns_the_source_samples_of_the_batch():
  x0 = np.arange(12.0, dtype=np.float32).reshape(4, 3)
  out = Empirical().sample({}, jax.random.key(0), {"cond": np.zeros((4, 1)), "x0": x0})
  np.testing.assert_array_equal(out, x0)


def test_dataset_without_sources_is_rejected_before_compiling():
  with pytest.raises(ValueError, match="needs source samples.*'letters' provides no `sources`"):
    setup(tiny_letters_config(**{"base.name": "empirical"}))
