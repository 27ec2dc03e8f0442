"""Interface of a flow-matching method (a flowzoo plugin).

A method owns its components (velocity network, base, coupling) and exposes
pure functions the trainer jits:

* `init(rng, batch) -> params`: a dict with one entry per parameter group.
* `loss(params, rng, batch, step) -> (loss, metrics)`.
* `active(step) -> {group: bool}`: which groups the optimizer updates at
  `step` (MixFlow's planner alternates between "velocity" and "base";
  single-group methods return all True). An inactive group's parameters and
  optimizer state stay exactly unchanged.
* `generate(params, rng, batch, ...)`: integrate from the base at t = 0 to
  t = 1 for the rows of `batch` (their `cond`, and `x0` for empirical bases).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

Params = dict[str, Any]


class Method:
  """Base class; see the module docstring."""

  groups: tuple[str, ...] = ("velocity",)

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> Params:
    raise NotImplementedError

  def loss(self, params: Params, rng: jax.Array, batch: dict[str, jax.Array],
           step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    raise NotImplementedError

  def active(self, step: jax.Array) -> dict[str, jax.Array]:
    del step
    return {g: jnp.array(True) for g in self.groups}

  def generate(self, params: Params, rng: jax.Array, batch: dict[str, jax.Array], *,
               solver: str = "euler", num_steps: int = 32, guidance: float = 1.0,
               save_at: Sequence[float] | None = None):
    raise NotImplementedError

  def init_from_data(self, params: Params, x, groups=None, *, seed: int = 0) -> Params:
    """Host-side, data-dependent initialisation after `init` (default: none).

    Args:
      params: from `init`.
      x: `[N, *event]` training samples; groups: `[N]` their condition index.
    """
    del x, groups, seed
    return params

  def metrics(self) -> dict:
    """Extra evaluation metrics of this state space (e.g. 1-NNA for point clouds).

    Each is `fn(fake, real, *, fake_mask, real_mask) -> float` on `[n, *event]`
    arrays (masks `[n, N]` or None); vector metrics live in `flowzoo.metrics`.
    """
    return {}

  def check_data(self, event_shape: Sequence[int], cond_dim: int) -> None:
    """Raises before compilation when the data do not fit the components."""


def check_components(method, batch: dict, velocity, state: str = "data") -> None:
  """Abstractly evaluates a method's init, base and network (no compile).

  Args:
    method: has `init` and `base`.
    batch: one-row example batch (`x1` `[1, *event]`, `cond`, ...).
    velocity: `params -> [1, *event]` network output for `batch`.
    state: what the data are, for the error message ("point clouds", ...).
  Raises:
    ValueError: when a component rejects the shapes, or the network output or
      base sample does not have the data's event shape.
  """
  event_shape, cond_dim = tuple(batch["x1"].shape[1:]), batch["cond"].shape[1]
  key = jax.random.key(0)
  try:
    params = jax.eval_shape(method.init, key, batch)
    x0 = jax.eval_shape(lambda p: method.base.sample(p["base"], key, batch), params)
    v = jax.eval_shape(velocity, params)
  except (TypeError, ValueError) as e:
    raise ValueError(f"the components cannot take {state} of event shape {event_shape} "
                     f"and descriptor dim {cond_dim}: {e}") from e
  for what, shape in (("velocity network output", v.shape), ("base sample", x0.shape)):
    if tuple(shape[1:]) != event_shape:
      raise ValueError(f"{what} shape {tuple(shape[1:])} != data event shape {event_shape}.")
