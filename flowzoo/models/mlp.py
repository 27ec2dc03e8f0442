"""MLP velocity field v_theta(t, x_t, y) for vector states `[B, D]`.

Every velocity network in flowzoo shares one call signature::

    v = model.apply(params, t, x_t, cond, mask=None, train=False,
                    rngs={"dropout": key})

with `t` `[B]` in [0, 1] (0 = source, 1 = target), `x_t` `[B, *event]`,
`cond` `[B, C]` or None (unconditional), `mask` `[B, N]` for point clouds,
and an output of the same shape as `x_t`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowzoo.models.embeddings import (activation, check_call, check_int_sequence,
                                       fourier_time)
from flowzoo.registry import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
  """MLP on [x_t, Fourier(t), embed(cond)], optionally residual with layer norm.

  Attributes:
    hidden: widths of the hidden layers, each >= 1; () is allowed and gives a
      velocity affine in (x_t, time features, condition embedding), a baseline.
    act: activation name (see `embeddings.ACTIVATIONS`).
    dropout: dropout rate after each hidden activation.
    time_frequencies: number of Fourier frequencies for t.
    cond_embed: width of the condition embedding (0: raw descriptor).
    conditioning: "concat" (append the embedding to the input) or "film"
      (scale and shift every hidden layer by functions of the embedding).
    residual: add a skip connection around every hidden layer after the first
      (all widths must then be equal), as WFM App. E.1's nets do.
    layer_norm: layer-normalise each hidden pre-activation (WFM App. E.1).
    input_frequencies: F > 0 appends sin and cos of 2 pi f x_t for F octaves f
      ending at `input_max_frequency` (cycles per unit of x_t), per coordinate
      (Fourier features, Tancik et al. 2020): a plain MLP on low-dimensional
      coordinates fits sharp features slowly (spectral bias). 0: none.
    input_max_frequency: the highest of those frequencies.
  """

  hidden: Sequence[int] = (256, 256, 256)
  act: str = "silu"
  dropout: float = 0.0
  time_frequencies: int = 8
  cond_embed: int = 64
  conditioning: str = "concat"
  residual: bool = False
  layer_norm: bool = False
  input_frequencies: int = 0
  input_max_frequency: float = 1.0

  def __post_init__(self):
    check_int_sequence("mlp", "hidden widths", self.hidden, minimum=1)
    super().__post_init__()

  @nn.compact
  def __call__(self, t: jax.Array, x_t: jax.Array, cond: jax.Array | None = None, *,
               mask: jax.Array | None = None, train: bool = False) -> jax.Array:
    del mask  # vector states have no padding
    check_call(t, x_t, cond)
    if self.conditioning not in ("concat", "film"):
      raise ValueError(f"mlp: conditioning must be 'concat' or 'film', got {self.conditioning!r}.")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"mlp: dropout must be in [0, 1), got {self.dropout}.")
    if int(self.input_frequencies) != self.input_frequencies or self.input_frequencies < 0 \
        or not self.input_max_frequency > 0:
      raise ValueError(f"mlp: input_frequencies must be an integer >= 0 and "
                       f"input_max_frequency > 0, got {self.input_frequencies!r}, "
                       f"{self.input_max_frequency!r}.")
    if self.residual and len(set(self.hidden)) > 1:
      raise ValueError(f"mlp: residual=True needs equal hidden widths, got {tuple(self.hidden)}.")
    act = activation(self.act)
    x = x_t.reshape(x_t.shape[0], -1)
    h = [x, fourier_time(t, self.time_frequencies)]
    if self.input_frequencies:
      freqs = self.input_max_frequency * 2.0 ** -jnp.arange(self.input_frequencies)[::-1]
      angles = 2 * jnp.pi * (x[:, :, None] * freqs).reshape(x.shape[0], -1)
      h += [jnp.sin(angles), jnp.cos(angles)]
    e = None
    if cond is not None:
      e = act(nn.Dense(self.cond_embed, name="cond_embed")(cond)) if self.cond_embed else cond
      if self.conditioning == "concat":
        h.append(e)
    h = jnp.concatenate(h, axis=-1)
    for i, width in enumerate(self.hidden):
      skip = h
      h = nn.Dense(width, name=f"dense_{i}")(h)
      if e is not None and self.conditioning == "film":
        # FiLM: per-layer scale and shift, initialised to the identity.
        scale, shift = jnp.split(nn.Dense(2 * width, kernel_init=nn.initializers.zeros,
                                          name=f"film_{i}")(e), 2, axis=-1)
        h = h * (1 + scale) + shift
      if self.layer_norm:
        h = nn.LayerNorm(name=f"norm_{i}")(h)
      h = act(h)
      if self.dropout:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
      if self.residual and i > 0:
        h = h + skip
    out = nn.Dense(x_t[0].size, name="out")(h)
    return out.reshape(x_t.shape)
