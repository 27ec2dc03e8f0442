"""Standard Gaussian base N(0, sigma^2 I) of vanilla CFM (MixFlow §3, first paragraph)."""

from __future__ import annotations

from typing import Sequence

import jax

from flowzoo.bases.base import Base
from flowzoo.registry import BASES


@BASES.register("gaussian")
class Gaussian(Base):
  """Isotropic Gaussian N(0, sigma^2 I) over the event shape."""

  def __init__(self, *, event_shape: Sequence[int], sigma: float = 1.0):
    if sigma <= 0:
      raise ValueError(f"gaussian base: sigma must be > 0, got {sigma}.")
    self.event_shape = tuple(event_shape)
    self.sigma = float(sigma)

  def sample(self, params, rng, batch, *, train=False):
    del params, train
    n = batch["cond"].shape[0]
    return self.sigma * jax.random.normal(rng, (n, *self.event_shape))
