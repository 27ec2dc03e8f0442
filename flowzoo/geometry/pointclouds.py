"""Point-cloud state space: padded clouds `[B, N, D]` with masks `[B, N]` (WFM §3.2).

A cloud X of n real points is an empirical measure mu = (1/n) sum_i delta_x_i.
Given its image T^(X) under an (inner) OT map to a target cloud
(`flowzoo.methods.wfm`), the discretised McCann interpolation moves every
point on a straight line:

    X_t = (1 - t) X + t T^(X)                       (Eq. 4, discretised)
    v_t = T^(X) - X                                  (Eq. 7)
    ||v||^2_{L2(mu_t)} = (1/n) sum_i |v_i|^2         (Eq. 11, uniform weights, real points)

Same three functions as every geometry module (`euclidean`, `bures`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def interpolate(x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
  """X_t `[B, N, D]` between clouds `x0` and their images `x1` (Eq. 4); `t` `[B]`."""
  if x0.shape != x1.shape:
    raise ValueError(f"point clouds x0 and x1 shapes differ: {x0.shape} vs {x1.shape}.")
  tb = t[:, None, None]
  return (1 - tb) * x0 + tb * x1


def target_velocity(x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
  """v_t = T^(X) - X `[B, N, D]` (Eq. 7); constant in t."""
  del t
  return x1 - x0


def sq_norm(v: jax.Array, x: jax.Array | None = None, mask: jax.Array | None = None
            ) -> jax.Array:
  """||v||^2 in L2(mu) per cloud `[B]`: the mean of |v_i|^2 over real points (Eq. 11).

  Args:
    v: `[B, N, D]` tangent (one vector per point).
    x: unused (the norm depends on mu only through its mask).
    mask: `[B, N]` real points; None: all points are real.
  """
  del x
  w = jnp.ones(v.shape[:2], v.dtype) if mask is None else mask.astype(v.dtype)
  return jnp.sum(jnp.sum(v ** 2, -1) * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)
