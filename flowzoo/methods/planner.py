"""MixFlow's training planner P (Algorithm 1, line 6; §3.1 last paragraph).

Training steps 0 .. total_steps - 1 fall into three phases:

1. warm-up      [0, warmup_end): velocity updates only;
2. alternating  [warmup_end, alternating_end): k velocity updates, then one
   base update, repeated;
3. cool-down    [alternating_end, ...): velocity only, the base is frozen.

Which alternating steps update the base (`rule`, `RULES`):

* "after_k" (flowzoo's): cycles of k + 1 steps counted from the start of the
  alternating phase, the last of each a base step: k velocity steps per base
  step (Algorithm 1 / §3.1: "after a certain number of updates to the flow
  model, a single update is made to the base");
* "step_mod_k" (the reference code's): a base step wherever the global step
  is a multiple of k, i.e. k - 1 velocity steps per base step (9 for k = 10):
  Lotfollahi-lab/MixFlow `interface/manage_models.py`,
  `SchedulerUpdateBaseDist.get_next`: `idx_iter % itercycle_update_basedist == 0`
  with the global iteration counter.

Dropout in h_Theta and h_p is on during warm-up and alternating and off in
cool-down. Phase lengths are floor(fraction * total_steps) for warm-up and
alternating; cool-down takes the rest (as the reference scheduler does with
epochs). Steps past total_steps stay in cool-down.

Every query is elementwise jnp arithmetic on the step, so it works on a
traced scalar inside the jitted train step and on arrays of steps in tests.
"""

from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp

WARMUP, ALTERNATING, COOLDOWN = 0, 1, 2
PHASES = ("warmup", "alternating", "cooldown")
RULES = ("after_k", "step_mod_k")


class Planner:
  """Schedules velocity/base updates and base dropout by step.

  Args:
    total_steps: number of training steps (config.train.steps), >= 1.
    warmup, alternating, cooldown: phase fractions, each >= 0, summing to 1.
    every: k >= 1, velocity updates before each base update in the
      alternating phase (reference: 10); see `rule`.
    cooldown_dropout: keep dropout on in cool-down (the paper turns it off).
    rule: which alternating steps are base steps, one of `RULES` (module
      docstring): "after_k" every (k + 1)-th step of the phase, "step_mod_k"
      every step that is a multiple of k (the reference code's).
  """

  def __init__(self, *, total_steps: int, warmup: float = 0.1, alternating: float = 0.8,
               cooldown: float = 0.1, every: int = 10, cooldown_dropout: bool = False,
               rule: str = "after_k"):
    if rule not in RULES:
      raise ValueError(f"planner: rule must be one of {RULES}, got {rule!r}.")
    if int(total_steps) != total_steps or total_steps < 1:
      raise ValueError(f"planner: total_steps must be an integer >= 1, got {total_steps}.")
    fractions = {"warmup": warmup, "alternating": alternating, "cooldown": cooldown}
    for name, f in fractions.items():
      if not 0.0 <= f <= 1.0:
        raise ValueError(f"planner: {name} fraction must be in [0, 1], got {f}.")
    if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
      raise ValueError(f"planner: phase fractions must sum to 1, got {fractions} "
                       f"(sum {sum(fractions.values())}).")
    if int(every) != every or every < 1:
      raise ValueError(f"planner: every (k) must be an integer >= 1, got {every}.")
    self.total_steps, self.every = int(total_steps), int(every)
    self.cooldown_dropout, self.rule = bool(cooldown_dropout), rule
    # The small epsilon keeps e.g. 0.3 * 10 = 2.9999999999999996 at 3.
    self.warmup_end = math.floor(warmup * total_steps + 1e-9)
    self.alternating_end = self.warmup_end + math.floor(alternating * total_steps + 1e-9)
    if self.num_base_steps == 0 and alternating > 0:
      logging.warning("planner: the alternating phase [%d, %d) holds no base step (every = %d, "
                      "rule %r); the base is never updated.", self.warmup_end,
                      self.alternating_end, self.every, self.rule)

  @property
  def num_base_steps(self) -> int:
    """Number of base updates over the whole run."""
    if self.rule == "step_mod_k":  # multiples of k in [warmup_end, alternating_end)
      k = self.every
      return -(-self.alternating_end // k) - -(-self.warmup_end // k)
    return (self.alternating_end - self.warmup_end) // (self.every + 1)

  def phase(self, step: jax.Array) -> jax.Array:
    """WARMUP (0), ALTERNATING (1) or COOLDOWN (2), int32, elementwise."""
    step = jnp.asarray(step)
    return jnp.where(step < self.warmup_end, WARMUP,
                     jnp.where(step < self.alternating_end, ALTERNATING, COOLDOWN)
                     ).astype(jnp.int32)

  def is_base_step(self, step: jax.Array) -> jax.Array:
    """True where the step updates the base (`rule`: the (k+1)-th of each cycle, or step % k == 0)."""
    step = jnp.asarray(step)
    if self.rule == "step_mod_k":
      hit = step % self.every == 0
    else:
      hit = (step - self.warmup_end) % (self.every + 1) == self.every
    return jnp.logical_and(self.phase(step) == ALTERNATING, hit)

  def dropout(self, step: jax.Array) -> jax.Array:
    """True where dropout in h_Theta, h_p is on (Algorithm 1, lines 11-15)."""
    if self.cooldown_dropout:
      return jnp.ones(jnp.shape(step), bool)
    return self.phase(step) != COOLDOWN

  def __repr__(self) -> str:
    when = (f"after every {self.every} velocity steps" if self.rule == "after_k" else
            f"at every step that is a multiple of {self.every}")
    return (f"Planner(warmup=[0, {self.warmup_end}), alternating=[{self.warmup_end}, "
            f"{self.alternating_end}) with a base step {when} ({self.num_base_steps} in "
            f"all), cooldown=[{self.alternating_end}, {self.total_steps}))")
