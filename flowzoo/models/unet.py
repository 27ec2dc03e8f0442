"""U-Net velocity field v_theta(t, x_t, y) for images `[B, H, W, C]` and vectors `[B, D]`.

One registered model, two state kinds (dispatch on `x_t.ndim`), one block code
(flax `nn.Conv` is N-d through its kernel-size tuple):

* Images, CellFlux §3.5 / App. C: a U-Net (Ronneberger et al., 2015) in pixel
  space; t is encoded by Fourier features, the condition by a learnable
  network E, and "these embeddings are added to form the condition signal,
  which is then injected into the U-Net blocks". CellFlux uses four stages of
  width 128; our default is three stages of width 32 so that it runs on CPU.
* Vectors, PRiMeFlow §3 Eq. 3: v = U-Net(Enc(x_t) + Emb(G), Enc(c), Enc(t)).
  Genes are the 1-D "sequence" axis: each gene's value is sinusoidally encoded
  and lifted by a 2-layer MLP (App. E, `n_layers_gene_expression = 2`) to
  `base_channels` features, a learnable per-gene identity embedding Emb(G) is
  added, and a 1-D conv U-Net runs over the gene axis. D is zero-padded up to a
  multiple of 2^(levels-1) and the output cropped back. With
  `value_frequencies=0, gene_embedding=False` this is a plain 1-D U-Net on the
  raw vector as a one-channel signal.

Blocks follow OpenAI guided diffusion (which PRiMeFlow §3 says its U-Net is
based on): ResBlock = GroupNorm -> act -> conv, embedding injected, GroupNorm ->
act -> dropout -> conv, plus a (1x1-conv) skip; learnable strided-conv down /
nearest+conv up sampling (`conv_resample`, PRiMeFlow App. E); optional
self-attention at chosen levels; skip connections by concatenation; the output
conv is zero-initialised so v_theta = 0 at init. Embedding injection is
FiLM-style scale/shift of the normalised activations (guided diffusion's
`use_scale_shift_norm`; the adaLN-style modulation of Esser et al., 2024, which
CellFlux §3.5 cites) or plain addition (`scale_shift=False`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowzoo.models.embeddings import (activation, check_call, check_int_sequence,
                                       fourier_time)
from flowzoo.registry import MODELS


def group_norm(channels: int, groups: int, name: str | None = None) -> nn.GroupNorm:
  """GroupNorm with the largest group count <= `groups` that divides `channels`."""
  return nn.GroupNorm(num_groups=math.gcd(groups, channels), name=name)


class ResBlock(nn.Module):
  """Residual block with the time/condition embedding injected (N-d convs)."""

  features: int
  act: Callable
  dropout: float
  scale_shift: bool
  norm_groups: int

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool) -> jax.Array:
    """x `[B, *spatial, C_in]`, emb `[B, E]` -> `[B, *spatial, features]`."""
    k = (3,) * (x.ndim - 2)
    h = nn.Conv(self.features, k, name="conv_in")(
        self.act(group_norm(x.shape[-1], self.norm_groups)(x)))
    # Broadcast the per-sample embedding over every spatial position.
    e = nn.Dense(2 * self.features if self.scale_shift else self.features,
                 name="emb")(self.act(emb))
    e = e.reshape(e.shape[:1] + (1,) * (x.ndim - 2) + e.shape[1:])
    h_norm = group_norm(self.features, self.norm_groups)
    if self.scale_shift:  # FiLM: norm(h) * (1 + scale) + shift
      scale, shift = jnp.split(e, 2, axis=-1)
      h = h_norm(h) * (1 + scale) + shift
    else:  # additive injection: norm(h + e)
      h = h_norm(h + e)
    h = nn.Dropout(self.dropout, deterministic=not train)(self.act(h))
    h = nn.Conv(self.features, k, name="conv_out")(h)
    skip = x if x.shape[-1] == self.features else nn.Conv(self.features, (1,) * (x.ndim - 2),
                                                         name="skip")(x)
    return skip + h


class SelfAttention(nn.Module):
  """Multi-head self-attention over all spatial positions, zero-init residual."""

  num_heads: int
  norm_groups: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, c = x.shape[0], x.shape[-1]
    h = group_norm(c, self.norm_groups)(x).reshape(b, -1, c)
    h = nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                        out_kernel_init=nn.initializers.zeros)(h, h)
    return x + h.reshape(x.shape)


def downsample(x: jax.Array, conv: bool, name: str) -> jax.Array:
  """Halves every spatial axis: strided conv (learnable) or average pooling."""
  nd = x.ndim - 2
  if conv:
    return nn.Conv(x.shape[-1], (3,) * nd, strides=(2,) * nd, name=name)(x)
  return nn.avg_pool(x, (2,) * nd, strides=(2,) * nd)


def upsample(x: jax.Array, conv: bool, name: str) -> jax.Array:
  """Doubles every spatial axis: nearest neighbour, then a conv if learnable."""
  for axis in range(1, x.ndim - 1):
    x = jnp.repeat(x, 2, axis=axis)
  return nn.Conv(x.shape[-1], (3,) * (x.ndim - 2), name=name)(x) if conv else x


@MODELS.register("unet")
class UNet(nn.Module):
  """U-Net velocity network for images `[B, H, W, C]` and vectors `[B, D]`.

  Attributes:
    base_channels: width of the first level (CellFlux: 128; PRiMeFlow: 256).
    channel_mult: width multiplier per level; len = number of levels L.
      Images need H, W divisible by 2^(L-1); vectors are padded to it.
    num_res_blocks: residual blocks per level on the way down (L+1 up).
    attention_levels: level indices (0 = full resolution) with self-attention;
      the middle block gets attention when the last level is listed.
    num_heads: attention heads (must divide the width at those levels).
    dropout: dropout rate inside residual blocks (PRiMeFlow: 0.1).
    act: activation name (see `embeddings.ACTIVATIONS`; both papers: SiLU).
    time_frequencies: number of Fourier frequencies for t.
    emb_dim: width of the summed time + condition embedding.
    scale_shift: FiLM scale/shift injection (True) or addition (False).
    norm_groups: GroupNorm groups (reduced to a divisor of each width).
    conv_resample: learnable strided-conv down / conv up sampling, else
      average pooling / nearest neighbour.
    value_frequencies: vectors only: Fourier frequencies of each gene value
      in Enc(x_t) (PRiMeFlow Eq. 3); 0 feeds the raw value as one channel.
    value_max_frequency: vectors only: highest value frequency (cycles per
      unit of expression).
    gene_embedding: vectors only: add the learnable per-gene Emb(G).
  """

  base_channels: int = 32
  channel_mult: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  attention_levels: Sequence[int] = ()
  num_heads: int = 4
  dropout: float = 0.0
  act: str = "silu"
  time_frequencies: int = 8
  emb_dim: int = 128
  scale_shift: bool = True
  norm_groups: int = 8
  conv_resample: bool = True
  value_frequencies: int = 4
  value_max_frequency: float = 4.0
  gene_embedding: bool = True

  def __post_init__(self):
    check_int_sequence("unet", "channel_mult", self.channel_mult, minimum=1, allow_empty=False)
    check_int_sequence("unet", "attention_levels", self.attention_levels, minimum=0)
    super().__post_init__()

  def _check_config(self) -> None:
    levels = len(self.channel_mult)  # non-empty positive ints (`__post_init__`)
    for what, v in (("base_channels", self.base_channels), ("num_res_blocks", self.num_res_blocks),
                    ("emb_dim", self.emb_dim), ("norm_groups", self.norm_groups),
                    ("num_heads", self.num_heads)):
      if v < 1:
        raise ValueError(f"unet: {what} must be >= 1, got {v}.")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"unet: dropout must be in [0, 1), got {self.dropout}.")
    for level in self.attention_levels:
      if not 0 <= level < levels:
        raise ValueError(f"unet: attention level {level} outside [0, {levels}) "
                         f"(channel_mult has {levels} levels).")
      width = self.base_channels * self.channel_mult[level]
      if width % self.num_heads:
        raise ValueError(f"unet: num_heads={self.num_heads} does not divide width {width} "
                         f"of attention level {level}.")

  def _embed(self, t: jax.Array, cond: jax.Array | None, act) -> jax.Array:
    """Enc(t) + E(c) `[B, emb_dim]` (CellFlux §3.5: the embeddings are added)."""
    emb = nn.Dense(self.emb_dim, name="time_1")(fourier_time(t, self.time_frequencies))
    emb = nn.Dense(self.emb_dim, name="time_2")(act(emb))
    if cond is not None:  # PRiMeFlow App. E: 2 MLP layers for the condition input
      e = nn.Dense(self.emb_dim, name="cond_1")(cond)
      emb = emb + nn.Dense(self.emb_dim, name="cond_2")(act(e))
    return emb

  def _encode_vector(self, x_t: jax.Array, act) -> jax.Array:
    """PRiMeFlow Eq. 3 input: Enc(x_t) + Emb(G), `[B, D]` -> `[B, D, channels]`."""
    b, d = x_t.shape
    if self.value_frequencies:
      enc = fourier_time(x_t.reshape(-1), self.value_frequencies, self.value_max_frequency)
      h = nn.Dense(self.base_channels, name="value_1")(enc.reshape(b, d, -1))
      h = nn.Dense(self.base_channels, name="value_2")(act(h))
    else:
      h = x_t[..., None]
    if self.gene_embedding:
      genes = self.param("gene_embedding", nn.initializers.normal(0.02), (d, h.shape[-1]))
      h = h + genes[None]
    return h

  @nn.compact
  def __call__(self, t: jax.Array, x_t: jax.Array, cond: jax.Array | None = None, *,
               mask: jax.Array | None = None, train: bool = False) -> jax.Array:
    del mask  # images and vectors have no padding
    check_call(t, x_t, cond)
    self._check_config()
    act = activation(self.act)
    levels = len(self.channel_mult)
    factor = 2 ** (levels - 1)
    if x_t.ndim == 4:  # images [B, H, W, C]
      if x_t.shape[1] % factor or x_t.shape[2] % factor:
        raise ValueError(
            f"unet: image height and width {x_t.shape[1:3]} must be divisible by "
            f"2^(levels-1) = {factor} for channel_mult={tuple(self.channel_mult)}; "
            "crop/pad the images or use fewer levels.")
      h, out_channels = x_t, x_t.shape[-1]
    elif x_t.ndim == 2:  # vectors [B, D]: genes are the 1-D signal axis
      h, out_channels = self._encode_vector(x_t, act), 1
      # Zero padding acts as extra boundary positions (GroupNorm statistics
      # include them); the output is cropped back to the D real genes.
      pad = -x_t.shape[1] % factor
      h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    else:
      raise ValueError(f"unet takes images [B, H, W, C] or vectors [B, D], got x_t of shape "
                       f"{x_t.shape}; use a set model for point clouds [B, N, D].")

    emb = self._embed(t, cond, act)
    block = lambda ch, name: ResBlock(ch, act, self.dropout, self.scale_shift,  # noqa: E731
                                      self.norm_groups, name=name)
    attn = lambda name: SelfAttention(self.num_heads, self.norm_groups, name=name)  # noqa: E731
    k = (3,) * (h.ndim - 2)

    # 1. Down path; every intermediate is kept for a skip connection.
    h = nn.Conv(self.base_channels * self.channel_mult[0], k, name="conv_in")(h)
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      for i in range(self.num_res_blocks):
        h = block(self.base_channels * mult, f"down_{level}_{i}")(h, emb, train)
        if level in self.attention_levels:
          h = attn(f"down_attn_{level}_{i}")(h)
        skips.append(h)
      if level < levels - 1:
        h = downsample(h, self.conv_resample, f"down_{level}_resample")
        skips.append(h)

    # 2. Middle at the lowest resolution.
    width = h.shape[-1]
    h = block(width, "mid_0")(h, emb, train)
    if levels - 1 in self.attention_levels:
      h = attn("mid_attn")(h)
    h = block(width, "mid_1")(h, emb, train)

    # 3. Up path; each block consumes one skip (U-Net concatenation).
    for level in reversed(range(levels)):
      for i in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(self.base_channels * self.channel_mult[level], f"up_{level}_{i}")(h, emb, train)
        if level in self.attention_levels:
          h = attn(f"up_attn_{level}_{i}")(h)
      if level > 0:
        h = upsample(h, self.conv_resample, f"up_{level}_resample")

    # 4. Output: zero-initialised so that v_theta = 0 at init.
    h = act(group_norm(h.shape[-1], self.norm_groups, name="norm_out")(h))
    out = nn.Conv(out_channels, k, kernel_init=nn.initializers.zeros, name="out")(h)
    if x_t.ndim == 2:
      out = out[:, :x_t.shape[1], 0]  # crop the padding, drop the channel axis
    return out
