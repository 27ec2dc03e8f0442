"""Conditional flow matching (MixFlow Eq. 5; PRiMeFlow Algorithm 1; CellFlux §3).

Loss: E_t E_(x0, x1) || v_theta(t, x_t; y) - (x1 - x0) ||^2 with
x_t ~ N((1 - t) x0 + t x1, sigma^2 I), (x0, x1) from the coupling, and y
replaced by the null condition with probability `p_uncond` so that one network
gives both v_c and v_u for classifier-free guidance. CellFlux's noise
augmentation (Eq. 5) perturbs a training source sample with probability
`source_noise_prob`: x0 <- x0 + source_noise * eps; generation starts from the
base's own samples.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from flowzoo.geometry import euclidean
from flowzoo.methods.method import Method, check_components
from flowzoo.registry import METHODS
from flowzoo.sampling import guided_velocity, integrate


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


def guided_field(field_for, guidance: float, p_uncond: float):
  """Classifier-free guidance from `field_for(keep) -> velocity_fn`.

  Returns the conditional field for guidance 1, else v_u + s (v_c - v_u);
  needs a network trained with the null condition (p_uncond > 0).
  """
  if guidance == 1.0:
    return field_for(1.0)
  if p_uncond == 0:
    raise ValueError("guidance != 1 needs a model trained with p_uncond > 0.")
  return guided_velocity(field_for(1.0), field_for(0.0), guidance)


def gather(tree, idx: jax.Array):
  """Selects rows `idx` of every leaf (pairs targets with their metadata)."""
  return jax.tree.map(lambda a: a[idx], tree)


def paired_targets(batch: dict[str, jax.Array], j: jax.Array) -> dict[str, jax.Array]:
  """Target-side rows `j` of every field but the source samples `x0`."""
  return gather({k: v for k, v in batch.items() if k != "x0"}, j)


@METHODS.register("cfm")
class CFM(Method):
  """Vanilla (OT-)CFM; the coupling decides independent vs minibatch OT.

  Args:
    model: velocity network (shared call signature, see `flowzoo.models`).
    base: source distribution (`flowzoo.bases`); a trainable base is kept fixed.
    coupling: `flowzoo.couplings` plan coupling.
    sigma: constant path noise (PRiMeFlow Algorithm 1); 0 = straight paths.
    p_uncond: probability of the null condition in training (0 disables CFG).
    group_coupling: pair only within a condition (`batch["group"]`).
    source_noise: std of CellFlux's training-time noise on x0 (Eq. 5; its
      Algorithm 1 uses N(0, I), i.e. 1.0); 0 disables it.
    source_noise_prob: probability p_e that a row's x0 is perturbed
      (CellFlux App. C: 0.5).
  """

  def __init__(self, *, model, base, coupling, sigma: float = 0.0, p_uncond: float = 0.0,
               group_coupling: bool = True, source_noise: float = 0.0,
               source_noise_prob: float = 0.5):
    if sigma < 0:
      raise ValueError(f"cfm: sigma must be >= 0, got {sigma}.")
    if not 0.0 <= p_uncond < 1.0:
      raise ValueError(f"cfm: p_uncond must be in [0, 1), got {p_uncond}.")
    if source_noise < 0:
      raise ValueError(f"cfm: source_noise must be >= 0, got {source_noise}.")
    if not 0.0 <= source_noise_prob <= 1.0:
      raise ValueError(f"cfm: source_noise_prob must be in [0, 1], got {source_noise_prob}.")
    self.model, self.base, self.coupling = model, base, coupling
    self.sigma, self.p_uncond = float(sigma), float(p_uncond)
    self.group_coupling = group_coupling
    self.source_noise, self.source_noise_prob = float(source_noise), float(source_noise_prob)

  # -- conditioning ---------------------------------------------------------
  def _cond(self, cond: jax.Array, keep) -> jax.Array:
    return with_null(cond, keep) if self.p_uncond > 0 else cond

  def init(self, rng, batch):
    b_rng, m_rng = jax.random.split(rng)
    x = batch["x1"]
    t = jnp.zeros((x.shape[0],))
    return {
        "velocity": self.model.init(m_rng, t, x, self._cond(batch["cond"], 1.0), train=False),
        "base": self.base.init(b_rng, batch),
    }

  def couple(self, rng, x0, batch):
    """The pairing tau: indices `(i, j)` `[B]` pairing x0[i] with target row j.

    Computed on `stop_gradient(x0)`: tau is a fixed assignment (MixFlow
    Eq. 7 differentiates through x0, not through the coupling).
    """
    groups = batch["group"] if self.group_coupling else None
    return self.coupling(rng, jax.lax.stop_gradient(x0), batch["x1"], groups=groups)

  def pair(self, params, rng, batch):
    """Training pairs: x0 from the base, paired with the targets by the coupling.

    With `source_noise`, a paired x0 row is perturbed with probability
    `source_noise_prob` (CellFlux Eq. 5). After the coupling: tau pairs the
    measured source samples, the augmentation only moves the path's start.
    """
    b_rng, c_rng = jax.random.split(rng)
    x0 = self.base.sample(params["base"], b_rng, batch, train=False)
    i, j = self.couple(c_rng, x0, batch)
    x0 = x0[i]
    if self.source_noise:  # static: the default key layout is unchanged
      e_rng, p_rng = jax.random.split(jax.random.fold_in(b_rng, 1))
      hit = jax.random.bernoulli(p_rng, self.source_noise_prob, x0.shape[:1])
      noise = self.source_noise * jax.random.normal(e_rng, x0.shape, x0.dtype)
      x0 = x0 + jnp.where(hit.reshape(-1, *(1,) * (x0.ndim - 1)), noise, 0.0)
    return x0, paired_targets(batch, j)

  def fm_loss(self, params, rngs, x0, tgt):
    """Flow-matching loss (MixFlow Eq. 5; Eq. 6 when x0, tgt are OT-paired).

    Args:
      params: method parameters (uses "velocity").
      rngs: `[4]` keys: time, path noise, network dropout, null condition.
      x0: `[B, *event]` source samples, row k paired with target row k.
      tgt: paired target rows (`x1`, `cond`, ...), see `paired_targets`.
    Returns:
      scalar loss.
    """
    t_rng, n_rng, d_rng, u_rng = rngs
    x1 = tgt["x1"]
    t = jax.random.uniform(t_rng, (x1.shape[0],))
    xt = euclidean.interpolate(x0, x1, t, sigma=self.sigma, rng=n_rng)
    u = euclidean.target_velocity(x0, x1, t)
    keep = jax.random.bernoulli(u_rng, 1.0 - self.p_uncond, (x1.shape[0],))
    v = self.model.apply(params["velocity"], t, xt, self._cond(tgt["cond"], keep),
                         train=True, rngs={"dropout": d_rng})
    return jnp.mean(euclidean.sq_norm(v - u))  # Eq. 5

  def loss(self, params, rng, batch, step):
    del step
    keys = jax.random.split(rng, 5)
    x0, tgt = self.pair(params, keys[0], batch)
    loss = self.fm_loss(params, keys[1:], x0, tgt)
    return loss, {"loss": loss}

  def check_data(self, event_shape, cond_dim):
    """Abstractly evaluates init, base and network on one row (no compile)."""
    batch = {"x1": jnp.zeros((1, *event_shape)), "cond": jnp.zeros((1, cond_dim)),
             "group": jnp.zeros((1,), jnp.int32)}
    if self.base.needs_sources:
      batch["x0"] = batch["x1"]
    check_components(self, batch, lambda p: self.model.apply(
        p["velocity"], jnp.zeros((1,)), batch["x1"], self._cond(batch["cond"], 1.0)))

  def velocity_fn(self, params, cond: jax.Array, guidance: float = 1.0):
    """v(t, x) for the rows' conditions, with classifier-free guidance."""
    def v(keep):
      c = self._cond(cond, keep)
      return lambda t, x: self.model.apply(params["velocity"], t, x, c, train=False)
    return guided_field(v, guidance, self.p_uncond)

  def generate(self, params, rng, batch, *, solver="euler", num_steps=32, guidance=1.0,
               save_at: Sequence[float] | None = None):
    x0 = self.base.sample(params["base"], rng, batch, train=False)
    return integrate(self.velocity_fn(params, batch["cond"], guidance), x0,
                     solver=solver, num_steps=num_steps, save_at=save_at)
