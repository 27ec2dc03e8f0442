"""Source Gaussians for Bures–Wasserstein FM: Gaussian means, Wishart covariances (WFM App. D).

    m     ~ N(mu_m, diag(sigma_m^2))        mu_m, sigma_m: mean and std of the data means
    Sigma ~ Wishart(Sigma_bar / k, k)        E[Sigma] = Sigma_bar, the BW barycentre of the
                                             data covariances; k = ceil(df_scale * D)

sampled as Sigma = L Z Z^T L^T / k with L the Cholesky factor of Sigma_bar and
Z `[D, k]` standard normal, so Sigma is SPD almost surely (k >= D). The
degrees of freedom follow the reference code (DoronHav/BuresWassersteinFlowMatching,
`utils_Noise.gaussian`: k = D * 5); larger k concentrates Sigma around Sigma_bar.

The statistics are fixed, non-trainable parameters (`params["base"]`): `init`
estimates them from the batch the trainer starts with, `init_from_data` from all
training samples.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from flowzoo.bases.base import Base
from flowzoo.geometry.bures import bw_barycenter, pack_gaussians, unpack_gaussians
from flowzoo.registry import BASES


@BASES.register("wishart")
class Wishart(Base):
  """Gaussians N(m, Sigma) with Gaussian m and Wishart Sigma matched to the data (App. D).

  Args:
    event_shape: `(D + 1, D)`, wired by the framework.
    df_scale: Wishart degrees of freedom per dimension (k = ceil(df_scale * D) >= D).
    mean_scale: multiplies sigma_m (1 = the data's spread of means).
    barycenter_iters: fixed-point iterations of the covariance barycentre.
  """

  def __init__(self, *, event_shape: Sequence[int], df_scale: float = 5.0,
               mean_scale: float = 1.0, barycenter_iters: int = 50):
    event_shape = tuple(event_shape)
    if len(event_shape) != 2 or event_shape[0] != event_shape[1] + 1:
      raise ValueError(f"wishart base: needs Gaussians of event shape (D + 1, D), got "
                       f"{event_shape}.")
    d = event_shape[1]
    if df_scale * d < d or mean_scale < 0 or barycenter_iters < 1:
      raise ValueError(f"wishart base: need df_scale >= 1, mean_scale >= 0 and "
                       f"barycenter_iters >= 1; got {df_scale}, {mean_scale}, {barycenter_iters}.")
    self.event_shape, self.dim = event_shape, d
    self.df = int(math.ceil(df_scale * d))
    self.mean_scale, self.barycenter_iters = float(mean_scale), int(barycenter_iters)

  state_space = "bures"

  def init_from_data(self, params, x, groups=None, *, seed: int = 0) -> dict[str, jax.Array]:
    """Refits the statistics on all training Gaussians `[N, D + 1, D]` (App. D)."""
    del params, groups, seed
    return self._statistics(x)

  def _statistics(self, x: jax.Array) -> dict[str, jax.Array]:
    """Statistics of packed Gaussians `[n, D + 1, D]`: mean/std of means, chol(barycentre)."""
    if tuple(x.shape[1:]) != self.event_shape:
      raise ValueError(f"wishart base: data of event shape {tuple(x.shape[1:])}, the base was "
                       f"built for {self.event_shape}.")
    m, cov = unpack_gaussians(jnp.asarray(x, jnp.float32))
    bary = bw_barycenter(cov, self.barycenter_iters)
    chol = jnp.linalg.cholesky(bary + 1e-6 * jnp.trace(bary) / self.dim * jnp.eye(self.dim))
    return {"mean_loc": jnp.mean(m, 0), "mean_std": jnp.std(m, 0), "chol": chol}

  def init(self, rng, batch):
    del rng
    return self._statistics(batch["x1"])

  def sample(self, params, rng, batch, *, train=False):
    """`[B, D + 1, D]` source Gaussians, one per row of `batch`."""
    del train
    n = batch["cond"].shape[0]
    m_rng, z_rng = jax.random.split(rng)
    m = params["mean_loc"] + self.mean_scale * params["mean_std"] * jax.random.normal(
        m_rng, (n, self.dim))
    lz = params["chol"] @ jax.random.normal(z_rng, (n, self.dim, self.df))
    cov = lz @ jnp.swapaxes(lz, -1, -2) / self.df
    return pack_gaussians(m, cov)
