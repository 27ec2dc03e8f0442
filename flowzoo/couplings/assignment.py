"""Exact linear assignment on batches of cost blocks: warm-start duals, JAX Hungarian, host solvers.

Shared by the `exact` coupling and the point-cloud EMD of
`flowzoo.metrics_pointclouds`. Every function takes a batch of `P` blocks
`cost` `[P, n, m]` with `valid` `[P, n, m]` (mask0 x mask1 x same group):
one block per population of a minibatch, or per pair of point clouds.

Why a warm start: both solvers (scipy's `linear_sum_assignment` and optax's
Hungarian) add one row at a time and search a shortest augmenting path from
zero dual potentials. On squared-Euclidean costs between a source and a
shifted target (every flow-matching minibatch) the rows compete for the same
columns and the searches grow long: scipy took 17-22 ms at n = 256 here vs
6-7 ms on a uniform random matrix. Subtracting near-optimal duals f_i + g_j
changes no optimal assignment (every row and column is matched once, so the
shift adds the same constant to every assignment's cost) but makes most rows
take their cheapest column at once: scipy 5-10x faster at n = 256-1024 on
such costs, optax's Hungarian 6-13x (benchmarks/couplings.py; less on i.i.d.
normal pairs in dim 64, whose optimum is nearly flat). The duals come from a
few iterations of kernel-mode Sinkhorn (Cuturi 2013) with a decreasing
epsilon (epsilon scaling, Schmitzer 2019) on the row/column-reduced cost:
cheap matrix-vector products, no log-domain pass. They only steer the
search: the solvers' results are exact whatever the duals are.

Non-finite costs (a diverged run) get the default pairing `k mod m` (`assign_host`).

Invalid entries: a block whose valid rows and columns are unequal in number
(masks, or a group with more sources than targets) is solved as scipy solves
a rectangular problem (every row of the smaller side is matched); the rows
left over take their cheapest valid column, and padded rows return column
`k mod m` (drop them with their mask).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import lap  # the lapx distribution (its import name is `lap`)
import numpy as np
import optax
from scipy.optimize import linear_sum_assignment

# Host solvers of `linear_assignment`. "lapx": lapx's `lapjvh` (Jonker-Volgenant,
# native), 2-4x faster than scipy on warm-started flow-matching blocks (n = 256,
# dims 16 and 189: 0.19-0.68 vs 0.74-1.18 ms, flowzoo/couplings/exact.py) and
# the same optimum on 3000 random problems including tie-heavy and rectangular
# ones (a scratch run; tests/couplings/test_assignment.py keeps 400 of them).
# "scipy": `linear_sum_assignment`, the reference.
HOST_SOLVERS = ("lapx", "scipy")

# Epsilons (relative to the mean reduced cost) of the warm start, and kernel
# iterations per epsilon. Measured at n = 256 (squared Euclidean, dim 16,
# Gaussian or 10-mode mixture sources vs shifted targets) and n = 512: without
# the last level scipy was 2-8x slower on the mixture; a fifth level or more
# iterations cost more than they saved (duals + solve 2.3-2.9 ms vs 19-37 ms cold).
WARM_EPSILONS = (0.1, 0.03, 0.01, 0.003)
WARM_ITERATIONS = 5


def invariant_duals(f: jax.Array, g: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Zeroes the duals whose shift would change the optimal assignment.

  Within a group with fewer valid sources than targets every source is
  matched, so shifting sources by f_i is harmless but shifting targets by g_j
  is not (only some targets are matched); and vice versa.

  Args:
    f, g: `[n]`, `[m]` duals; valid: `[n, m]` bool.
  Returns:
    f, g with entries zeroed where the shift is not a constant.
  """
  row_count = jnp.sum(valid, 1)  # n_t of row i's group (0 for a padded row)
  col_count = jnp.sum(valid, 0)  # n_s of column j's group
  rows_sources = jnp.max(jnp.where(valid, col_count[None, :], 0), 1)
  cols_targets = jnp.max(jnp.where(valid, row_count[:, None], 0), 0)
  f = jnp.where((row_count > 0) & (rows_sources <= row_count), f, 0.0)
  g = jnp.where((col_count > 0) & (cols_targets <= col_count), g, 0.0)
  return f, g


def warm_duals(cost: jax.Array, valid: jax.Array, *, epsilons=WARM_EPSILONS,
               iterations: int = WARM_ITERATIONS) -> tuple[jax.Array, jax.Array]:
  """Approximate dual potentials of the assignment problem on one block.

  1. f, g from the row then column minima (the Hungarian method's reduction),
     so every reduced cost C_ij - f_i - g_j is >= 0 with a zero in each
     column; the reduced cost is divided by its mean over valid entries;
  2. for each epsilon: kernel K = exp((f + g - C) / eps) on valid entries,
     `iterations` Sinkhorn updates u = a / K v, v = b / K^T u (uniform a, b
     on valid rows and columns), then f += eps log u, g += eps log v.

  Args:
    cost: `[n, m]` cost (any scale).
    valid: `[n, m]` bool.
  Returns:
    f `[n]`, g `[m]` in the cost's units, finite, made invariant
    (see `invariant_duals`).
  """
  cost = jax.lax.stop_gradient(cost)
  rows, cols = jnp.any(valid, 1), jnp.any(valid, 0)
  c = jnp.where(valid, cost, jnp.inf)
  f0 = jnp.where(rows, jnp.min(c, 1), 0.0)
  g0 = jnp.where(cols, jnp.min(c - f0[:, None], 0), 0.0)
  # Scale by the mean REDUCED cost: a shift between source and target adds a
  # separable term (-2 s.x0 + 2 s.x1 + |s|^2) that the reduction removes but
  # a mean of the raw cost would count, making every epsilon too large
  # (measured: 2.5x slower solves at a shift of 7 per dimension).
  reduced = jnp.where(valid, c - f0[:, None] - g0[None, :], 0.0)
  scale = jnp.maximum(jnp.sum(reduced) / jnp.maximum(jnp.sum(valid), 1), 1e-12)
  cs = jnp.where(valid, reduced / scale, jnp.inf)
  f, g = jnp.zeros_like(f0), jnp.zeros_like(g0)
  a = rows / jnp.maximum(jnp.sum(rows), 1)
  b = cols / jnp.maximum(jnp.sum(cols), 1)
  for eps in epsilons:
    # Reduced costs are >= about -eps log n here, so K <= 1-ish: no overflow;
    # far entries underflow to 0, which is harmless for a warm start.
    k = jnp.where(valid, jnp.exp((f[:, None] + g[None, :] - cs) / eps), 0.0)

    def update(_, uv, k=k):
      u, v = uv
      kv = k @ v
      u = jnp.where(kv > 0, a / jnp.where(kv > 0, kv, 1.0), u)
      ku = u @ k  # u @ K, not K.T @ u: no transpose per iteration (plans._KernelGeometry)
      v = jnp.where(ku > 0, b / jnp.where(ku > 0, ku, 1.0), v)
      return u, v

    # Unrolled: XLA:CPU pays a fixed cost per while-loop iteration that is
    # larger than these [n, m] matrix-vector products.
    u, v = jax.lax.fori_loop(0, iterations, update, (rows.astype(cost.dtype),
                                                     cols.astype(cost.dtype)), unroll=True)
    df = jnp.where(rows & (u > 0), eps * jnp.log(jnp.where(u > 0, u, 1.0)), 0.0)
    dg = jnp.where(cols & (v > 0), eps * jnp.log(jnp.where(v > 0, v, 1.0)), 0.0)
    f, g = f + df, g + dg
  f = f0 + jnp.where(jnp.isfinite(f), f, 0.0) * scale
  g = g0 + jnp.where(jnp.isfinite(g), g, 0.0) * scale
  return invariant_duals(f, g, valid)


def fallback_columns(cost: jax.Array, valid: jax.Array, j: jax.Array) -> jax.Array:
  """Completes an assignment `j` `[n]` (-1 = unmatched) per the module doc."""
  n, m = cost.shape
  row_ok = jnp.any(valid, 1)
  cheapest = jnp.argmin(jnp.where(valid, cost, jnp.inf), 1).astype(jnp.int32)
  matched = (j >= 0) & valid[jnp.arange(n), jnp.clip(j, 0, m - 1)]
  default = (jnp.arange(n) % m).astype(jnp.int32)
  return jnp.where(matched, j, jnp.where(row_ok, cheapest, default)).astype(jnp.int32)


def hungarian_block(cost: jax.Array, valid: jax.Array, f: jax.Array, g: jax.Array) -> jax.Array:
  """Exact assignment of one block in JAX (optax's Hungarian); returns `j` `[n]`.

  Invalid entries get a cost M larger than any difference of valid
  assignments (padded row x padded column: 0), so the solver first matches as
  many valid pairs as possible and then minimises their cost: scipy's
  rectangular semantics. float32 throughout: exact up to float32 rounding of
  the reduced costs (ties within ~1e-6 relative may resolve differently).
  """
  n, m = cost.shape
  reduced = cost - f[:, None] - g[None, :]
  lo = jnp.min(jnp.where(valid, reduced, jnp.inf))
  hi = jnp.max(jnp.where(valid, reduced, -jnp.inf))
  spread = jnp.where(jnp.isfinite(hi - lo), hi - lo, 0.0)
  big = (min(n, m) + 1) * (spread + 1.0)
  pad = ~jnp.any(valid, 1)[:, None] & ~jnp.any(valid, 0)[None, :]
  c = jnp.where(valid, reduced - jnp.where(jnp.isfinite(lo), lo, 0.0),
                jnp.where(pad, 0.0, big))
  rows, cols = optax.assignment.hungarian_algorithm(c)
  j = jnp.full((n,), -1, jnp.int32).at[rows].set(cols.astype(jnp.int32))
  return fallback_columns(cost, valid, j)


def hungarian(cost: jax.Array, valid: jax.Array, *, warm_start: bool = True) -> jax.Array:
  """`hungarian_block` over a batch `[P, n, m]` of blocks; returns `j` `[P, n]`."""
  def one(c, v):
    c = jax.lax.stop_gradient(c)
    f, g = warm_duals(c, v) if warm_start else (jnp.zeros(c.shape[0]), jnp.zeros(c.shape[1]))
    return hungarian_block(c, v, f, g)
  return jax.vmap(one)(cost, valid)


def linear_assignment(cost: np.ndarray, solver: str = "lapx") -> tuple[np.ndarray, np.ndarray]:
  """Minimum-cost matching of the smaller side of `cost` `[n, m]` (scipy's semantics).

  Returns:
    rows, cols: `[min(n, m)]` int arrays, rows increasing; row `rows[k]` is
    matched to column `cols[k]`.
  Raises:
    ValueError: unknown solver (lists the valid ones).
  """
  if solver == "scipy":
    return linear_sum_assignment(cost)
  if solver != "lapx":
    raise ValueError(f"linear_assignment: solver must be one of {HOST_SOLVERS}, got {solver!r}.")
  n, m = cost.shape
  rows, cols = lap.lapjvh(cost, extend_cost=n != m, return_cost=False)
  k = min(n, m)
  if len(rows) == k and len(np.unique(rows)) == k and len(np.unique(cols)) == k:
    return rows, cols
  # Never seen in our tests; a wrong matching must not reach training silently.
  warnings.warn(f"lapx returned an incomplete matching ({len(rows)} of {k} pairs) on a "
                f"{n}x{m} cost; solved with scipy instead.", RuntimeWarning, stacklevel=2)
  return linear_sum_assignment(cost)


def assign_host(cost: np.ndarray, valid: np.ndarray, f: np.ndarray,
                g: np.ndarray, solver: str = "lapx") -> np.ndarray:
  """Host-side exact assignment of blocks; returns `j` `[..., n]` int32.

  Pure numpy (a JAX operation inside a host callback can deadlock against the
  dispatching thread, seen here when the coupling ran outside jit). Leading
  axes are blocks (vmap of the callback adds more of them).

  Args:
    cost: `[..., n, m]` costs; valid: `[..., n, m]` bool;
    f, g: `[..., n]`, `[..., m]` invariant duals (zeros for no warm start).
    solver: a name in `HOST_SOLVERS` (`linear_assignment`).
  """
  cost = np.asarray(cost, np.float64)
  valid = np.asarray(valid, bool)
  f, g = np.asarray(f, np.float64), np.asarray(g, np.float64)
  *lead, n, m = cost.shape
  cost, valid = cost.reshape(-1, n, m), valid.reshape(-1, n, m)
  f, g = f.reshape(-1, n), g.reshape(-1, m)
  out = np.empty((cost.shape[0], n), np.int32)
  for p in range(cost.shape[0]):
    out[p] = _assign_block(cost[p], valid[p], f[p], g[p], solver)
  return out.reshape(*lead, n)


def _assign_block(cost, valid, f, g, solver) -> np.ndarray:
  n, m = cost.shape
  j = (np.arange(n) % m).astype(np.int32)  # the default pairing
  if not np.isfinite(np.sum(cost, where=valid)):  # 34 us at n = 256, no copy
    # A diverged run (NaN or inf samples). scipy would raise inside the XLA
    # program and lapx's result is undefined; any pairing lets the step finish
    # with a non-finite loss, which the trainer reports with its step number.
    return j
  if n == m and valid.all():  # one population per block (the main job): no sub-matrix copies
    return linear_assignment(cost - f[:, None] - g[None, :], solver)[1].astype(np.int32)
  todo = valid.any(1)
  while todo.any():
    # One group: the valid columns of the first unsolved row, and the rows
    # that share exactly those columns (groups x masks make a block diagonal).
    i0 = np.flatnonzero(todo)[0]
    cols = np.flatnonzero(valid[i0])
    rows = np.flatnonzero(todo & valid[:, cols[0]])
    todo[rows] = False
    sub = cost[np.ix_(rows, cols)]
    r, c = linear_assignment(sub - f[rows][:, None] - g[cols][None, :], solver)
    j[rows[r]] = cols[c]
    left = np.setdiff1d(np.arange(rows.size), r)
    if left.size:
      j[rows[left]] = cols[np.argmin(sub[left], axis=1)]
  return j
