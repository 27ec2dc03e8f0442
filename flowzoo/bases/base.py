"""Interface of source distributions mu (the state at t = 0)."""

from __future__ import annotations

from typing import Any

import jax

Params = Any


class Base:
  """A source distribution, possibly trainable and conditioned on descriptors.

  Subclasses implement `sample`; trainable ones also `init` (MixFlow's
  descriptor-conditioned mixture) and set `trainable = True`, in which case
  the method gives their parameters their own parameter group ("base").
  """

  trainable: bool = False
  # True when `sample` reads `batch["x0"]` (the dataset's source samples).
  needs_sources: bool = False
  # What a sample is ("euclidean", "bures", "pointclouds"); None: the data's own.
  state_space: str | None = "euclidean"

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> Params:
    """Returns the parameters (an empty dict for fixed bases)."""
    del rng, batch
    return {}

  def init_from_data(self, params: Params, x, groups=None, *, seed: int = 0) -> Params:
    """Host-side, data-dependent parameters, once after `init` (default: unchanged).

    Args:
      params: from `init`.
      x: `[N, *event]` training samples.
      groups: `[N]` condition index of each sample (or None).
      seed: seed of any random choice (K-means, sample picks).
    """
    del x, groups, seed
    return params

  def sample(self, params: Params, rng: jax.Array, batch: dict[str, jax.Array], *,
             train: bool = False) -> jax.Array:
    """Draws one source sample per row of `batch`.

    Args:
      params: from `init`.
      rng: PRNG key.
      batch: at least `cond` `[B, C]`; `x0` `[B, *event]` when the dataset
        provides source samples (control cells).
      train: training mode (dropout, soft Gumbel samples).

    Returns:
      `[B, *event]` source samples.
    """
    raise NotImplementedError
