"""ODE integration of learned velocity fields.

A flow-matching model defines the ODE dx/dt = v(t, x) whose flow carries the
source (t = 0) to the target (t = 1) (Lipman et al., 2023, "Flow Matching for
Generative Modeling", eq. 1). Sampling integrates it with either

* a fixed-step Runge--Kutta method registered in `SOLVERS` ("euler",
  "midpoint", "heun", "rk4"; Hairer, Norsett & Wanner, "Solving Ordinary
  Differential Equations I", sec. II.1), run in one `jax.lax.fori_loop`, or
* an adaptive embedded pair from diffrax ("dopri5": Dormand & Prince, 1980;
  "tsit5": Tsitouras, 2011) with a PID step-size controller.

Classifier-free guidance of a field lives in `flowzoo.guidance`.

Conventions: `velocity_fn(t, x) -> v` with `t` of shape `[batch]` (one value
repeated) and `x` any pytree whose leaves have leading dim `batch`; `v` has
the structure of `x`. Fixed-step solvers and the adaptive ones both accept
pytree states (e.g. a Gaussian as `(mean [batch, d], cov [batch, d, d])`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from flowzoo.registry import SOLVERS

PyTree = Any
VelocityFn = Callable[[jax.Array, PyTree], PyTree]


def _velocity(velocity_fn: VelocityFn, t: jax.Array, x: PyTree) -> PyTree:
  """Calls `velocity_fn` with the scalar time `t` broadcast to `[batch]`."""
  batch = jax.tree_util.tree_leaves(x)[0].shape[0]
  return velocity_fn(jnp.broadcast_to(t, (batch,)), x)


def _axpy(x: PyTree, a: jax.Array, *terms: tuple[float, PyTree]) -> PyTree:
  """x + a * sum_i w_i v_i over pytrees, `terms` being the pairs (w_i, v_i)."""
  ws, vs = zip(*terms)

  def leaf(xl, *vl):
    # Cast back so the loop carry keeps its dtype whatever `v` returns.
    return (xl + a * sum(w * v for w, v in zip(ws, vl))).astype(xl.dtype)

  return jax.tree_util.tree_map(leaf, x, *vs)


# 1. Fixed-step solvers: `step(velocity_fn, t, x, dt) -> x(t + dt)`, t scalar.


@SOLVERS.register("euler")
def euler_step(velocity_fn: VelocityFn, t: jax.Array, x: PyTree, dt: jax.Array) -> PyTree:
  """Forward Euler, order 1: x + dt v(t, x)."""
  return _axpy(x, dt, (1.0, _velocity(velocity_fn, t, x)))


@SOLVERS.register("midpoint")
def midpoint_step(velocity_fn: VelocityFn, t: jax.Array, x: PyTree, dt: jax.Array) -> PyTree:
  """Explicit midpoint, order 2: the slope at a half Euler step."""
  k1 = _velocity(velocity_fn, t, x)
  k2 = _velocity(velocity_fn, t + dt / 2, _axpy(x, dt / 2, (1.0, k1)))
  return _axpy(x, dt, (1.0, k2))


@SOLVERS.register("heun")
def heun_step(velocity_fn: VelocityFn, t: jax.Array, x: PyTree, dt: jax.Array) -> PyTree:
  """Heun (explicit trapezoid), order 2: mean of the slopes at both ends."""
  k1 = _velocity(velocity_fn, t, x)
  k2 = _velocity(velocity_fn, t + dt, _axpy(x, dt, (1.0, k1)))
  return _axpy(x, dt, (0.5, k1), (0.5, k2))


@SOLVERS.register("rk4")
def rk4_step(velocity_fn: VelocityFn, t: jax.Array, x: PyTree, dt: jax.Array) -> PyTree:
  """Classical Runge--Kutta, order 4."""
  k1 = _velocity(velocity_fn, t, x)
  k2 = _velocity(velocity_fn, t + dt / 2, _axpy(x, dt / 2, (1.0, k1)))
  k3 = _velocity(velocity_fn, t + dt / 2, _axpy(x, dt / 2, (1.0, k2)))
  k4 = _velocity(velocity_fn, t + dt, _axpy(x, dt, (1.0, k3)))
  return _axpy(x, dt, (1 / 6, k1), (1 / 3, k2), (1 / 3, k3), (1 / 6, k4))


# 2. Adaptive solvers (diffrax), registered as `AdaptiveSolver` instances so
# `integrate` can tell them from step functions.


@dataclasses.dataclass(frozen=True)
class AdaptiveSolver:
  """A diffrax adaptive solver usable as `integrate(..., solver=name)`.

  Attributes:
    make: zero-argument constructor of the diffrax solver, e.g. `diffrax.Dopri5`.
  """

  make: Callable[[], diffrax.AbstractAdaptiveSolver]

  def solve(self, velocity_fn: VelocityFn, x0: PyTree, *, t0: float, t1: float,
            save_ts: np.ndarray | None, rtol: float, atol: float,
            max_steps: int) -> tuple[PyTree, PyTree | None]:
    """Integrates from t0 to t1; returns (x(t1), x(save_ts) or None).

    Raises at run time (diffrax's `throw=True`) if `max_steps` is exhausted.
    """
    term = diffrax.ODETerm(lambda t, y, args: _velocity(velocity_fn, t, y))
    saveat = diffrax.SaveAt(t1=True) if save_ts is None else diffrax.SaveAt(
        ts=jnp.asarray(save_ts), t1=True)
    sol = diffrax.diffeqsolve(
        term, self.make(), t0, t1, dt0=None, y0=x0, saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps)
    # With SaveAt(ts=..., t1=True) diffrax stacks the ts values, then x(t1).
    x1 = jax.tree_util.tree_map(lambda y: y[-1], sol.ys)
    if save_ts is None:
      return x1, None
    traj = jax.tree_util.tree_map(lambda y: y[:-1], sol.ys)
    # diffrax fills ts from its dense interpolant, which at the endpoints is only
    # equal to x0 / x(t1) up to rounding; make the endpoints exact.
    for k, t, x in ((0, t0, x0), (len(save_ts) - 1, t1, x1)):
      if save_ts[k] == t:
        traj = jax.tree_util.tree_map(lambda b, a, k=k: b.at[k].set(a), traj, x)
    return x1, traj


SOLVERS.register("dopri5")(AdaptiveSolver(diffrax.Dopri5))
SOLVERS.register("tsit5")(AdaptiveSolver(diffrax.Tsit5))


# 3. Driver.


def _check_args(num_steps: int, save_at: Sequence[float] | None, t0: float, t1: float,
                rtol: float, atol: float, max_steps: int) -> np.ndarray | None:
  """Validates the static arguments in Python; returns save_at as float64."""
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}.")
  if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
    raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}.")
  try:
    t0, t1 = float(t0), float(t1)
  except (TypeError, jax.errors.ConcretizationTypeError) as e:
    raise ValueError(f"t0 and t1 must be concrete Python floats: {e}") from None
  if not (np.isfinite(t0) and np.isfinite(t1)) or t0 == t1:
    raise ValueError(f"t0 and t1 must be finite and distinct, got t0={t0}, t1={t1}.")
  if not (rtol > 0 and atol > 0):
    raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}.")
  if save_at is None:
    return None
  try:
    ts = np.asarray(save_at, dtype=np.float64)
  except (TypeError, jax.errors.TracerArrayConversionError) as e:
    raise ValueError(f"save_at must be a concrete sequence of floats: {e}") from None
  if ts.ndim != 1 or ts.size == 0:
    raise ValueError(f"save_at must be a non-empty 1-D sequence of times, got shape {ts.shape}.")
  lo, hi = min(t0, t1), max(t0, t1)
  outside = ts[(ts < lo) | (ts > hi) | ~np.isfinite(ts)]
  if outside.size:
    raise ValueError(f"save_at times {outside.tolist()} lie outside [{lo}, {hi}] "
                     f"(t0={t0}, t1={t1}).")
  # "Sorted" means ordered in the direction of integration (t1 < t0 runs backward).
  if np.any(np.diff(ts) * np.sign(t1 - t0) < 0):
    raise ValueError(f"save_at must be sorted from t0={t0} towards t1={t1}, got {ts.tolist()}.")
  return ts


def _grid(num_steps: int, t0: float, t1: float, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Time grid hitting every knot exactly; returns (grid times, knot index -> grid index).

  Each segment between consecutive knots gets round(num_steps * its share of
  [t0, t1]) >= 1 uniform steps, so the grid is uniform with exactly
  `num_steps` steps when there are no interior knots, and the total stays close
  to `num_steps` otherwise (at least one step per segment).
  """
  bounds = np.unique(np.concatenate([[t0, t1], knots]))
  if t1 < t0:
    bounds = bounds[::-1]
  pieces, index = [np.array([t0])], {t0: 0}
  for a, b in zip(bounds[:-1], bounds[1:]):
    n = max(1, int(round(num_steps * (b - a) / (t1 - t0))))
    pieces.append(np.linspace(a, b, n + 1)[1:])
    index[b] = index[a] + n
  grid = np.concatenate(pieces)
  return grid, np.array([index[k] for k in knots], dtype=np.int64)


def _fori(n: int, body, init, unroll: bool):
  """`lax.fori_loop(0, n, body, init)`, or its steps traced in sequence with `unroll`."""
  if not unroll:
    return jax.lax.fori_loop(0, n, body, init)
  for i in range(n):
    init = body(i, init)
  return init


def integrate(velocity_fn: VelocityFn, x0: PyTree, *, solver: str = "euler",
              num_steps: int = 32, save_at: Sequence[float] | None = None,
              t0: float = 0.0, t1: float = 1.0, rtol: float = 1e-5, atol: float = 1e-5,
              max_steps: int = 4096, post_step: Callable[[PyTree], PyTree] | None = None,
              unroll: bool = False) -> PyTree | tuple[PyTree, PyTree]:
  """Integrates dx/dt = velocity_fn(t, x) from t0 to t1.

  Fixed-step solvers take uniform steps in one `lax.fori_loop` (a `scan`, so
  reverse-mode differentiable). With `save_at`, the interval is cut at the
  save times and each piece gets steps in proportion to its length (at least
  one), so every save time, t0 and t1 included, is a grid point and the saved
  states are exactly the solver's states there, not interpolations. The total
  step count can then differ slightly from `num_steps`. Adaptive solvers
  ("dopri5", "tsit5") ignore `num_steps` and use diffrax's dense save times.

  All arguments but `velocity_fn` and `x0` are static: they are validated in
  Python before anything is traced, and `integrate` may be called under
  `jax.jit` with `velocity_fn` closed over.

  Args:
    velocity_fn: `v(t, x)` with `t` of shape `[batch]`; returns `x`'s structure.
    x0: state at t0, a pytree of arrays `[batch, ...]`.
    solver: a name in `SOLVERS` ("euler", "midpoint", "heun", "rk4", "dopri5", "tsit5").
    num_steps: number of fixed steps over [t0, t1] (fixed-step solvers).
    save_at: times ordered from t0 to t1 at which to also return the state.
    t0: start time (0 = source).
    t1: end time (1 = target); t1 < t0 integrates backward.
    rtol: relative tolerance (adaptive solvers).
    atol: absolute tolerance (adaptive solvers).
    max_steps: step budget of adaptive solvers; exceeding it raises at run time.
    unroll: fixed-step solvers trace their steps one after another instead of
      looping (XLA:CPU runs convolutions ~10x slower inside a loop, see
      `flowzoo.train.Trainer`); compile time grows with `num_steps`.
    post_step: `x -> x` applied to the state after every fixed step (e.g. a
      projection back onto a constraint set, as WFM's reference code does with
      its Euclidean BW-FM baselines); fixed-step solvers only. Saved states
      are the projected ones.

  Returns:
    `x1`, the state at t1 with `x0`'s structure; or, if `save_at` is given,
    `(x1, trajectory)` with trajectory leaves `[len(save_at), batch, ...]`.

  Raises:
    KeyError: unknown solver (lists the valid names).
    ValueError: bad num_steps, max_steps, tolerances, times or save_at, or
      `post_step` with an adaptive solver.
  """
  step = SOLVERS.get(solver)
  if post_step is not None:
    if isinstance(step, AdaptiveSolver):
      raise ValueError(f"post_step needs a fixed-step solver (euler, midpoint, heun, rk4); "
                       f"{solver!r} is adaptive and chooses its own steps.")
    base_step = step

    def step(velocity_fn, t, x, dt):
      return post_step(base_step(velocity_fn, t, x, dt))
  save_ts = _check_args(num_steps, save_at, t0, t1, rtol, atol, max_steps)
  t0, t1 = float(t0), float(t1)
  # Save each distinct time once, then gather, so repeated times cost nothing.
  uniq, inverse = (None, None) if save_ts is None else np.unique(save_ts, return_inverse=True)
  if save_ts is not None and t1 < t0:
    uniq, inverse = uniq[::-1], len(uniq) - 1 - inverse

  if isinstance(step, AdaptiveSolver):
    x1, traj = step.solve(velocity_fn, x0, t0=t0, t1=t1, save_ts=uniq, rtol=rtol,
                          atol=atol, max_steps=max_steps)
  else:
    grid, save_idx = _grid(num_steps, t0, t1, np.zeros(0) if uniq is None else uniq)
    dtype = jnp.result_type(float)
    ts, dts = jnp.asarray(grid[:-1], dtype), jnp.asarray(np.diff(grid), dtype)
    if uniq is None:
      x1 = _fori(len(dts), lambda i, x: step(velocity_fn, ts[i], x, dts[i]), x0, unroll)
      traj = None
    else:
      # slot[g] = which saved time grid point g is; len(uniq) (out of range,
      # dropped by the scatter) for grid points that are not saved.
      slot = np.full(len(grid), len(uniq), np.int32)
      slot[save_idx] = np.arange(len(uniq))
      slot = jnp.asarray(slot)

      def record(buf, g, x):
        return jax.tree_util.tree_map(lambda b, a: b.at[slot[g]].set(a, mode="drop"), buf, x)

      def body(i, carry):
        x, buf = carry
        x = step(velocity_fn, ts[i], x, dts[i])
        return x, record(buf, i + 1, x)

      buf = jax.tree_util.tree_map(lambda a: jnp.zeros((len(uniq), *a.shape), a.dtype), x0)
      x1, traj = _fori(len(dts), body, (x0, record(buf, 0, x0)), unroll)

  if save_ts is None:
    return x1
  if len(uniq) != len(save_ts):
    traj = jax.tree_util.tree_map(lambda b: b[jnp.asarray(inverse)], traj)
  return x1, traj
