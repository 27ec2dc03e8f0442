"""Shared fixtures: a PRNG key and the location of the shared real data."""

import os
from pathlib import Path

# The suite compiles hundreds of tiny programs on 2 cores, where XLA's backend
# optimisation costs more time than it saves (about 30 % less compile time,
# measured on a U-Net train step). Set before jax initialises its backend;
# runs and benchmarks keep the default.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import jax  # pylint: disable=wrong-import-position
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def rng():
  return jax.random.key(0)


@pytest.fixture
def shared_data():
  """Path of ../shared/data; skips the test when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data folder {SHARED_DATA} is absent")
  return SHARED_DATA
