"""Classifier-free guidance for velocity fields (Ho & Salimans 2022, Eq. 6; CellFlux §3.3).

One network is trained on real and null conditions (a condition is dropped
with probability `p_uncond`, CellFlux App. C: p_c = 0.2), so it gives both
the conditional field v_c and the unconditional v_u. At generation the
guided field v_u + s (v_c - v_u) is integrated: s = 1 is the conditional
field, s > 1 extrapolates away from v_u (sharper, less diverse samples).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, Any], Any]


def with_null(cond: jax.Array, keep: jax.Array | float) -> jax.Array:
  """Appends a 'has condition' flag and zeroes dropped descriptors.

  The null condition is [0, ..., 0, 0]; a real one is [y, 1]. The flag keeps
  the null distinguishable from a real all-zero descriptor.

  Args:
    cond: `[B, C]` descriptors.
    keep: `[B]` (or scalar) 1.0 to keep, 0.0 for the null condition.
  Returns:
    `[B, C + 1]`.
  """
  keep = jnp.broadcast_to(jnp.asarray(keep, cond.dtype), cond.shape[:1])[:, None]
  return jnp.concatenate([cond * keep, keep], axis=-1)


def guided_velocity(velocity_fn_cond: VelocityFn, velocity_fn_uncond: VelocityFn,
                    scale: float | jax.Array) -> VelocityFn:
  """Classifier-free guidance written for velocities: v = v_u + s (v_c - v_u).

  For a Python-number scale of 0 or 1 the matching field is returned as is,
  saving one network evaluation per step.

  Args:
    velocity_fn_cond: conditional field `v_c(t, x)`, `t` `[batch]`.
    velocity_fn_uncond: unconditional field `v_u(t, x)`, same structure.
    scale: guidance scale s, a float or a scalar array (may be traced).
  Returns:
    The guided `velocity_fn(t, x)`.
  """
  if isinstance(scale, (int, float)) and not isinstance(scale, bool):
    if scale == 1:
      return velocity_fn_cond
    if scale == 0:
      return velocity_fn_uncond

  def velocity_fn(t: jax.Array, x: Any) -> Any:
    return jax.tree_util.tree_map(lambda c, u: u + scale * (c - u),
                                  velocity_fn_cond(t, x), velocity_fn_uncond(t, x))

  return velocity_fn


def guided_field(field_for: Callable[[float], VelocityFn], guidance: float,
                 p_uncond: float) -> VelocityFn:
  """The field to integrate, from `field_for(keep) -> velocity_fn`.

  `keep` is 1.0 for the conditional field and 0.0 for the null condition.
  Guidance 1 is the conditional field; any other scale needs a network
  trained with the null condition (p_uncond > 0).
  """
  if guidance == 1.0:
    return field_for(1.0)
  if p_uncond == 0:
    raise ValueError("guidance != 1 needs a model trained with p_uncond > 0.")
  return guided_velocity(field_for(1.0), field_for(0.0), guidance)
