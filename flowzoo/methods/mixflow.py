"""MixFlow: mixture-conditioned flow matching (MixFlow §3, Eqs. 6-7, Algorithm 1).

Two parameter groups, two losses, both on the same minibatch OT pairing tau
between base samples x0 ~ mu_GMM(h_Theta(y), h_p(y)) and targets x1 ~ rho_n,
computed within each population (`batch["group"]`):

    L_OT  = E || v(t, (1 - t) x0_s + t x1_tau(s); y) - (x1_tau(s) - x0_s) ||^2   (Eq. 6)
    L_geo = E || x1_tau(s) - x0_s ||^2                                          (Eq. 7)

L_OT trains the velocity field with x0 held fixed (stop-gradient); L_geo
trains the base through the Gumbel-softmax sample x0, with tau held fixed (it
is an integer assignment). The planner (`planner.Planner`) decides per step
which one is optimised: `loss` returns `where(base_step, L_geo, L_OT)` and
`active` enables only the matching parameter group, so the trainer's
per-group optimizers see exactly Algorithm 1, lines 16-25. The velocity
network's forward/backward runs on base steps too (its gradient is masked to
zero); with k = 10 that wastes at most 1/11 of the work, and keeps one traced
program for all phases.

Base dropout is switched by the traced planner flag (no retracing between
phases). Generation (§3.2) is CFM's: an exact (hard) draw from the predicted
mixture of each row's descriptor, integrated from t = 0 to 1.

With a fixed base (e.g. `--config.base.name=gaussian`) there is nothing to
project: MixFlow degrades to vanilla CFM with the same coupling — one group
("velocity"), no base steps, and a loss identical to `CFM.loss` for the same
rng (`tests/methods/test_mixflow.py` checks this bit for bit).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowzoo.geometry import euclidean
from flowzoo.methods.cfm import CFM, paired_targets
from flowzoo.methods.planner import Planner
from flowzoo.registry import METHODS


@METHODS.register("mixflow")
class MixFlow(CFM):
  """Mixture-conditioned flow matching with an alternating training planner.

  Args:
    model: velocity network.
    base: source distribution; a trainable one (e.g. "gmm") is trained with
      L_geo, a fixed one makes this vanilla CFM.
    coupling: plan coupling giving tau (the paper: exact minibatch OT).
    total_steps: number of training steps (wired from config.train.steps).
    sigma, p_uncond, group_coupling: as in `CFM`.
    warmup, alternating, cooldown: planner phase fractions (sum to 1).
    base_every: k, velocity updates per base update when alternating.
    cooldown_dropout: keep base dropout on in cool-down (paper: off).
    velocity_step_dropout: base dropout also on velocity steps (Algorithm 1:
      H is in train mode for every warm-up and alternating step). False keeps
      it to base steps, where it regularises h_Theta, h_p: the velocity field
      then trains on draws from the same dropout-free base it is integrated
      from at generation (§3.2), as `straight_through` does for the mode choice.
  """

  def __init__(self, *, model, base, coupling, total_steps: int, sigma: float = 0.0,
               p_uncond: float = 0.0, group_coupling: bool = True, warmup: float = 0.1,
               alternating: float = 0.8, cooldown: float = 0.1, base_every: int = 10,
               cooldown_dropout: bool = False, velocity_step_dropout: bool = True):
    super().__init__(model=model, base=base, coupling=coupling, sigma=sigma, p_uncond=p_uncond,
                     group_coupling=group_coupling)
    self.planner = Planner(total_steps=total_steps, warmup=warmup, alternating=alternating,
                           cooldown=cooldown, every=base_every, cooldown_dropout=cooldown_dropout)
    self.velocity_step_dropout = bool(velocity_step_dropout)
    self.trains_base = bool(getattr(base, "trainable", False))
    self.groups = ("velocity", "base") if self.trains_base else ("velocity",)

  def is_base_step(self, step: jax.Array) -> jax.Array:
    if not self.trains_base:
      return jnp.zeros(jnp.shape(step), bool)
    return self.planner.is_base_step(step)

  def base_dropout(self, step: jax.Array) -> jax.Array:
    """True where dropout in h_Theta, h_p is on for the draw of this step."""
    on = self.planner.dropout(step)
    return on if self.velocity_step_dropout else on & self.is_base_step(step)

  def active(self, step):
    base_step = self.is_base_step(step)
    if not self.trains_base:
      return {"velocity": jnp.array(True)}
    return {"velocity": ~base_step, "base": base_step}

  def loss(self, params, rng, batch, step):
    """`where(base_step, L_geo, L_OT)` and metrics (see the module docstring).

    Returns:
      (loss, metrics) with scalar metrics loss, loss_ot, loss_geo, phase
      (0 warm-up, 1 alternating, 2 cool-down) and base_step (0/1).
    """
    # Same key layout as CFM.loss, so a fixed base reproduces CFM exactly.
    keys = jax.random.split(rng, 5)
    b_rng, c_rng = jax.random.split(keys[0])
    base_step = self.is_base_step(step)
    if self.trains_base:
      # Soft Gumbel sample (differentiable); dropout per the planner (traced).
      x0 = self.base.sample(params["base"], b_rng, batch, train=True,
                            dropout=self.base_dropout(step))
    else:
      x0 = self.base.sample(params["base"], b_rng, batch, train=False)
    i, j = self.couple(c_rng, x0, batch)  # tau, on stop_gradient(x0)
    x0, tgt = x0[i], paired_targets(batch, j)
    loss_geo = jnp.mean(euclidean.sq_norm(tgt["x1"] - x0))  # Eq. 7
    loss_ot = self.fm_loss(params, keys[1:], jax.lax.stop_gradient(x0), tgt)  # Eq. 6
    loss = jnp.where(base_step, loss_geo, loss_ot)
    metrics = {"loss": loss, "loss_ot": loss_ot, "loss_geo": loss_geo,
               "phase": self.planner.phase(step).astype(jnp.float32),
               "base_step": base_step.astype(jnp.float32)}
    return loss, metrics

  def init_from_data(self, params, x, groups=None, *, seed: int = 0):
    """Data-dependent base initialisation (K-means / per-condition centres).

    Host-side, once, after `init` and before training; a no-op for bases
    without `init_from_data`. See `GMM.init_from_data`.

    Args:
      params: from `init`.
      x: `[N, *event]` training samples.
      groups: `[N]` condition index of each sample.
    """
    if not hasattr(self.base, "init_from_data"):
      return params
    return dict(params, base=self.base.init_from_data(params["base"], x, groups, seed=seed))
