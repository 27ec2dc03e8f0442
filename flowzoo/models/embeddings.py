"""Shared embeddings for velocity networks: Fourier time features, activations."""

from __future__ import annotations

import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "silu": nn.silu, "gelu": nn.gelu, "relu": nn.relu, "tanh": jnp.tanh,
    "elu": nn.elu, "leaky_relu": nn.leaky_relu,
}


def activation(name: str):
  """Looks up an activation by name with a helpful error."""
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise KeyError(f"Unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}.") from None


def fourier_time(t: jax.Array, num_frequencies: int, max_frequency: float = 64.0) -> jax.Array:
  """Sinusoidal features of t in [0, 1] at geometrically spaced frequencies.

  Args:
    t: `[B]` times.
    num_frequencies: number of frequencies F.
  Returns:
    `[B, 2F + 1]`: sin and cos of 2*pi*f*t plus t itself.
  """
  freqs = jnp.geomspace(1.0, max_frequency, num_frequencies)
  angles = 2 * jnp.pi * t[:, None] * freqs[None, :]
  return jnp.concatenate([t[:, None], jnp.sin(angles), jnp.cos(angles)], axis=-1)


def check_call(t: jax.Array, x_t: jax.Array, cond: jax.Array | None) -> None:
  """Shape checks shared by every velocity network (static, at trace time)."""
  if t.ndim != 1 or t.shape[0] != x_t.shape[0]:
    raise ValueError(f"t must be [batch={x_t.shape[0]}], got {t.shape}.")
  if cond is not None and (cond.ndim != 2 or cond.shape[0] != x_t.shape[0]):
    raise ValueError(f"cond must be [batch={x_t.shape[0]}, C], got {cond.shape}.")


def check_int_sequence(model: str, field: str, value: Any, *, minimum: int,
                       allow_empty: bool = True) -> None:
  """Raises unless `value` is a sequence of ints >= `minimum` (at construction).

  A mistyped override such as `--config.model.hidden=hello` reaches the model
  as `('hello',)`; unchecked, it failed inside init with an error about the
  data's shape.
  """
  if not (isinstance(value, (tuple, list)) and all(
      isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
    raise ValueError(f"{model}: {field} must be a sequence of ints, e.g. (64, 64), "
                     f"got {value!r}.")
  if not value and not allow_empty:
    raise ValueError(f"{model}: {field} must be non-empty, got {tuple(value)}.")
  if any(v < minimum for v in value):
    raise ValueError(f"{model}: {field} must be >= {minimum}, got {tuple(value)}.")
