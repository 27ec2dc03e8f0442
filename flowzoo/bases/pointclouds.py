"""Source point clouds from Gaussians with random covariance (WFM Appendix D).

A source of i.i.d. N(0, I) points collapses as clouds grow (the W2 distance
between two such empirical measures goes to 0), so WFM draws each source
cloud from its own Gaussian (App. D):

    L ~ N(mu_L, sigma_L I)   (lower triangular, positive diagonal)
    X = {x_i}, x_i ~ N(0, L L^T),

with mu_L, sigma_L the element-wise mean and standard deviation of the
Cholesky factors of the target clouds' empirical covariances. Source clouds
are sized like the targets of the batch (`batch["mask1"]`), padded points 0.

The statistics are estimated in `init` from the batch the trainer
initialises with (a training minibatch) and kept as fixed, non-trainable
parameters (`params["base"]`, checkpointed with the run). Use a minibatch
mixed across conditions (`populations_per_batch = batch_size`) so that they
describe all conditions, not only the first one drawn.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from flowzoo.bases.base import Base
from flowzoo.registry import BASES


def cloud_moments(x: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Empirical mean and (biased) covariance of each padded cloud.

  Args:
    x: `[B, N, D]` point clouds.
    mask: `[B, N]` bool, True on real points (None: all real).
  Returns:
    means `[B, D]`, covariances `[B, D, D]` over the real points.
  """
  w = jnp.ones(x.shape[:2], x.dtype) if mask is None else mask.astype(x.dtype)
  w = w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)
  mean = jnp.einsum("bn,bnd->bd", w, x)
  xc = (x - mean[:, None, :]) * (w[..., None] > 0)
  cov = jnp.einsum("bn,bnd,bne->bde", w, xc, xc)
  return mean, cov


def _mask(batch: dict, event_shape: tuple[int, ...]) -> jax.Array:
  n = batch["cond"].shape[0] if "cond" in batch else batch["x1"].shape[0]
  if "mask1" in batch:
    return batch["mask1"].astype(bool)
  return jnp.ones((n, event_shape[0]), bool)


@BASES.register("gaussian_clouds")
class GaussianClouds(Base):
  """Point clouds from N(0, L L^T) with a random Cholesky factor L (WFM App. D).

  Args:
    event_shape: `(N, D)`, wired by the framework.
    std_scale: multiplies sigma_L (the paper's default is 1; the reference
      code uses 2 for a wider source).
    jitter: added to the covariance diagonal before the Cholesky
      factorisation (clouds with fewer than D + 1 points are singular).
  """

  state_space = "pointclouds"

  def __init__(self, *, event_shape: Sequence[int], std_scale: float = 1.0,
               jitter: float = 1e-4):
    event_shape = tuple(event_shape)
    if len(event_shape) != 2:
      raise ValueError(f"gaussian_clouds: needs point clouds of event shape (N, D), "
                       f"got {event_shape}.")
    if std_scale < 0 or jitter < 0:
      raise ValueError(f"gaussian_clouds: std_scale and jitter must be >= 0, got "
                       f"{std_scale} and {jitter}.")
    self.event_shape = event_shape
    self.std_scale, self.jitter = float(std_scale), float(jitter)

  def init(self, rng, batch):
    """mu_L and sigma_L `[D, D]` from the target clouds of `batch` (App. D)."""
    del rng
    x1 = batch["x1"]
    if x1.shape[1:] != self.event_shape:
      raise ValueError(f"gaussian_clouds: targets have event shape {x1.shape[1:]}, "
                       f"the base was built for {self.event_shape}.")
    _, cov = cloud_moments(x1, _mask(batch, self.event_shape))
    d = self.event_shape[1]
    chol = jnp.linalg.cholesky(cov + self.jitter * jnp.eye(d, dtype=cov.dtype))
    return {"chol_mean": jnp.mean(chol, axis=0), "chol_std": jnp.std(chol, axis=0)}

  def sample(self, params, rng, batch, *, train=False):
    """`[B, N, D]` clouds sized like `batch["mask1"]` (all N points without it)."""
    del train
    mask = _mask(batch, self.event_shape)
    b = mask.shape[0]
    n, d = self.event_shape
    l_rng, x_rng = jax.random.split(rng)
    tril = jnp.tril(jnp.ones((d, d)))
    chol = params["chol_mean"] + self.std_scale * params["chol_std"] * tril * (
        jax.random.normal(l_rng, (b, d, d)))
    # A Cholesky factor has a positive diagonal: reflect negative draws.
    eye = jnp.eye(d, dtype=bool)
    chol = jnp.where(eye, jnp.abs(chol), chol * tril)
    x = jnp.einsum("bnd,bed->bne", jax.random.normal(x_rng, (b, n, d)), chol)
    return x * mask[..., None].astype(x.dtype)
