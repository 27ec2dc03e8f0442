"""Entropic OT plans from a cost matrix plus masks / groups (shared by all OT couplings).

One implementation serves both levels of the WFM paper: points within a pair of
point clouds (WFM Appendix A) and samples or distributions within a minibatch
(OT-CFM, Tong et al. 2023; MixFlow Algorithm 1 line 10; WFM Appendix C, Eq. 24
with a Fréchet cost). Everything is a pure function of a cost matrix `[n, m]`,
so a cost between Gaussians plugs in through `cost_fn` or a precomputed matrix.

Steps of `solve`:
  1. valid entries = mask0 x mask1 (x same group, when groups are given);
  2. the cost is divided by `scale_cost` computed over valid entries only;
  3. epsilon is absolute on the scaled cost, or relative to its mean / std;
  4. group restriction: cross-group entries get a large finite cost (zero
     kernel) so ONE Sinkhorn solves all groups at once; the target weights
     give each group the same mass on both sides (sources uniform, each
     group's targets share that group's source mass), so the balanced problem
     is exactly block diagonal and no mass has to cross groups;
  5. ott-jax Sinkhorn; the log plan (f_i + g_j - C_ij) / eps is returned with
     invalid entries set to -inf (log space: no underflow at small eps).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn as ott_sinkhorn

CostFn = Callable[[Any, Any], jax.Array]
SCALES = ("mean", "max", "median")
RELATIVE = ("mean", "std")
# Cost (in units of the scaled cost) given to cross-group entries: exp(-1e6/eps) = 0
# for any eps >= 1e-4 in float32, yet finite, so no inf - inf appears in Sinkhorn.
_CROSS_GROUP_COST = 1e6


def sq_euclidean(x: jax.Array, y: jax.Array) -> jax.Array:
  """Squared Euclidean cost `[n, m]` between rows of `x` `[n, *e]`, `y` `[m, *e]`."""
  x = x.reshape(x.shape[0], -1)
  y = y.reshape(y.shape[0], -1)
  xx = jnp.sum(x * x, -1)[:, None]
  yy = jnp.sum(y * y, -1)[None, :]
  return jnp.maximum(xx + yy - 2.0 * x @ y.T, 0.0)  # expanded form: one matmul.


def leading(tree) -> int:
  """Number of rows of a sample (array or pytree of arrays, e.g. Gaussians)."""
  return jax.tree.leaves(tree)[0].shape[0]


class Plan(NamedTuple):
  """Output of `solve`.

  Attributes:
    log_plan: `[n, m]` log of the entropic plan, -inf on invalid entries.
    f, g: `[n]`, `[m]` dual potentials of the scaled problem (ott convention:
      plan = exp((f + g - C / scale) / eps), marginal weights absorbed).
    epsilon: scalar, the absolute epsilon used on the scaled cost.
    scale: scalar, the cost was divided by it.
    valid: `[n, m]` bool, entries that may carry mass.
    converged: scalar bool (ott's flag).
    iterations: scalar int, Sinkhorn iterations run (ott's `n_iters`; a
      multiple of `inner_iterations`), to see what convergence costs.
  """

  log_plan: jax.Array
  f: jax.Array
  g: jax.Array
  epsilon: jax.Array
  scale: jax.Array
  valid: jax.Array
  converged: jax.Array
  iterations: jax.Array


class SinkhornOptions(NamedTuple):
  """Static solver options, validated once by `make_options`.

  No defaults here: each coupling's constructor holds its own (one place).
  """

  epsilon: float
  relative_epsilon: str | None
  scale_cost: float | str | None
  max_iterations: int
  threshold: float
  inner_iterations: int
  lse_mode: bool
  tau_a: float
  tau_b: float


def make_options(*, epsilon, relative_epsilon, scale_cost, max_iterations, threshold,
                 inner_iterations, lse_mode, tau_a, tau_b, who: str) -> SinkhornOptions:
  """Checks solver arguments and raises naming the bad one."""
  if not (isinstance(epsilon, (int, float)) and epsilon > 0):
    raise ValueError(f"{who}: epsilon must be a number > 0, got {epsilon!r}.")
  if relative_epsilon not in (None, *RELATIVE):
    raise ValueError(f"{who}: relative_epsilon must be None or one of {RELATIVE}, "
                     f"got {relative_epsilon!r}.")
  if isinstance(scale_cost, str):
    if scale_cost not in SCALES:
      raise ValueError(f"{who}: scale_cost must be a number > 0, None or one of {SCALES}, "
                       f"got {scale_cost!r}.")
  elif scale_cost is not None and not (isinstance(scale_cost, (int, float)) and scale_cost > 0):
    raise ValueError(f"{who}: scale_cost must be > 0, got {scale_cost!r}.")
  if int(max_iterations) < 1 or int(inner_iterations) < 1:
    raise ValueError(f"{who}: max_iterations and inner_iterations must be >= 1, got "
                     f"{max_iterations} and {inner_iterations}.")
  if threshold < 0:
    raise ValueError(f"{who}: threshold must be >= 0 (0 runs all max_iterations), "
                     f"got {threshold}.")
  for name, tau in (("tau_a", tau_a), ("tau_b", tau_b)):
    if not 0.0 < tau <= 1.0:
      raise ValueError(f"{who}: {name} must be in (0, 1] (1 = balanced), got {tau}.")
  return SinkhornOptions(float(epsilon), relative_epsilon, scale_cost, int(max_iterations),
                         float(threshold), int(inner_iterations), bool(lse_mode),
                         float(tau_a), float(tau_b))


def masked_stat(x: jax.Array, valid: jax.Array, stat: str) -> jax.Array:
  """mean / std / max / median of `x` over `valid` entries."""
  cnt = jnp.maximum(jnp.sum(valid), 1)
  if stat == "mean":
    return jnp.sum(jnp.where(valid, x, 0.0)) / cnt
  if stat == "std":
    mu = jnp.sum(jnp.where(valid, x, 0.0)) / cnt
    return jnp.sqrt(jnp.sum(jnp.where(valid, (x - mu) ** 2, 0.0)) / cnt)
  if stat == "max":
    return jnp.max(jnp.where(valid, x, -jnp.inf))
  if stat == "median":
    return jnp.nanmedian(jnp.where(valid, x, jnp.nan))
  raise ValueError(f"unknown statistic {stat!r}")


def weights(n: int, m: int, mask0, mask1, groups, a=None, b=None):
  """Marginals and valid entries.

  Without groups: `a`, `b` (default uniform) restricted to the masks and
  normalised. With groups (requires n == m, labels shared by row k of both
  sides): valid sources are uniform and each group's targets share that
  group's source mass, so every group balances on its own.

  Returns:
    a `[n]`, b `[m]` (sum 1), valid `[n, m]` bool.
  """
  mask0 = jnp.ones((n,), bool) if mask0 is None else mask0.astype(bool)
  mask1 = jnp.ones((m,), bool) if mask1 is None else mask1.astype(bool)
  a = jnp.where(mask0, 1.0 if a is None else a, 0.0)
  b = jnp.where(mask1, 1.0 if b is None else b, 0.0)
  valid = mask0[:, None] & mask1[None, :]
  if groups is not None:
    same = groups[:, None] == groups[None, :]
    valid = valid & same
    src_mass = jnp.sum(jnp.where(same, a[:, None], 0.0), axis=0)  # per target j: its group's source mass
    tgt_count = jnp.sum(jnp.where(same & mask1[:, None], b[:, None], 0.0), axis=0)
    b = jnp.where(mask1, b * src_mass / jnp.maximum(tgt_count, 1e-30), 0.0)
  return a / jnp.sum(a), b / jnp.sum(b), valid


def solve(cost: jax.Array, opts: SinkhornOptions, *, mask0=None, mask1=None, groups=None,
          a=None, b=None) -> Plan:
  """Entropic OT plan for a cost matrix (see the module docstring for the steps).

  Args:
    cost: `[n, m]` cost matrix (unscaled).
    opts: solver options.
    mask0, mask1: `[n]`, `[m]` bool, False rows/columns take no part.
    groups: `[n]` int labels (n == m), pairs only within a label.
    a, b: `[n]`, `[m]` optional non-negative weights (normalised here).
  """
  n, m = cost.shape
  cost = jax.lax.stop_gradient(cost)  # pairings are indices: never differentiate Sinkhorn.
  a, b, valid = weights(n, m, mask0, mask1, groups, a, b)
  if opts.scale_cost is None:
    scale = jnp.asarray(1.0, cost.dtype)
  elif isinstance(opts.scale_cost, str):
    scale = jnp.maximum(masked_stat(cost, valid, opts.scale_cost), 1e-12)
  else:
    scale = jnp.asarray(opts.scale_cost, cost.dtype)
  cs = cost / scale
  eps = jnp.asarray(opts.epsilon, cost.dtype)
  if opts.relative_epsilon is not None:
    eps = eps * jnp.maximum(masked_stat(cs, valid, opts.relative_epsilon), 1e-12)
  # Invalid entries (padding or other group): large finite cost = zero kernel.
  cs = jnp.where(valid, cs, _CROSS_GROUP_COST)
  if opts.lse_mode:
    geom = geometry.Geometry(cost_matrix=cs, epsilon=eps)
  else:
    geom = _KernelGeometry(cost_matrix=cs, kernel_matrix=jnp.exp(-cs / eps), epsilon=eps)
  prob = linear_problem.LinearProblem(geom, a=a, b=b, tau_a=opts.tau_a, tau_b=opts.tau_b)
  solver = ott_sinkhorn.Sinkhorn(
      lse_mode=opts.lse_mode, threshold=opts.threshold, max_iterations=opts.max_iterations,
      inner_iterations=min(opts.inner_iterations, opts.max_iterations),
      implicit_diff=None)
  out = solver(prob)
  f, g = out.f, out.g  # ott returns potentials in kernel mode too (eps * log scalings).
  log_plan = (f[:, None] + g[None, :] - cs) / eps
  log_plan = jnp.where(valid & jnp.isfinite(log_plan), log_plan, -jnp.inf)
  return Plan(log_plan, f, g, eps, scale, valid, out.converged, out.n_iters)


@jax.tree_util.register_pytree_node_class
class _KernelGeometry(geometry.Geometry):
  """Geometry whose Sinkhorn kernel updates reuse one precomputed kernel matrix.

  ott 0.6's kernel-mode update calls `apply_kernel(v, eps)`, which rebuilds
  exp(-C / eps) and raises it to eps_geom / eps on every half-iteration: two
  transcendental passes over [n, m] per update, slower than log-domain
  Sinkhorn. Our epsilon is constant (no schedule), so K is computed once and
  each update is one matrix-vector product (benchmarks/couplings.py: 100
  iterations at n = 1024 went from 710 ms to ~30 ms).
  """

  def apply_kernel(self, vec: jax.Array, eps=None, axis: int = 0) -> jax.Array:
    del eps  # constant epsilon: the precomputed kernel is exact.
    if axis == 1:
      return self._kernel_matrix @ vec
    # vec @ K, not K.T @ vec: inside Sinkhorn's loop XLA:CPU materialises the
    # transpose every iteration (measured 24x slower at n = 1024).
    return vec @ self._kernel_matrix


def cost_matrix(cost_fn: CostFn, x0, x1) -> jax.Array:
  """`cost_fn(x0, x1)` with its shape checked against the row counts."""
  n, m = leading(x0), leading(x1)
  c = cost_fn(x0, x1)
  if c.shape != (n, m):
    raise ValueError(f"cost_fn returned shape {c.shape}; expected (n, m) = {(n, m)}.")
  return c


# -- validation (static shapes always; values only when concrete) -------------------------
def concrete(x) -> np.ndarray | None:
  """`x` as numpy when its value is known (not under jit), else None."""
  if x is None or isinstance(x, jax.core.Tracer):
    return None
  return np.asarray(x)


def check_inputs(who: str, x0, x1, *, groups=None, mask0=None, mask1=None,
                 same_size: bool = False, rectangular_groups: bool = False) -> None:
  """Raises ValueError on mismatched shapes and, for concrete data, on empty sides.

  Shapes are static, so those checks also run while tracing under jit. A group
  whose sources have no target (or vice versa) can only be detected from the
  values, so that check runs when masks/groups are concrete (call the coupling
  once outside jit, or call its `check` method, to validate a data pipeline).
  """
  l0, l1 = jax.tree.leaves(x0), jax.tree.leaves(x1)
  n, m = l0[0].shape[0], l1[0].shape[0]
  if len(l0) != len(l1) or any(u.shape[1:] != v.shape[1:] for u, v in zip(l0, l1)):
    raise ValueError(f"{who}: x0 and x1 must have the same event shape; got "
                     f"{[u.shape for u in l0]} and {[v.shape for v in l1]}.")
  if same_size and n != m:
    raise ValueError(f"{who}: needs equal-size sides, got x0 with {n} rows and x1 with {m}.")
  for name, mask, size in (("mask0", mask0, n), ("mask1", mask1, m)):
    if mask is not None and tuple(mask.shape) != (size,):
      raise ValueError(f"{who}: {name} must have shape ({size},), got {tuple(mask.shape)}.")
  if groups is not None:
    if n != m and not rectangular_groups:
      raise ValueError(f"{who}: groups label row k of both x0 and x1, so they need equal "
                       f"sizes; got {n} and {m}.")
    if tuple(groups.shape) != (n,):
      raise ValueError(f"{who}: groups must have shape ({n},), got {tuple(groups.shape)}.")
  m0, m1, gr = concrete(mask0), concrete(mask1), concrete(groups)
  m0 = np.ones(n, bool) if m0 is None and mask0 is None else m0
  m1 = np.ones(m, bool) if m1 is None and mask1 is None else m1
  if m0 is None or m1 is None or (groups is not None and gr is None):
    return  # traced values: cannot be checked here.
  m0, m1 = m0.astype(bool), m1.astype(bool)
  if not m0.any() or not m1.any():
    raise ValueError(f"{who}: every source or every target is masked out "
                     f"({m0.sum()} valid sources, {m1.sum()} valid targets).")
  if gr is not None:
    for label in np.unique(gr):
      s, t = int((m0 & (gr == label)).sum()), int((m1 & (gr == label)).sum())
      if (s > 0) != (t > 0):
        raise ValueError(f"{who}: group {label} has {s} valid sources but {t} valid targets; "
                         "a group with no partner cannot be coupled within its group.")


# -- rounding a plan to a permutation (WFM Appendix A.1; see rounding.py) ----------------
# Invalid (masked / cross-group) entries rank below every valid entry but above
# already matched ones (-inf), so padded rows still pair with padded columns
# and the result stays a permutation.
_INVALID = -1e30


def greedy_round(score: jax.Array) -> jax.Array:
  """Greedy (max-first) rounding of a square score matrix to a permutation.

  Args:
    score: `[n, n]` plan or log plan (higher = preferred); -inf/nan = invalid.
  Returns:
    `[n]` int32 permutation `j`: row k is matched with column j[k].
  """
  n, m = score.shape
  if n != m:
    raise ValueError(f"greedy_round needs a square matrix, got {score.shape}.")
  s = jnp.where(jnp.isnan(score) | (score == -jnp.inf), _INVALID, score)
  rows = jnp.arange(n)

  def cond(state):
    match, _ = state
    return jnp.any(match < 0)

  def body(state):
    match, col_taken = state
    free_r = match < 0
    live = jnp.where(free_r[:, None] & ~col_taken[None, :], s, -jnp.inf)
    r_best = jnp.argmax(live, axis=1)  # first maximum: lowest column index on ties.
    c_best = jnp.argmax(live, axis=0)  # lowest row index on ties.
    mutual = free_r & (c_best[r_best] == rows)
    match = jnp.where(mutual, r_best, match)
    col_taken = col_taken.at[r_best].max(mutual)
    return match, col_taken

  match, _ = jax.lax.while_loop(
      cond, body, (jnp.full((n,), -1, jnp.int32), jnp.zeros((n,), bool)))
  return match
