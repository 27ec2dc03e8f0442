"""Minibatch entropic OT coupling (Tong et al. 2023 OT-CFM; MixFlow Algorithm 1 line 10).

Solves an entropic OT problem between the source and target rows of a
minibatch with ott-jax's Sinkhorn (see `plans.solve`) and draws index pairs
from the plan. CellFlow's setting is `epsilon=1.0, scale_cost="mean"`;
WFM's point-cloud matching is `rounded_matching` (rounding.py).

How pairs are drawn (`pairs=`):
  * "sample": n pairs from the flattened plan, with replacement (torchcfm
    `OTPlanSampler.sample_plan`, Tong et al. 2023);
  * "sample_no_replace": n distinct entries of the flattened plan (Gumbel top-k);
  * "row_sample": keep every source row i, draw j ~ P[i, :] / P[i, :].sum();
  * "argmax": keep every source row i, j = argmax_j P[i, j];
  * "round": greedy rounding to a permutation (WFM Appendix A.1, needs n == m).
For the row-wise modes a padded source row k returns i = k with an
arbitrary j: drop such rows with `mask0[i]`. The sampled modes only return
entries that carry mass, except "sample_no_replace" when fewer than n entries
are valid (its invalid draws come last).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from flowzoo.couplings import plans
from flowzoo.couplings.coupling import Coupling
from flowzoo.registry import COUPLINGS

PAIRS = ("sample", "sample_no_replace", "row_sample", "argmax", "round")


def draw_pairs(rng: jax.Array, log_plan: jax.Array, how: str) -> tuple[jax.Array, jax.Array]:
  """Index pairs `(i, j)`, each `[n]`, drawn from a log plan `[n, m]` (see module doc)."""
  n, m = log_plan.shape
  rows = jnp.arange(n, dtype=jnp.int32)
  if how == "sample":
    # Inverse-CDF on the flattened plan: O(nm), unlike categorical's [n, nm] Gumbel noise.
    p = jnp.exp(log_plan - jnp.max(log_plan)).reshape(-1)
    cdf = jnp.cumsum(p)
    u = jax.random.uniform(rng, (n,)) * cdf[-1]
    flat = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, n * m - 1)
    return (flat // m).astype(jnp.int32), (flat % m).astype(jnp.int32)
  if how == "sample_no_replace":
    gumbel = jax.random.gumbel(rng, (n * m,), log_plan.dtype)
    _, flat = jax.lax.top_k(log_plan.reshape(-1) + gumbel, n)
    return (flat // m).astype(jnp.int32), (flat % m).astype(jnp.int32)
  if how == "row_sample":
    safe = jnp.where(jnp.all(log_plan == -jnp.inf, 1, keepdims=True), 0.0, log_plan)
    return rows, jax.random.categorical(rng, safe, axis=1).astype(jnp.int32)
  if how == "argmax":
    return rows, jnp.argmax(log_plan, axis=1).astype(jnp.int32)
  if how == "round":
    return rows, plans.greedy_round(log_plan)
  raise ValueError(f"unknown pairs mode {how!r}; valid: {PAIRS}.")


@COUPLINGS.register("sinkhorn")
class Sinkhorn(Coupling):
  """Entropic OT coupling through ott-jax, jit-friendly, optionally group-restricted.

  Args:
    epsilon: entropic regularisation, absolute on the (scaled) cost unless
      `relative_epsilon` is set. Must be > 0.
    relative_epsilon: None, "mean" or "std": epsilon multiplies that statistic
      of the scaled cost (over valid entries).
    scale_cost: "mean", "max", "median" (of the valid cost entries), a number,
      or None: the cost is divided by it before Sinkhorn.
    max_iterations: Sinkhorn iteration cap.
    threshold: marginal-error convergence threshold (0: run all iterations).
    inner_iterations: iterations between convergence checks.
    lse_mode: log-domain updates (the default: stable at any epsilon) or
      kernel mode, which precomputes K = exp(-C / eps) once and costs one
      matrix-vector product per half-iteration (~8-10x faster than the log
      domain here, `benchmarks/couplings.py`) but underflows when
      max C / eps exceeds ~80 in float32 (e.g. eps < 0.05 on a mean-scaled
      cost with outliers); use it for eps of that order or larger.
    tau_a, tau_b: unbalanced marginal relaxation in (0, 1]; 1 = balanced.
    pairs: how pairs are drawn from the plan; one of `PAIRS`.
    cost_fn: `cost_fn(x0, x1) -> [n, m]`; default squared Euclidean on the
      flattened event. x0/x1 may be pytrees (e.g. Gaussian means and
      covariances for a Fréchet cost, WFM Eq. 24).
  """

  _who = "sinkhorn"  # name in error messages.

  def __init__(self, *, epsilon: float = 0.05, relative_epsilon: str | None = None,
               scale_cost: float | str | None = "mean", max_iterations: int = 200,
               threshold: float = 1e-3, inner_iterations: int = 10, lse_mode: bool = True,
               tau_a: float = 1.0, tau_b: float = 1.0, pairs: str = "sample",
               cost_fn: Callable | None = None):
    self.opts = plans.make_options(
        epsilon=epsilon, relative_epsilon=relative_epsilon, scale_cost=scale_cost,
        max_iterations=max_iterations, threshold=threshold, inner_iterations=inner_iterations,
        lse_mode=lse_mode, tau_a=tau_a, tau_b=tau_b, who=self._who)
    if pairs not in PAIRS:
      raise ValueError(f"{self._who}: pairs must be one of {PAIRS}, got {pairs!r}.")
    if cost_fn is not None and not callable(cost_fn):
      raise ValueError(f"{self._who}: cost_fn must be callable (x0, x1) -> [n, m], got {cost_fn!r}.")
    self.pairs = pairs
    self.cost_fn = cost_fn or plans.sq_euclidean
    self._pair_jit = jax.jit(self._pair)  # inlined when called inside an outer jit.

  def check(self, x0, x1, *, groups=None, mask0=None, mask1=None) -> None:
    """Raises ValueError on bad inputs (value checks need concrete data)."""
    plans.check_inputs(self._who, x0, x1, groups=groups, mask0=mask0, mask1=mask1,
                       same_size=self.pairs == "round")

  def plan(self, x0, x1, *, groups=None, mask0=None, mask1=None, a=None, b=None,
           cost: jax.Array | None = None) -> plans.Plan:
    """The entropic plan; `cost` `[n, m]` overrides `cost_fn(x0, x1)`."""
    c = plans.cost_matrix(self.cost_fn, x0, x1) if cost is None else cost
    return plans.solve(c, self.opts, mask0=mask0, mask1=mask1, groups=groups, a=a, b=b)

  def _pair(self, rng, x0, x1, groups, mask0, mask1, cost):
    plan = self.plan(x0, x1, groups=groups, mask0=mask0, mask1=mask1, cost=cost)
    return draw_pairs(rng, plan.log_plan, self.pairs)

  def __call__(self, rng: jax.Array, x0, x1, *, groups: jax.Array | None = None,
               mask0: jax.Array | None = None, mask1: jax.Array | None = None,
               cost: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Index pairs `(i, j)`, each `[n]`, into `x0` `[n, ...]` and `x1` `[m, ...]`.

    Args:
      rng: PRNG key (used by the sampling modes).
      x0, x1: source / target rows (arrays or pytrees with a leading row axis).
      groups: `[n]` int labels shared by x0[k] and x1[k] (n == m); pairs form
        only within a label.
      mask0, mask1: `[n]`, `[m]` bool; False rows take no part.
      cost: optional precomputed `[n, m]` cost (e.g. a Fréchet cost matrix).
    """
    self.check(x0, x1, groups=groups, mask0=mask0, mask1=mask1)
    if cost is not None and tuple(cost.shape) != (plans.leading(x0), plans.leading(x1)):
      raise ValueError(f"{self._who}: cost must have shape (n, m) = "
                       f"{(plans.leading(x0), plans.leading(x1))}, got {tuple(cost.shape)}.")
    return self._pair_jit(rng, x0, x1, groups, mask0, mask1, cost)
