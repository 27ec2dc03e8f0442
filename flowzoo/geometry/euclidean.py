"""Euclidean state space (vectors `[B, D]`, images `[B, H, W, C]`).

The straight-line probability path of CFM: interpolant (MixFlow Eq. 5,
PRiMeFlow Algorithm 1 with constant noise sigma), its target velocity
(MixFlow Eq. 4) and the squared norm used in the loss. Every geometry module
(`bures`, `pointclouds`) has these three functions with the same arguments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _bcast(t: jax.Array, x: jax.Array) -> jax.Array:
  return t.reshape(t.shape + (1,) * (x.ndim - 1))


def interpolate(x0: jax.Array, x1: jax.Array, t: jax.Array, *, sigma: float = 0.0,
                rng: jax.Array | None = None) -> jax.Array:
  """x_t ~ N((1 - t) x0 + t x1, sigma^2 I) (PRiMeFlow Algorithm 1).

  Args:
    x0, x1: `[B, *event]` paired source and target.
    t: `[B]` times in [0, 1].
    sigma: constant path noise; needs `rng` when > 0.
  Returns:
    `[B, *event]`.
  """
  if x0.shape != x1.shape:
    raise ValueError(f"x0 and x1 shapes differ: {x0.shape} vs {x1.shape}.")
  tb = _bcast(t, x0)
  xt = (1 - tb) * x0 + tb * x1
  if sigma:
    xt = xt + sigma * jax.random.normal(rng, xt.shape, xt.dtype)
  return xt


def target_velocity(x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
  """u_t(x | x0, x1) = x1 - x0 (MixFlow Eq. 4); constant in t."""
  del t
  return x1 - x0


def sq_norm(v: jax.Array, x: jax.Array | None = None, mask: jax.Array | None = None
            ) -> jax.Array:
  """Squared Euclidean norm per sample: `[B, *event]` -> `[B]` (the same at every `x`)."""
  del x, mask  # flat space, no padding
  return jnp.sum(jnp.square(v).reshape(v.shape[0], -1), axis=-1)
