"""The independent coupling x0 ~ mu, x1 ~ rho drawn independently (MixFlow Eq. 5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowzoo.couplings.coupling import Coupling
from flowzoo.registry import COUPLINGS


@COUPLINGS.register("independent")
class Independent(Coupling):
  """Keeps the minibatch order: source and target were drawn independently."""

  keeps_order = True
  accepts_cost = False

  def __call__(self, rng: jax.Array, x0: jax.Array, x1: jax.Array, *,
               groups: jax.Array | None = None, mask0: jax.Array | None = None,
               mask1: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    del rng, x1, groups, mask0, mask1
    idx = jnp.arange(x0.shape[0])
    return idx, idx
