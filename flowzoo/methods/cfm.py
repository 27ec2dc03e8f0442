"""Conditional flow matching (MixFlow Eq. 5; PRiMeFlow Algorithm 1; CellFlux §3, Eq. 5).

    pair         (x0, x1) from the coupling: independent (vanilla CFM), or
                 minibatch OT (OT-CFM, MixFlow Eq. 6); CellFlux perturbs a
                 source x0 with probability p_e: x0 <- x0 + eps * N(0, I) (Eq. 5)
    interpolate  x_t ~ N((1 - t) x0 + t x1, sigma^2 I)      (PRiMeFlow Algorithm 1)
    target       u_t = x1 - x0                              (MixFlow Eq. 4)
    loss         E || v_theta(t, x_t; y) - u_t ||^2          (MixFlow Eq. 5)

with y replaced by the null condition with probability `p_uncond`, so one
network gives both v_c and v_u for classifier-free guidance
(`flowzoo.guidance`). Generation starts from the base's own samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowzoo.geometry import euclidean
from flowzoo.methods.method import Keys, Method, Pairs
from flowzoo.registry import METHODS


@METHODS.register("cfm")
class CFM(Method):
  """Vanilla (OT-)CFM; the coupling decides independent vs minibatch OT.

  Args:
    model, base, coupling, p_uncond, group_coupling: see `Method`.
    sigma: constant path noise (PRiMeFlow Algorithm 1); 0 = straight paths.
    source_noise: std of CellFlux's training-time noise on x0 (Eq. 5; its
      Algorithm 1 uses N(0, I), i.e. 1.0); 0 disables it.
    source_noise_prob: probability p_e that a row's x0 is perturbed
      (CellFlux App. C: 0.5).
    inference_noise: std of N(0, I) noise added to every x0 at generation
      only. CellFlux's code does this (1.0); its Algorithm 1 does not. With an
      empirical base of a few control samples it is what makes generated
      samples distinct: without it every draw from one control well follows
      the same deterministic path.
  """

  name = "cfm"
  geometry = euclidean

  def __init__(self, *, model, base, coupling, sigma: float = 0.0, p_uncond: float = 0.0,
               group_coupling: bool = True, source_noise: float = 0.0,
               source_noise_prob: float = 0.5, inference_noise: float = 0.0):
    super().__init__(model=model, base=base, coupling=coupling, p_uncond=p_uncond,
                     group_coupling=group_coupling)
    if sigma < 0:
      raise ValueError(f"{self.name}: sigma must be >= 0, got {sigma}.")
    if source_noise < 0:
      raise ValueError(f"{self.name}: source_noise must be >= 0, got {source_noise}.")
    if not 0.0 <= source_noise_prob <= 1.0:
      raise ValueError(f"{self.name}: source_noise_prob must be in [0, 1], got "
                       f"{source_noise_prob}.")
    if inference_noise < 0:
      raise ValueError(f"{self.name}: inference_noise must be >= 0, got {inference_noise}.")
    self.sigma = float(sigma)
    self.source_noise, self.source_noise_prob = float(source_noise), float(source_noise_prob)
    self.inference_noise = float(inference_noise)

  def pair(self, params, keys: Keys, batch, step) -> Pairs:
    """Coupled pairs; with `source_noise`, CellFlux's augmentation of x0 (Eq. 5).

    After the coupling: tau pairs the measured source samples, the
    augmentation only moves the path's start.
    """
    pairs = super().pair(params, keys, batch, step)
    if not self.source_noise:  # static: the default key layout is unchanged
      return pairs
    x0 = pairs.x0
    e_rng, p_rng = jax.random.split(jax.random.fold_in(keys.base, 1))
    hit = jax.random.bernoulli(p_rng, self.source_noise_prob, x0.shape[:1])
    noise = self.source_noise * jax.random.normal(e_rng, x0.shape, x0.dtype)
    return pairs._replace(x0=x0 + jnp.where(hit.reshape(-1, *(1,) * (x0.ndim - 1)), noise, 0.0))

  def generation_sources(self, params, rng, batch):
    """The base's draw, plus `inference_noise` * N(0, I) (CellFlux's code) when set."""
    if not self.inference_noise:  # static: the default generation is unchanged
      return super().generation_sources(params, rng, batch)
    b_rng, n_rng = jax.random.split(rng)
    x0 = super().generation_sources(params, b_rng, batch)
    return x0 + self.inference_noise * jax.random.normal(n_rng, x0.shape, x0.dtype)

  def interpolate(self, x0, x1, t, rng):
    return euclidean.interpolate(x0, x1, t, sigma=self.sigma, rng=rng)
