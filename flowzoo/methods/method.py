"""The flow-matching core every method (plugin) shares.

A method owns its components (velocity network, base, coupling) and exposes
pure functions the trainer jits. One training step reads as the papers do:

    pair         x0 ~ base, coupled with the targets x1 (plan coupling)   `pair`
    interpolate  x_t on the path from x0 to x1                            `interpolate`
    target       u_t, the path's velocity                                 `target_velocity`
    loss         E || v_theta(t, x_t; y) - u_t ||^2 in the state's norm  `fm_loss`

The geometry of the state space (`flowzoo.geometry.euclidean`, `.bures`,
`.pointclouds`) supplies interpolate / target velocity / squared norm; a
method file holds only what is its own (CFM: its pairing; MixFlow: L_geo and
the planner; BW-FM: its geometries; WFM: the inner transport).

Interface the trainer and evaluator use:

* `init(rng, batch) -> params`: a dict with one entry per parameter group
  ("velocity", "base").
* `init_from_data(params, x, groups, *, seed)`: host-side, data-dependent
  initialisation after `init` (delegated to the base: K-means centres,
  Wishart statistics).
* `loss(params, rng, batch, step) -> (loss, metrics)`.
* `active(step) -> {group: bool}`: which groups the optimizer updates at
  `step` (MixFlow's planner alternates "velocity" and "base"). An inactive
  group's parameters and optimizer state stay exactly unchanged. A method
  whose groups take turns (exactly one active per step) may set
  `exclusive_groups`: the trainer then differentiates the active group only
  (MixFlow's `active_group_grads`).
* `generate(params, rng, batch, ...)`: integrate from the base at t = 0 to
  t = 1 for the rows of `batch` (their `cond`; `x0` for empirical bases;
  `mask1` for point clouds).
* `check_data(event_shape, cond_dim)`: abstract evaluation (no compile) of
  init, base, network and loss on one example row; raises on a mismatch.

Components declare what they can do; nothing is probed: a coupling's
`is_map`, `keeps_order` and `accepts_cost`, a base's `state_space`,
`trainable` and `needs_sources`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flowzoo.geometry import euclidean
from flowzoo.guidance import guided_field, with_null
from flowzoo.sampling import integrate

Params = dict[str, Any]


class Keys(NamedTuple):
  """PRNG keys of one training step, one per random choice."""

  base: jax.Array      # x0 ~ base
  couple: jax.Array    # the coupling's draw
  time: jax.Array      # t ~ U(0, 1)
  noise: jax.Array     # path noise (CFM's sigma)
  dropout: jax.Array   # network dropout
  uncond: jax.Array    # which rows get the null condition (CFG)


class Pairs(NamedTuple):
  """Coupled training rows: x0[k] travels to x1[k] under cond[k].

  Attributes:
    x0: `[B, *event]` source states.
    x1: `[B, *event]` end points of the paths (the paired targets; WFM: the
      inner map's image T^(x0)).
    cond: `[B, C]` descriptors of the paired targets.
    mask: `[B, N]` real points of each state (point clouds) or None.
    aux: scalar metrics of the pairing (e.g. Sinkhorn convergence).
  """

  x0: jax.Array
  x1: jax.Array
  cond: jax.Array
  mask: jax.Array | None = None
  aux: dict = {}


def gather(tree, idx: jax.Array):
  """Selects rows `idx` of every leaf (pairs targets with their metadata)."""
  return jax.tree.map(lambda a: a[idx], tree)


def paired_targets(batch: dict[str, jax.Array], j: jax.Array) -> dict[str, jax.Array]:
  """Target-side rows `j` of every field but the source samples `x0`."""
  return gather({k: v for k, v in batch.items() if k != "x0"}, j)


class Method:
  """Conditional flow matching on a state space (see the module docstring).

  Args:
    model: velocity network (shared call signature, see `flowzoo.models`).
    base: source distribution (`flowzoo.bases`).
    coupling: plan coupling (`flowzoo.couplings`), pairs sources with targets.
    p_uncond: probability of the null condition in training (0 disables
      classifier-free guidance).
    group_coupling: pair only within a condition (`batch["group"]`).
  """

  name = "method"                 # registered name, for messages
  state_space = "euclidean"       # what a sample is; bases must agree
  geometry = euclidean            # interpolate / target_velocity / sq_norm
  groups: tuple[str, ...] = ("velocity",)
  exclusive_groups = False        # True: exactly one group is active per step

  def __init__(self, *, model, base, coupling, p_uncond: float = 0.0,
               group_coupling: bool = True):
    if not 0.0 <= p_uncond < 1.0:
      raise ValueError(f"{self.name}: p_uncond must be in [0, 1), got {p_uncond}.")
    if coupling.is_map:
      raise ValueError(f"{self.name}: coupling {type(coupling).__name__} is a transport map "
                       "(is_map), not a pairing of samples; use an index coupling such as "
                       "'independent', 'sinkhorn', 'exact' or 'rounded_matching'.")
    if base.state_space not in (None, self.state_space):
      raise ValueError(f"{self.name}: base {type(base).__name__} samples {base.state_space} "
                       f"states, but this method works on {self.state_space} states.")
    self.model, self.base, self.coupling = model, base, coupling
    self.p_uncond, self.group_coupling = float(p_uncond), bool(group_coupling)

  # -- conditioning and network ------------------------------------------------------------
  def cond(self, cond: jax.Array, keep) -> jax.Array:
    """Descriptors as the network sees them: with the null flag when CFG is trained."""
    return with_null(cond, keep) if self.p_uncond > 0 else cond

  def network(self, params: Params, t, x, cond, *, mask=None, train: bool = False, rngs=None):
    """v_theta(t, x; cond) `[B, *event]` (`t` `[B]`)."""
    return self.model.apply(params["velocity"], t, x, cond, mask=mask, train=train, rngs=rngs)

  def init_network(self, rng: jax.Array, batch: dict) -> Params:
    t = jnp.zeros((batch["x1"].shape[0],))
    return self.model.init(rng, t, batch["x1"], self.cond(batch["cond"], 1.0),
                           mask=batch.get("mask1"), train=False)

  def init(self, rng: jax.Array, batch: dict) -> Params:
    b_rng, m_rng = jax.random.split(rng)
    return {"velocity": self.init_network(m_rng, batch), "base": self.base.init(b_rng, batch)}

  def init_from_data(self, params: Params, x, groups=None, *, seed: int = 0) -> Params:
    """Data-dependent base initialisation, once, on the host, after `init`.

    Args:
      params: from `init`.
      x: `[N, *event]` training samples; groups: `[N]` their condition index.
    """
    return dict(params, base=self.base.init_from_data(params["base"], x, groups, seed=seed))

  def active(self, step: jax.Array) -> dict[str, jax.Array]:
    del step
    return {g: jnp.array(True) for g in self.groups}

  # -- 1. pair ---------------------------------------------------------------------------
  def split_keys(self, rng: jax.Array) -> Keys:
    keys = jax.random.split(rng, 5)
    b_rng, c_rng = jax.random.split(keys[0])
    return Keys(b_rng, c_rng, *keys[1:])

  def draw_sources(self, params: Params, rng: jax.Array, batch: dict, step) -> jax.Array:
    """x0 ~ base, one per row of `batch` `[B, *event]`."""
    del step
    return self.base.sample(params["base"], rng, batch, train=False)

  def generation_sources(self, params: Params, rng: jax.Array, batch: dict) -> jax.Array:
    """x0 at generation, one per row of `batch` `[B, *event]`: the base's own draw."""
    return self.base.sample(params["base"], rng, batch, train=False)

  def pair_cost(self, x0: jax.Array, batch: dict) -> jax.Array | None:
    """`[B, B]` cost between sources and targets for OT couplings; None: the coupling's own."""
    del x0, batch
    return None

  def couple(self, rng: jax.Array, x0: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """The pairing tau: indices `(i, j)` `[B]` pairing x0[i] with target row j.

    On `stop_gradient(x0)`: tau is a fixed assignment (MixFlow Eq. 7
    differentiates through x0, not through the coupling).
    """
    groups = batch["group"] if self.group_coupling else None
    x0 = jax.lax.stop_gradient(x0)
    cost = None if self.coupling.keeps_order else self.pair_cost(x0, batch)
    if cost is None:
      return self.coupling(rng, x0, batch["x1"], groups=groups)
    return self.coupling(rng, x0, batch["x1"], groups=groups, cost=jax.lax.stop_gradient(cost))

  def pair(self, params: Params, keys: Keys, batch: dict, step) -> Pairs:
    """Sources from the base, paired with the targets by the coupling."""
    x0 = self.draw_sources(params, keys.base, batch, step)
    i, j = self.couple(keys.couple, x0, batch)
    tgt = paired_targets(batch, j)
    return Pairs(x0[i], tgt["x1"], tgt["cond"])

  # -- 2.-3. interpolate, target ----------------------------------------------------------
  def interpolate(self, x0, x1, t, rng) -> jax.Array:
    del rng
    return self.geometry.interpolate(x0, x1, t)

  def target_velocity(self, x0, x1, t) -> jax.Array:
    return self.geometry.target_velocity(x0, x1, t)

  def sq_norm(self, v, x, mask) -> jax.Array:
    """Per-sample squared norm `[B]` of tangent `v` at state `x`."""
    return self.geometry.sq_norm(v, x, mask)

  # -- 4. loss -----------------------------------------------------------------------------
  def sample_time(self, rng: jax.Array, b: int) -> jax.Array:
    """t ~ U(0, 1) per row `[b]` (MixFlow Eq. 5; CFM's `time_sampling` may skew it)."""
    return jax.random.uniform(rng, (b,))

  def keep_condition(self, rng: jax.Array, b: int) -> jax.Array:
    """`[b]` bool: rows that keep their condition (the rest get the null one, CFG)."""
    return jax.random.bernoulli(rng, 1.0 - self.p_uncond, (b,))

  def fm_loss(self, params: Params, keys: Keys, pairs: Pairs) -> tuple[jax.Array, dict]:
    """E_t || v(t, x_t; y) - u_t ||^2 over the pairs (MixFlow Eq. 5-6, WFM Eq. 11).

    x0 is held fixed (stop-gradient): this loss trains the velocity field.
    """
    x0, x1 = jax.lax.stop_gradient(pairs.x0), pairs.x1
    b = x0.shape[0]
    t = self.sample_time(keys.time, b)
    xt = self.interpolate(x0, x1, t, keys.noise)
    u = self.target_velocity(x0, x1, t)
    keep = self.keep_condition(keys.uncond, b)
    v = self.network(params, t, xt, self.cond(pairs.cond, keep), mask=pairs.mask, train=True,
                     rngs={"dropout": keys.dropout})
    loss = jnp.mean(self.sq_norm(v - u, xt, pairs.mask))
    return loss, {"loss": loss, **pairs.aux}

  def loss(self, params: Params, rng: jax.Array, batch: dict, step) -> tuple[jax.Array, dict]:
    keys = self.split_keys(rng)
    return self.fm_loss(params, keys, self.pair(params, keys, batch, step))

  # -- generation --------------------------------------------------------------------------
  def velocity_fn(self, params: Params, batch: dict, guidance: float = 1.0):
    """v(t, x) for the rows of `batch` (`cond`, and `mask1` for clouds), with CFG."""
    mask = batch.get("mask1")
    mask = None if mask is None else mask.astype(bool)

    def field_for(keep):
      c = self.cond(batch["cond"], keep)
      return lambda t, x: self.network(params, t, x, c, mask=mask, train=False)
    return guided_field(field_for, guidance, self.p_uncond)

  def generate(self, params: Params, rng: jax.Array, batch: dict, *, solver: str = "euler",
               num_steps: int = 32, guidance: float = 1.0,
               save_at: Sequence[float] | None = None, unroll: bool = False):
    """`[B, *event]` samples for the rows of `batch`, integrated from t = 0 to 1.

    With `save_at`, returns `(x1, trajectory [len(save_at), B, *event])`;
    `unroll`: see `flowzoo.sampling.integrate`.
    """
    x0 = self.generation_sources(params, rng, batch)
    return integrate(self.velocity_fn(params, batch, guidance), x0, solver=solver,
                     num_steps=num_steps, save_at=save_at, unroll=unroll)

  def path(self, params: Params, batch: dict, x_start: jax.Array, times: Sequence[float], *,
           backward: bool = False, solver: str = "euler", num_steps: int = 32,
           guidance: float = 1.0, unroll: bool = False) -> jax.Array:
    """States `[len(times), B, *event]` of the learned flow through `x_start` at `times`.

    Forward (default): `x_start` is a source (e.g. a control cell) at t = 0,
    integrated to t = 1. Backward: `x_start` is a real target (e.g. a treated
    cell) at t = 1, integrated back to t = 0: the source the flow maps onto it
    (CellFlux's interpolation figure). `times` in [0, 1], any order; the states
    come back in the order given.
    """
    ts = np.asarray(times, np.float64)
    order = np.argsort(-ts if backward else ts, kind="stable")
    t0, t1 = (1.0, 0.0) if backward else (0.0, 1.0)
    _, traj = integrate(self.velocity_fn(params, batch, guidance), x_start, solver=solver,
                        num_steps=num_steps, save_at=ts[order], t0=t0, t1=t1, unroll=unroll)
    return traj[np.argsort(order)]

  def metrics(self) -> dict:
    """Extra evaluation metrics of this state space (e.g. 1-NNA for point clouds).

    Each is `fn(fake, real, *, fake_mask, real_mask) -> float` on `[n, *event]`
    arrays (masks `[n, N]` or None); vector metrics live in `flowzoo.metrics`.
    """
    return {}

  # -- checks ------------------------------------------------------------------------------
  def example_batch(self, event_shape: Sequence[int], cond_dim: int) -> dict:
    """One valid example row of data of `event_shape` (for abstract checks)."""
    batch = {"x1": jnp.zeros((1, *event_shape)), "cond": jnp.zeros((1, cond_dim)),
             "group": jnp.zeros((1,), jnp.int32)}
    if self.base.needs_sources:
      batch["x0"] = batch["x1"]
    return batch

  def check_data(self, event_shape: Sequence[int], cond_dim: int) -> None:
    """Abstractly evaluates init, base, network and loss on one row (no compile).

    Raises:
      ValueError: when a component rejects the shapes, or the network output
        or base sample does not have the data's event shape.
    """
    batch = self.example_batch(tuple(event_shape), cond_dim)
    event_shape = tuple(batch["x1"].shape[1:])
    key = jax.random.key(0)
    def abstract(fn, *args):
      try:
        return jax.eval_shape(fn, *args)
      except (TypeError, ValueError) as e:
        raise ValueError(f"the components cannot take {self.state_space} data of event shape "
                         f"{event_shape} and descriptor dim {cond_dim}: {e}") from e
    params = abstract(self.init, key, batch)
    x0 = abstract(lambda p: self.base.sample(p["base"], key, batch), params)
    v = abstract(lambda p: self.network(p, jnp.zeros((1,)), batch["x1"],
                                        self.cond(batch["cond"], 1.0),
                                        mask=batch.get("mask1")), params)
    # Shapes first: a wrong output shape is named as such, not as the loss's broadcast error.
    for what, shape in (("velocity network output", v.shape), ("base sample", x0.shape)):
      if tuple(shape[1:]) != event_shape:
        raise ValueError(f"{what} shape {tuple(shape[1:])} != data event shape {event_shape}.")
    abstract(lambda p: self.loss(p, key, batch, jnp.zeros((), jnp.int32)), params)
