"""Wasserstein flow matching on point clouds (WFM §3.2, Algorithms 1 and 3, Appendices A, C).

Each sample is a distribution realised as a padded point cloud `[N, D]` with a
mask. For a source cloud X ~ mu ~ p_0 and a target cloud Y ~ nu ~ p_1 (WFM §3.2):

    T^      entropic estimate of the OT map mu -> nu (App. A),
    X_t   = (1 - t) X + t T^(X)            discretised McCann interpolation (Eq. 4),
    v_t   = T^(X) - X                      its velocity (Eq. 7),
    loss  = E_t E_(X, Y) || f_theta(X_t, t) - v_t ||^2_{L2(mu_t)}              (Eq. 11)

with the L2(mu_t) norm the mean over the cloud's real points (uniform
weights), averaged over the minibatch. Generation integrates the learned
field from a source cloud with Euler (Algorithm 3) or any registered solver.

Inner map T^ (App. A, E.2), per pair of clouds:
  * "rounded": Sinkhorn plan rounded to a permutation (App. A.1), T^(x_i) =
    y_sigma(i); needs equally many real points on both sides, so it is only
    allowed with the "independent" outer coupling;
  * "entropic": the out-of-sample entropic map (App. A.2, Eq. 13), any sizes;
  * "auto": rounded when the pair's real-point counts agree, entropic
    otherwise. Under jit the counts are data, so when the outer coupling may
    pair clouds of different sizes both maps are computed for every pair and
    selected with `jnp.where` (twice the Sinkhorn work). With the
    "independent" outer coupling every source cloud is sized like its target
    by construction (the base reads `batch["mask1"]`), so only the rounded
    matching is computed.
Both default to epsilon 0.01 and up to 1000 Sinkhorn iterations on the
mean-scaled cost; WFM's 0.002 and 200 (App. E.2) converge on the max-scaled
cost its reference code uses (`scale_cost="max"`, `rounding.REFERENCE`), not
on the mean-scaled one (`RoundedMatching`). Standardise the data (flowzoo.data.pointclouds does) so
that source and target clouds overlap, or Sinkhorn may not converge; the
fraction of converged solves is logged as `sinkhorn_converged`.

Outer coupling (multisample WFM, App. C): the method's `coupling` pairs the
B source clouds with the B target clouds. "independent" keeps the drawn
order; an OT coupling (e.g. "rounded_matching", "sinkhorn", "exact") gets the
Fréchet cost between the clouds' empirical means and covariances (App. C,
Eq. 24 applied to point-cloud moments) as its `cost`.

Time convention: t = 0 is the source and t = 1 the target, as everywhere in
flowzoo. The reference code (DoronHav/WassersteinFlowMatching) runs time the
other way (its interpolant is noise + (1 - t) * flow, t = 1 at the noise).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from flowzoo.bases.pointclouds import cloud_moments
from flowzoo.couplings import rounding
from flowzoo.couplings.entropic_map import EntropicMap
from flowzoo.couplings.plans import greedy_round
from flowzoo.couplings.rounding import RoundedMatching
from flowzoo.geometry import bures, pointclouds
from flowzoo.methods.method import Keys, Method, Pairs, paired_targets
from flowzoo.metrics_pointclouds import METRICS
from flowzoo.registry import METHODS

INNER = ("auto", "rounded", "entropic")
# Plan entries per chunk of inner OT solves (`WFM.inner_chunk`): 512 KiB of
# float32, i.e. 32 pairs at N = 64, 8 at 128, 2 at 256, 1 at 512. Measured at
# N = 256 (benchmarks/wfm_step.py, batch 64): step 8.0 s with 4 or 8 pairs per
# chunk, 10.0 s with 16, 4.5 s with 2.
CHUNK_ELEMENTS = 2 * 256 * 256


@METHODS.register("wfm")
class WFM(Method):
  """Wasserstein flow matching between families of point clouds (module docstring).

  Args:
    model: point-cloud velocity network (e.g. "transformer"), called with `mask`.
    base: source clouds (e.g. "gaussian_clouds"), sized by `batch["mask1"]`.
    coupling: outer coupling of clouds within the minibatch (App. C).
    inner: inner OT map, one of `INNER`.
    epsilon, max_iterations, threshold, scale_cost: inner Sinkhorn options
      (cost scaled by its mean, "max" by its maximum; the defaults converge on
      the mean-scaled cost, WFM App. E.2's 0.002 and 200 iterations only on the
      max-scaled one, as its reference code runs them: see `RoundedMatching`).
    p_uncond, group_coupling: see `Method` (the outer coupling pairs only
      clouds of the same condition).
    inner_chunk: pairs of clouds whose inner OT is solved at once (vmapped),
      the chunks one after another (`lax.map`). None: as many as keep one
      chunk's [pairs, N, N] plans within `CHUNK_ELEMENTS`. Why: vmapped over
      the whole batch, the plans leave the CPU caches as N grows (the step
      grew 9.2x from N = 128 to 256, against 2.9x in chunks), and a chunk's
      Sinkhorn loop stops when its own pairs converge, not the slowest of
      all (benchmarks/wfm_step.py). Only the order of work changes, not the
      result.
  """

  name = "wfm"
  state_space = "pointclouds"
  geometry = pointclouds

  def __init__(self, *, model, base, coupling, inner: str = "auto",
               epsilon: float = rounding.EPSILON, max_iterations: int = rounding.MAX_ITERATIONS,
               threshold: float = 1e-3, scale_cost: str = "mean", p_uncond: float = 0.0,
               group_coupling: bool = True, inner_chunk: int | None = None):
    if inner not in INNER:
      raise ValueError(f"wfm: inner must be one of {INNER}, got {inner!r}.")
    if inner_chunk is not None and (isinstance(inner_chunk, bool) or not isinstance(
        inner_chunk, int) or inner_chunk < 1):
      raise ValueError(f"wfm: inner_chunk must be a positive integer or None (automatic), "
                       f"got {inner_chunk!r}.")
    self.inner_chunk = inner_chunk
    super().__init__(model=model, base=base, coupling=coupling, p_uncond=p_uncond,
                     group_coupling=group_coupling)
    if not (coupling.keeps_order or coupling.accepts_cost):
      raise ValueError(f"wfm: outer coupling {type(coupling).__name__} does not accept a "
                       "precomputed `cost` (needed for the Fréchet cost between clouds).")
    if inner == "rounded" and not coupling.keeps_order:
      raise ValueError("wfm: inner='rounded' needs pairs of equal-size clouds, which only the "
                       "'independent' outer coupling guarantees; use inner='auto' or 'entropic'.")
    self.inner = inner
    opts = dict(epsilon=epsilon, max_iterations=max_iterations, threshold=threshold,
                scale_cost=scale_cost)
    self.rounded = RoundedMatching(**opts)
    self.entropic = EntropicMap(**opts)

  def check_batch(self, batch) -> None:
    """Static checks of a point-cloud batch (trace time, before compilation)."""
    x1 = batch.get("x1")
    if x1 is None or x1.ndim != 3:
      raise ValueError(f"wfm needs batch['x1'] point clouds [B, N, D], got "
                       f"{None if x1 is None else x1.shape}.")
    if "mask1" not in batch or tuple(batch["mask1"].shape) != tuple(x1.shape[:2]):
      raise ValueError(f"wfm needs batch['mask1'] [B, N] = {tuple(x1.shape[:2])}, got "
                       f"{batch['mask1'].shape if 'mask1' in batch else None}.")
    for who in (self.model, self.base):
      shape = getattr(who, "event_shape", None)  # both declare it (None: any)
      if shape is not None and tuple(shape)[-1] != x1.shape[-1]:
        raise ValueError(f"wfm: point clouds have dimension {x1.shape[-1]} but the "
                         f"{type(who).__name__} was built for dimension {tuple(shape)[-1]}.")

  def init(self, rng, batch):
    self.check_batch(batch)
    return super().init(rng, batch)

  # -- pair: outer coupling of clouds (App. C), inner map of points (App. A) -------------------
  def split_keys(self, rng):
    p_rng, t_rng, d_rng, u_rng = jax.random.split(rng, 4)  # no path noise
    b_rng, c_rng = jax.random.split(p_rng)
    return Keys(b_rng, c_rng, t_rng, None, d_rng, u_rng)

  def pair_cost(self, x0, batch):
    """Fréchet cost between the clouds' moments (App. C, Eq. 24 on point-cloud moments)."""
    m0, c0 = cloud_moments(x0, batch["mask1"])  # sources are sized like the targets
    m1, c1 = cloud_moments(batch["x1"], batch["mask1"])
    return bures.frechet_cost_moments(m0, c0, m1, c1)

  def _rounded_map(self, x0, x1, m0, m1):
    plan = self.rounded.plan(x0, x1, mask0=m0, mask1=m1)
    return x1[greedy_round(plan.log_plan)], plan.converged

  def _entropic_map(self, x0, x1, m0, m1):
    plan = self.entropic.fit(x0, x1, mask0=m0, mask1=m1)
    return self.entropic.apply(plan, x0, x1), plan.converged

  def transport(self, x0, x1, mask0, mask1):
    """T^(X) `[B, N, D]` per pair of clouds and the fraction of converged Sinkhorn solves."""
    x0, x1 = jax.lax.stop_gradient(x0), jax.lax.stop_gradient(x1)
    inner = self.inner
    if inner == "auto" and self.coupling.keeps_order:
      inner = "rounded"  # sizes agree pair by pair (module docstring).
    b, n = x0.shape[:2]
    chunk = self.inner_chunk or max(1, CHUNK_ELEMENTS // (n * x1.shape[1]))

    def per_pair(fn):
      if chunk >= b:
        return jax.vmap(fn)(x0, x1, mask0, mask1)
      return jax.lax.map(lambda a: fn(*a), (x0, x1, mask0, mask1), batch_size=chunk)

    if inner == "rounded":
      y, ok = per_pair(self._rounded_map)
    elif inner == "entropic":
      y, ok = per_pair(self._entropic_map)
    else:
      yr, okr = per_pair(self._rounded_map)
      ye, oke = per_pair(self._entropic_map)
      same = jnp.sum(mask0, 1) == jnp.sum(mask1, 1)
      y, ok = jnp.where(same[:, None, None], yr, ye), jnp.where(same, okr, oke)
    return y * mask0[..., None], jnp.mean(ok.astype(jnp.float32))

  def pair(self, params, keys, batch, step) -> Pairs:
    """Source clouds paired with T^(X) (Algorithm 1, lines 3-9); x1 = T^(X), mask = X's."""
    self.check_batch(batch)
    x0 = self.draw_sources(params, keys.base, batch, step)
    i, j = self.couple(keys.couple, x0, batch)
    x0, mask0, tgt = x0[i], batch["mask1"][i], paired_targets(batch, j)
    x1_hat, converged = self.transport(x0, tgt["x1"], mask0, tgt["mask1"])
    return Pairs(x0, x1_hat, tgt["cond"], mask0, {"sinkhorn_converged": converged})

  # -- checks, generation, metrics -------------------------------------------------------------
  def example_batch(self, event_shape, cond_dim):
    if len(event_shape) != 2:
      raise ValueError(f"wfm needs point clouds of event shape (N, D) with masks, got "
                       f"event shape {tuple(event_shape)}.")
    batch = super().example_batch(event_shape, cond_dim)
    return dict(batch, mask1=jnp.ones((1, event_shape[0]), bool))

  def generate(self, params, rng, batch, *, solver="euler", num_steps=32, guidance=1.0,
               save_at: Sequence[float] | None = None):
    """Clouds `[B, N, D]` sized by `batch["mask1"]` (padded points 0), Algorithm 3.

    With `save_at`, returns `(x1, trajectory [len(save_at), B, N, D])`.
    """
    if "mask1" not in batch:
      raise KeyError("wfm.generate needs batch['mask1'] [B, N]: the sizes of the clouds "
                     "to generate.")
    out = super().generate(params, rng, batch, solver=solver, num_steps=num_steps,
                           guidance=guidance, save_at=save_at)
    x1 = out if save_at is None else out[0]
    w = batch["mask1"].astype(bool)[..., None].astype(x1.dtype)
    if save_at is None:
      return x1 * w
    return x1 * w, out[1] * w[None]

  def metrics(self):
    return dict(METRICS)
