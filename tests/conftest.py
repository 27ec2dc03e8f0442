"""Shared fixtures: a PRNG key and the location of the shared real data."""

from pathlib import Path

import jax
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
