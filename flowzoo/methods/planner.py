"""MixFlow's training planner P (Algorithm 1, line 6; §3.1 last paragraph).

Training steps 0 .. total_steps - 1 fall into three phases:

1. warm-up      [0, warmup_end): velocity updates only;
2. alternating  [warmup_end, alternating_end): k velocity updates, then one
   base update, repeated;
3. cool-down    [alternating_end, ...): velocity only, the base is frozen.

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


class Planner:
  """Schedules velocity/base updates and base dropout by step.

  Args:
    total_steps: number of training steps (config.train.steps), >= 1.
    warmup, alternating, cooldown: phase fractions, each >= 0, summing to 1.
    every: k >= 1, velocity updates before each base update in the
      alternating phase (reference: 10).
    cooldown_dropout: keep dropout on in cool-down (the paper turns it off).
  """

  def __init__(self, *, total_steps: int, warmup: float = 0.1, alternating: float = 0.8,
               cooldown: float = 0.1, every: int = 10, cooldown_dropout: bool = False):
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
    self.cooldown_dropout = bool(cooldown_dropout)
    # The small epsilon keeps e.g. 0.3 * 10 = 2.9999999999999996 at 3.
    self.warmup_end = math.floor(warmup * total_steps + 1e-9)
    self.alternating_end = self.warmup_end + math.floor(alternating * total_steps + 1e-9)
    if self.num_base_steps == 0 and alternating > 0:
      logging.warning("planner: the alternating phase (%d steps) is shorter than every + 1 = %d; "
                      "the base is never updated.",
                      self.alternating_end - self.warmup_end, self.every + 1)

  @property
  def num_base_steps(self) -> int:
    """Number of base updates over the whole run."""
    return (self.alternating_end - self.warmup_end) // (self.every + 1)

  def phase(self, step: jax.Array) -> jax.Array:
    """WARMUP (0), ALTERNATING (1) or COOLDOWN (2), int32, elementwise."""
    step = jnp.asarray(step)
    return jnp.where(step < self.warmup_end, WARMUP,
                     jnp.where(step < self.alternating_end, ALTERNATING, COOLDOWN)
                     ).astype(jnp.int32)

  def is_base_step(self, step: jax.Array) -> jax.Array:
    """True where the step updates the base (the (k+1)-th of each cycle)."""
    step = jnp.asarray(step)
    offset = step - self.warmup_end
    return jnp.logical_and(self.phase(step) == ALTERNATING,
                           offset % (self.every + 1) == self.every)

  def dropout(self, step: jax.Array) -> jax.Array:
    """True where dropout in h_Theta, h_p is on (Algorithm 1, lines 11-15)."""
    if self.cooldown_dropout:
      return jnp.ones(jnp.shape(step), bool)
    return self.phase(step) != COOLDOWN

  def __repr__(self) -> str:
    return (f"Planner(warmup=[0, {self.warmup_end}), alternating=[{self.warmup_end}, "
            f"{self.alternating_end}) with a base step after every {self.every} velocity "
            f"steps ({self.num_base_steps} in all), cooldown=[{self.alternating_end}, "
            f"{self.total_steps}))")
