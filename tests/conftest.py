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

# One persistent compilation cache per test session, shared by the xdist
# workers and the CLI subprocesses (they inherit the environment): many tests
# compile the same step (a 2-process run and its resume, a config and its
# subprocess twin). Made here in the controller, before workers start, and
# removed at exit, so a session never reads a stale cache.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
  import atexit  # pylint: disable=wrong-import-position
  import shutil  # pylint: disable=wrong-import-position
  import tempfile  # pylint: disable=wrong-import-position
  _CACHE = tempfile.mkdtemp(prefix="flowzoo-test-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

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
