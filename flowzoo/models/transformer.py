"""Permutation-equivariant transformer velocity field for point clouds (WFM §3.2, App. E.2).

WFM regresses the velocity of each point of a point cloud X_t `[N, D]`
(Eq. 11 discretised, §3.2) with a transformer: "an embedding layer, followed
by a series of alternating multi-head attention and fully-connected layers.
Skip connections and layer-norm are applied after each operation. The final
layer projects the embeddings back to X's original space using a dense layer
with zero initialization" (App. E.2). Paper defaults: 6 blocks, width 512,
4 heads.

Design notes:
* No positional encoding, so the network is permutation-equivariant: a
  point cloud is a set (Lee et al. 2019, Set Transformer).
* Padded points (mask False) are masked out as attention keys, so they never
  influence real points; every other operation is per point. The output on
  padded points is set to 0, so an ODE step leaves padding at 0.
* Time enters as Fourier features (`embeddings.fourier_time`) through an MLP,
  the condition (descriptor, possibly with the CFG null flag) through a dense
  layer; their sum is added to every point's embedding before each attention
  (as in the reference code's conditioned attention).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowzoo.models.embeddings import activation, check_call, fourier_time
from flowzoo.registry import MODELS


@MODELS.register("transformer")
class Transformer(nn.Module):
  """Set transformer v_theta(t, X_t, y) -> `[B, N, D]` (shared call signature, see mlp.py).

  Attributes:
    width: embedding dimension (paper: 512); divisible by `num_heads`.
    num_blocks: attention + MLP blocks (paper: 6).
    num_heads: attention heads (paper: 4).
    mlp_dim: hidden width of each block's MLP (0: `width`).
    act: activation of the MLPs (see `embeddings.ACTIVATIONS`).
    dropout: dropout rate on attention weights and MLP outputs.
    time_frequencies: number of Fourier frequencies for t.
    event_shape: `(N, D)` of the data the model is built for (wired by the
      framework); when set, clouds of another point dimension D are rejected.
  """

  width: int = 512
  num_blocks: int = 6
  num_heads: int = 4
  mlp_dim: int = 0
  act: str = "leaky_relu"
  dropout: float = 0.0
  time_frequencies: int = 16
  event_shape: Sequence[int] | None = None

  def _check(self, t, x_t, cond, mask) -> jax.Array:
    """Static shape checks (trace time, before compilation); returns the bool mask."""
    if x_t.ndim != 3:
      raise ValueError(f"transformer: x_t must be point clouds [batch, points, dim], "
                       f"got shape {x_t.shape}.")
    check_call(t, x_t, cond)
    if self.event_shape is not None and x_t.shape[-1] != tuple(self.event_shape)[-1]:
      raise ValueError(f"transformer: point clouds have dimension {x_t.shape[-1]} but the "
                       f"model was built for dimension {tuple(self.event_shape)[-1]} "
                       f"(event shape {tuple(self.event_shape)}).")
    if self.width % self.num_heads:
      raise ValueError(f"transformer: width={self.width} must be divisible by "
                       f"num_heads={self.num_heads}.")
    if self.num_blocks < 1:
      raise ValueError(f"transformer: num_blocks must be >= 1, got {self.num_blocks}.")
    if mask is None:
      return jnp.ones(x_t.shape[:2], bool)
    if tuple(mask.shape) != tuple(x_t.shape[:2]):
      raise ValueError(f"transformer: mask must be [batch, points] = {tuple(x_t.shape[:2])}, "
                       f"got {tuple(mask.shape)}.")
    return mask.astype(bool)

  @nn.compact
  def __call__(self, t: jax.Array, x_t: jax.Array, cond: jax.Array | None = None, *,
               mask: jax.Array | None = None, train: bool = False) -> jax.Array:
    """Velocity of every point.

    Args:
      t: `[B]` times in [0, 1] (0 = source, 1 = target).
      x_t: `[B, N, D]` padded point clouds.
      cond: `[B, C]` condition or None.
      mask: `[B, N]` bool, True on real points (None: all real).
      train: enables dropout (needs a "dropout" rng).
    Returns:
      `[B, N, D]`, zero on padded points.
    """
    mask = self._check(t, x_t, cond, mask)
    act = activation(self.act)
    width, mlp_dim = self.width, self.mlp_dim or self.width
    h = nn.Dense(width, name="embed")(x_t)
    # Per-cloud context: time (Fourier -> MLP) plus the condition embedding.
    ctx = nn.Dense(width, name="time_out")(
        act(nn.Dense(width, name="time_in")(fourier_time(t, self.time_frequencies))))
    if cond is not None:
      ctx = ctx + nn.Dense(width, name="cond_embed")(cond)
    # Keys only: a padded point is never attended to. Padded queries still
    # attend to real points (finite values), and their output is zeroed below.
    key_mask = mask[:, None, None, :]
    for i in range(self.num_blocks):
      a = nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, qkv_features=width, dropout_rate=self.dropout,
          deterministic=not train, name=f"attn_{i}")(h + ctx[:, None, :], mask=key_mask)
      h = nn.LayerNorm(name=f"ln_attn_{i}")(h + a)
      m = nn.Dense(width, name=f"mlp_out_{i}")(act(nn.Dense(mlp_dim, name=f"mlp_in_{i}")(h)))
      if self.dropout:
        m = nn.Dropout(self.dropout, deterministic=not train)(m)
      h = nn.LayerNorm(name=f"ln_mlp_{i}")(h + m)
    # Zero-initialised projection (App. E.2): the initial field is 0 everywhere.
    out = nn.Dense(x_t.shape[-1], kernel_init=nn.initializers.zeros, name="out")(h)
    return out * mask[..., None].astype(out.dtype)
