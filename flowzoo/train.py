"""Optimizers, train state and the jitted, data-parallel train step.

One pure step `train_step(state, data, rng) -> (state, metrics)` with
`rng = fold_in(rng, step)`; several steps run per dispatch in a `lax.scan`.

Data parallelism (decision, see BUILD.md "Multi-device"): sharded `jit` over a
1-D mesh axis "data". The minibatch is drawn inside the step and constrained
to be split along its leading axis; parameters and optimizer state are
replicated. XLA inserts the gradient all-reduce. We chose this over
`pmap`/`shard_map` because the step is then the same program on 1 or N
devices: couplings see the whole global minibatch and random draws do not
depend on the device count, so an N-device run matches a 1-device run to float
tolerance. The host blocks on every dispatch (we read the metrics anyway),
which avoids the CPU collective deadlock noted in ENVIRONMENT.md. The mesh
spans every process's devices in a multi-process run (`flowzoo.distributed`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flowzoo import distributed
from flowzoo.data.populations import Packed, sample_batch

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential")


def make_optimizer(*, name: str = "adam", lr: float = 1e-3, schedule: str = "constant",
                   warmup_steps: int = 0, total_steps: int = 1, grad_clip: float = 0.0,
                   weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999,
                   decay_rate: float = 0.97, decay_steps: int = 1000,
                   ) -> optax.GradientTransformation:
  """optax optimizer from config fields; `grad_clip` 0 disables clipping.

  Schedule "exponential" multiplies lr by `decay_rate` every `decay_steps`
  steps, smoothly (WFM App. E.1: 0.97 every 1000 steps); the other schedules
  ignore both fields.
  """
  if name not in OPTIMIZERS:
    raise KeyError(f"Unknown optimizer {name!r}; valid: {OPTIMIZERS}.")
  if schedule not in SCHEDULES:
    raise KeyError(f"Unknown schedule {schedule!r}; valid: {SCHEDULES}.")
  # NaN passes every range check below (nan <= 0 is False), and an infinite
  # lr turns the parameters into inf/NaN after one update.
  for field, v in (("lr", lr), ("grad_clip", grad_clip), ("weight_decay", weight_decay),
                   ("b1", b1), ("b2", b2), ("decay_rate", decay_rate)):
    if not math.isfinite(v):
      raise ValueError(f"optimizer {field} must be a finite number, got {v}.")
  if lr <= 0:
    raise ValueError(f"optimizer lr must be > 0, got {lr}.")
  if grad_clip < 0:  # a negative max norm would flip the gradient's sign
    raise ValueError(f"optimizer grad_clip must be >= 0 (0 = no clipping), got {grad_clip}.")
  if warmup_steps < 0:
    raise ValueError(f"optimizer warmup_steps must be >= 0, got {warmup_steps}.")
  if schedule == "exponential" and not (0 < decay_rate <= 1 and decay_steps >= 1):
    raise ValueError(f"exponential schedule needs 0 < decay_rate <= 1 and decay_steps >= 1, "
                     f"got {decay_rate} and {decay_steps}.")
  if schedule == "constant":
    sched = optax.constant_schedule(lr)
  elif schedule == "cosine":
    sched = optax.cosine_decay_schedule(lr, max(total_steps, 1))
  elif schedule == "exponential":
    sched = optax.exponential_decay(lr, transition_steps=decay_steps, decay_rate=decay_rate)
  else:
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup_steps, 1),
                                               max(total_steps, warmup_steps + 1))
  if name == "adam":
    opt = optax.adam(sched, b1=b1, b2=b2)
  elif name == "adamw":
    opt = optax.adamw(sched, b1=b1, b2=b2, weight_decay=weight_decay)
  else:
    opt = optax.sgd(sched)
  return optax.chain(optax.clip_by_global_norm(grad_clip), opt) if grad_clip else opt


@flax.struct.dataclass
class TrainState:
  """Everything a run checkpoints.

  Attributes:
    step: scalar int, number of updates done.
    params: method parameters, one entry per group (plus fixed extras).
    opt_state: group -> optax state.
    ema: exponential moving average of `params`, used for sampling.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  ema: Any


def _select(pred, new, old):
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


class Trainer:
  """Builds and jits the train step of a method.

  Args:
    method: a `flowzoo.methods.Method`.
    optimizers: group name -> optax transformation (one per `method.groups`).
    batch_size: global minibatch size B (split across devices).
    populations_per_batch: conditions per minibatch (see `sample_batch`).
    ema_decay: EMA decay of the sampling parameters (0 keeps a copy).
    mesh: device mesh with axis "data"; defaults to all devices.
    unroll: trace a dispatch's steps one after another instead of looping over
      them in a `lax.scan`. XLA:CPU runs convolutions inside a loop about 10x
      slower (measured: a 2-D U-Net train step, 16 crops of 32 x 32, 2.7 s in
      a scan of any length, 0.29 s unrolled), so U-Net runs on CPU take one
      step per dispatch, unrolled; compile time grows with the steps per dispatch.

  Learning-rate schedules count each group's own updates (decision): an
  inactive group's whole optimizer state is frozen, its schedule counter
  included, so the group resumes exactly where it stopped. MixFlow's base
  (one update in k + 1 during the alternating phase) thus spends its few
  hundred updates near the start of a schedule sized for `total_steps`
  (cosine: 98.7 % of the peak lr at its last update in mixflow_letters).
  The results pages were measured this way. A base that should decay over
  its own updates takes `optim_overrides.base.schedule=exponential` with a
  `decay_steps` sized to them; the reference code's schedule (and the
  `:paper` presets') is constant, which the choice does not affect.
  """

  def __init__(self, method, optimizers: Mapping[str, optax.GradientTransformation], *,
               batch_size: int, populations_per_batch: int, ema_decay: float = 0.999,
               mesh: Mesh | None = None, unroll: bool = False):
    missing = set(method.groups) - set(optimizers)
    if missing:
      raise KeyError(f"no optimizer for parameter group(s) {sorted(missing)}.")
    self.method, self.optimizers = method, dict(optimizers)
    self.mesh = mesh or Mesh(np.array(jax.devices()), ("data",))
    n_dev = self.mesh.devices.size
    if batch_size % n_dev:
      raise ValueError(f"batch_size={batch_size} must be divisible by the {n_dev} devices.")
    if batch_size % populations_per_batch:
      raise ValueError(f"batch_size={batch_size} is not a multiple of "
                       f"populations_per_batch={populations_per_batch}.")
    self.batch_size, self.ppb = batch_size, populations_per_batch
    self.ema_decay = float(ema_decay)
    self.unroll = bool(unroll)
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self._multi = jax.jit(self._multi_step, static_argnums=4, donate_argnums=0)
    self._multi_b = jax.jit(self._multi_batches, donate_argnums=0)

  # -- state ------------------------------------------------------------------
  def sample(self, data: Packed, ids: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
    batch = sample_batch(data, rng, ids, batch_size=self.batch_size,
                         populations_per_batch=self.ppb)
    return jax.lax.with_sharding_constraint(batch, self.batch_sharding)

  def init(self, rng: jax.Array, data: Packed, ids: jax.Array) -> TrainState:
    """Initial state, replicated over the mesh."""
    @functools.partial(jax.jit, out_shardings=self.replicated)
    def init(rng):
      d_rng, p_rng = jax.random.split(rng)
      return self._init_state(p_rng, self.sample(data, ids, d_rng))
    return init(rng)

  def init_from_batch(self, rng: jax.Array, batch: dict[str, np.ndarray]) -> TrainState:
    """Initial state from an example host batch (streamed data), replicated."""
    batch = self.shard_batch(batch)
    init = jax.jit(lambda r, b: self._init_state(jax.random.split(r)[1], b),
                   out_shardings=self.replicated)
    return init(rng, batch)

  def _init_state(self, p_rng, batch) -> TrainState:
    params = self.method.init(p_rng, batch)
    opt = {g: self.optimizers[g].init(params[g]) for g in self.method.groups}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt, ema=params)

  def abstract_state(self, rng, data, ids):
    """Shapes/shardings of the state, for checkpoint restore (no compute)."""
    return self._abstract(jax.eval_shape(lambda r: self.init(r, data, ids), rng))

  def abstract_state_from_batch(self, rng, batch):
    """`abstract_state` for streamed data (`init_from_batch`)."""
    return self._abstract(jax.eval_shape(lambda r: self.init_from_batch(r, batch), rng))

  def _abstract(self, abstract):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated),
                        abstract)

  # -- step -------------------------------------------------------------------
  def train_step(self, state: TrainState, data: Packed, ids: jax.Array,
                 rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update on a minibatch drawn in the step. `rng` is the run key; the step folds itself in."""
    rng = jax.random.fold_in(rng, state.step)
    d_rng, l_rng = jax.random.split(rng)
    return self._update(state, self.sample(data, ids, d_rng), l_rng)

  def train_step_on(self, state: TrainState, batch: dict[str, jax.Array],
                    rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update on a given global batch (streamed data: `run_batches`).

    The loss key is the one `train_step` would use at this step.
    """
    _, l_rng = jax.random.split(jax.random.fold_in(rng, state.step))
    return self._update(state, jax.lax.with_sharding_constraint(batch, self.batch_sharding),
                        l_rng)

  def _grads(self, params, l_rng, batch, step, active):
    """`((loss, metrics), grads)` of `method.loss`.

    A method whose groups take turns (`exclusive_groups`: exactly one active
    per step, MixFlow's planner) differentiates only the active group, in a
    `lax.switch` branch: the other group's gradient is zero anyway (it does
    not reach the loss that step), and its backward pass, which XLA would
    otherwise still run, becomes dead code in the branch (MixFlow's
    `active_group_grads`).
    """
    value_and_grad = jax.value_and_grad(self.method.loss, has_aux=True)
    groups = self.method.groups
    if len(groups) < 2 or not self.method.exclusive_groups:
      return value_and_grad(params, l_rng, batch, step)

    def only(group):
      def branch(params):
        out, grads = value_and_grad(params, l_rng, batch, step)
        return out, {g: v if g == group else jax.tree.map(jnp.zeros_like, v)
                     for g, v in grads.items()}
      return branch
    index = sum(i * active[g].astype(jnp.int32) for i, g in enumerate(groups))
    return jax.lax.switch(index, [only(g) for g in groups], params)

  def _update(self, state, batch, l_rng):
    active = self.method.active(state.step)
    (loss, metrics), grads = self._grads(state.params, l_rng, batch, state.step, active)
    params, opt_state = dict(state.params), dict(state.opt_state)
    for g in self.method.groups:
      updates, new_opt = self.optimizers[g].update(grads[g], state.opt_state[g], state.params[g])
      new_params = optax.apply_updates(state.params[g], updates)
      # An inactive group keeps params and optimizer moments bit-for-bit.
      params[g] = _select(active[g], new_params, state.params[g])
      opt_state[g] = _select(active[g], new_opt, state.opt_state[g])
    # ema <- decay * ema + (1 - decay) * params. Written with the EMA as optax's
    # "new" argument: the same expression, in the same order, as flowzoo's
    # earlier hand-written update, so recorded results reproduce bit for bit
    # (the other argument order rounds differently where XLA fuses a * b + c).
    ema = optax.incremental_update(state.ema, params, step_size=self.ema_decay)
    trained = self.method.groups
    metrics = dict(metrics, loss=loss,
                   grad_norm=optax.tree_utils.tree_norm({g: grads[g] for g in trained}),
                   param_norm=optax.tree_utils.tree_norm({g: params[g] for g in trained}))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema=ema), metrics

  def _multi_step(self, state, data, ids, rng, num_steps):
    def body(s, _):
      return self.train_step(s, data, ids, rng)
    return self._loop(body, state, None, num_steps)

  def _multi_batches(self, state, batches, rng):
    length = len(next(iter(batches.values())))
    return self._loop(lambda s, b: self.train_step_on(s, b, rng), state, batches, length)

  def _loop(self, body, state, xs, length: int):
    """`lax.scan(body, state, xs)`, or with `unroll` the same steps traced one after another
    (no XLA loop at all; `lax.scan(unroll=True)` still kept the slow path at length 1)."""
    if not self.unroll:
      return jax.lax.scan(body, state, xs, length=length)
    outs = []
    for i in range(length):
      state, m = body(state, None if xs is None else jax.tree.map(lambda a: a[i], xs))
      outs.append(m)
    return state, jax.tree.map(lambda *a: jnp.stack(a), *outs)

  def run(self, state: TrainState, data: Packed, ids: jax.Array, rng: jax.Array,
          num_steps: int) -> tuple[TrainState, dict[str, np.ndarray]]:
    """Runs `num_steps` updates in one dispatch; blocks and returns metrics.

    Returns:
      the new state and metrics as numpy arrays of shape `[num_steps]`.
    Raises:
      FloatingPointError naming the first step whose loss is not finite.
    """
    first = int(state.step)
    state, metrics = self._multi(state, data, ids, rng, num_steps)
    return state, _checked(metrics, first)

  def run_batches(self, state: TrainState, batches: dict[str, np.ndarray],
                  rng: jax.Array) -> tuple[TrainState, dict[str, np.ndarray]]:
    """`run` on streamed data: one update per leading entry of `batches`.

    Args:
      batches: host arrays `[S, B_local, ...]`, this process's rows of S
        global batches (all of them in a 1-process run), e.g. from
        `flowzoo.data.crops_pipeline`.
    Returns:
      the new state and metrics `[S]`, as `run`.
    """
    first = int(state.step)
    state, metrics = self._multi_b(state, self.shard_batch(batches, stacked=True), rng)
    return state, _checked(metrics, first)

  def shard_batch(self, batch: dict[str, np.ndarray], stacked: bool = False):
    """This process's rows of a global batch (`[B_local, ...]`, or `[S, B_local, ...]`
    when `stacked`), placed split along the batch axis of the mesh."""
    sharding = NamedSharding(self.mesh, P(None, "data") if stacked else P("data"))
    for k, v in batch.items():
      rows = np.shape(v)[1 if stacked else 0] * jax.process_count()
      if rows != self.batch_size:
        raise ValueError(f"batch[{k!r}] has {rows} rows over {jax.process_count()} process(es); "
                         f"the trainer's global batch_size is {self.batch_size}.")
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)

  def replicate(self, tree):
    """Host arrays, the same in every process, replicated over the mesh."""
    return distributed.replicate(tree, self.replicated)


def _checked(metrics, first: int) -> dict[str, np.ndarray]:
  """Host metrics of a dispatch starting at step `first`; raises on a non-finite loss."""
  metrics = jax.device_get(metrics)  # blocks: see the module docstring.
  bad = np.flatnonzero(~np.isfinite(metrics["loss"]))
  if bad.size:
    raise FloatingPointError(
        f"non-finite loss {metrics['loss'][bad[0]]} at step {first + int(bad[0])} "
        f"(grad norm {metrics['grad_norm'][bad[0]]}).")
  return metrics
