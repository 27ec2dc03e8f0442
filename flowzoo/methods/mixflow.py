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
per-group optimizers see exactly Algorithm 1, lines 16-25. By default both
groups' backward passes run every step (the inactive one's gradient is zero)
in one traced program for all phases; `active_group_grads=True` runs only the
active group's (faster; see the class docstring).

Base dropout is switched by the traced planner flag (no retracing between
phases). Generation (§3.2) is CFM's: an exact (hard) draw from the predicted
mixture of each row's descriptor, integrated from t = 0 to 1. What is
MixFlow's own here: the base draw of a training step, L_geo and the planner;
pairing, interpolation, target and L_OT are the core's (`method.Method`).

With a fixed base (e.g. `--config.base.name=gaussian`) there is nothing to
project: MixFlow degrades to vanilla CFM with the same coupling — one group
("velocity"), no base steps, and a loss identical to `CFM.loss` for the same
rng (`tests/methods/test_mixflow.py` checks this bit for bit).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowzoo.geometry import euclidean
from flowzoo.methods.cfm import CFM
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
    base_every: k, velocity updates per base update when alternating (see
      `base_step_rule`).
    base_step_rule: "after_k" (k velocity steps, then a base step) or
      "step_mod_k" (the reference code's: a base step at every multiple of k,
      9 velocity steps per base step for k = 10); `planner.RULES`.
    cooldown_dropout: keep base dropout on in cool-down (paper: off).
    velocity_step_dropout: base dropout also on velocity steps (Algorithm 1:
      H is in train mode for every warm-up and alternating step). False keeps
      it to base steps, where it regularises h_Theta, h_p: the velocity field
      then trains on draws from the same dropout-free base it is integrated
      from at generation (§3.2), as `straight_through` does for the mode choice.
    time_sampling: as in `CFM` (MixFlow Algorithm 1: "uniform").
    cond_encoder, cond_encoder_dropout: as in `CFM`; "paper_baseline" is the
      reference's CFM baseline and needs a fixed base (the twin
      `base.name=gaussian`): with a trained base the reference trains that
      shared encoder on base steps, which flowzoo's GMM (its own h_Theta, h_p
      on the descriptor) does not model.
    active_group_grads: differentiate only the group the planner updates at
      each step (`exclusive_groups`, `flowzoo.train.Trainer._grads`): a
      velocity step then runs no backward pass through the base network, a
      base step none through the velocity field. On the main job (real
      wells: the base's h_Theta is as large as the velocity MLP) MixFlow's
      step took 6.98 / 8.79 instead of 8.85 / 9.22 ms with the exact coupling
      and 3.29 / 3.56 instead of 4.66 / 4.52 ms with independent pairs (two
      runs, `benchmarks/mixflow_step.py --main_job`, 2026-12-02). The
      gradients are the same up to float rounding (XLA fuses the branches
      differently), not bit for bit, so it is off by default until the
      MixFlow results pages are re-run with it.
  """

  name = "mixflow"

  def __init__(self, *, model, base, coupling, total_steps: int, sigma: float = 0.0,
               p_uncond: float = 0.0, group_coupling: bool = True, warmup: float = 0.1,
               alternating: float = 0.8, cooldown: float = 0.1, base_every: int = 10,
               cooldown_dropout: bool = False, velocity_step_dropout: bool = True,
               base_step_rule: str = "after_k", cond_encoder: str = "none",
               cond_encoder_dropout: float = 0.5, time_sampling: str = "uniform",
               active_group_grads: bool = False):
    super().__init__(model=model, base=base, coupling=coupling, sigma=sigma, p_uncond=p_uncond,
                     group_coupling=group_coupling, cond_encoder=cond_encoder,
                     cond_encoder_dropout=cond_encoder_dropout, time_sampling=time_sampling)
    if cond_encoder != "none" and base.trainable:
      raise ValueError(f"mixflow: cond_encoder={cond_encoder!r} is the reference's CFM baseline "
                       f"and needs a fixed base (e.g. base.name=gaussian), not the trainable "
                       f"{type(base).__name__}.")
    self.planner = Planner(total_steps=total_steps, warmup=warmup, alternating=alternating,
                           cooldown=cooldown, every=base_every, cooldown_dropout=cooldown_dropout,
                           rule=base_step_rule)
    self.velocity_step_dropout = bool(velocity_step_dropout)
    self.trains_base = base.trainable
    self.groups = ("velocity", "base") if self.trains_base else ("velocity",)
    self.exclusive_groups = bool(active_group_grads)  # one group is active per step (`active`)

  # -- planner (Algorithm 1, lines 16-25) ----------------------------------------------------
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

  # -- pair: x0 ~ mu_GMM(h_Theta(y), h_p(y)) -------------------------------------------------
  def draw_sources(self, params, rng, batch, step):
    if not self.trains_base:
      return super().draw_sources(params, rng, batch, step)
    # Soft Gumbel sample (differentiable); dropout per the planner (traced).
    return self.base.sample(params["base"], rng, batch, train=True,
                            dropout=self.base_dropout(step))

  # -- loss ----------------------------------------------------------------------------------
  def loss(self, params, rng, batch, step):
    """`where(base_step, L_geo, L_OT)` and metrics (see the module docstring).

    Returns:
      (loss, metrics) with scalar metrics loss, loss_ot, loss_geo, phase
      (0 warm-up, 1 alternating, 2 cool-down) and base_step (0/1).
    """
    keys = self.split_keys(rng)  # CFM's layout: a fixed base reproduces CFM exactly.
    pairs = self.pair(params, keys, batch, step)  # tau on stop_gradient(x0)
    loss_geo = jnp.mean(euclidean.sq_norm(pairs.x1 - pairs.x0))  # Eq. 7
    loss_ot, _ = self.fm_loss(params, keys, pairs)  # Eq. 6 (x0 held fixed)
    base_step = self.is_base_step(step)
    loss = jnp.where(base_step, loss_geo, loss_ot)
    metrics = {"loss": loss, "loss_ot": loss_ot, "loss_geo": loss_geo,
               "phase": self.planner.phase(step).astype(jnp.float32),
               "base_step": base_step.astype(jnp.float32)}
    return loss, metrics
