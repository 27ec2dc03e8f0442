"""Entropic Brenier map, the out-of-sample OT map estimator (WFM Appendix A.2, Eq. 13).

Unlike the plan couplings, this is not an index pairing: it returns, for
each point x, the mapped point

    T(x) = sum_j y_j exp((g_j - c(x, y_j)) / eps) / sum_j exp((g_j - c(x, y_j)) / eps)   (Eq. 13)

from the Sinkhorn potential g between two weighted point clouds of any sizes
(Pooladian & Niles-Weed 2021). WFM uses it between point clouds of different
sizes; `rounded_matching` when the sizes agree.

ott-jax 0.6's `to_dual_potentials().transport` ignores `scale_cost` and gives
wrong maps on a scaled cost (ENVIRONMENT.md), so Eq. 13 is evaluated here in
the units Sinkhorn ran in: with the cost divided by `scale`, T uses
(g_j - c(x, y_j) / scale) / eps. ott's potentials absorb the marginal weights
(plan = exp((f + g - C) / eps)), so no log b term appears; for an in-sample
x_i, T(x_i) is exactly the barycentric projection sum_j P_ij y_j / sum_j P_ij.
With the default squared Euclidean cost, T(x) = x - grad f(x) / 2 is the
entropic Brenier map; with another `cost_fn` it is the barycentric projection
of the out-of-sample plan row.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from flowzoo.couplings import plans, rounding
from flowzoo.couplings.coupling import Coupling
from flowzoo.registry import COUPLINGS


@COUPLINGS.register("entropic_map")
class EntropicMap(Coupling):
  """Out-of-sample entropic OT map between two weighted / masked point clouds.

  Args: as `Sinkhorn` (no `pairs`); defaults epsilon 0.01 and up to 1000
    iterations on the mean-scaled cost, not WFM's 0.002 and 200 (App. E.2),
    which do not converge on it (see `RoundedMatching`).

  Call `transport(x0, x1, ...)` (also `__call__`) for the mapped points.
  """

  is_map = True  # not an index coupling: methods must not call it as (rng, x0, x1).
  accepts_cost = False

  def __init__(self, *, epsilon: float = rounding.EPSILON, relative_epsilon: str | None = None,
               scale_cost: float | str | None = "mean",
               max_iterations: int = rounding.MAX_ITERATIONS,
               threshold: float = 1e-3, inner_iterations: int = 10, lse_mode: bool = True,
               tau_a: float = 1.0, tau_b: float = 1.0, cost_fn: Callable | None = None):
    self.opts = plans.make_options(
        epsilon=epsilon, relative_epsilon=relative_epsilon, scale_cost=scale_cost,
        max_iterations=max_iterations, threshold=threshold, inner_iterations=inner_iterations,
        lse_mode=lse_mode, tau_a=tau_a, tau_b=tau_b, who="entropic_map")
    if cost_fn is not None and not callable(cost_fn):
      raise ValueError(f"entropic_map: cost_fn must be callable (x, y) -> [n, m], got {cost_fn!r}.")
    self.cost_fn = cost_fn or plans.sq_euclidean
    self._transport_jit = jax.jit(self._transport)

  def fit(self, x0: jax.Array, x1: jax.Array, *, mask0=None, mask1=None, a=None,
          b=None) -> plans.Plan:
    """Sinkhorn between `x0` `[n, *e]` and `x1` `[m, *e]` (weights `a`, `b` optional)."""
    return plans.solve(plans.cost_matrix(self.cost_fn, x0, x1), self.opts,
                       mask0=mask0, mask1=mask1, a=a, b=b)

  def apply(self, plan: plans.Plan, x: jax.Array, x1: jax.Array) -> jax.Array:
    """Eq. 13 at points `x` `[k, *e]` from a fitted plan; returns `[k, *e]`."""
    target_valid = jnp.any(plan.valid, axis=0)  # [m]: columns that carry mass.
    z = (plan.g[None, :] - self.cost_fn(x, x1) / plan.scale) / plan.epsilon
    z = jnp.where(target_valid[None, :] & jnp.isfinite(z), z, -jnp.inf)
    w = jax.nn.softmax(z, axis=1)  # [k, m]
    y = x1.reshape(x1.shape[0], -1)
    return (w @ y).reshape(x.shape[0], *x1.shape[1:])

  def _transport(self, x0, x1, x, mask0, mask1, a, b):
    x0, x1, x = (jax.lax.stop_gradient(v) for v in (x0, x1, x))
    return self.apply(self.fit(x0, x1, mask0=mask0, mask1=mask1, a=a, b=b), x, x1)

  def transport(self, x0: jax.Array, x1: jax.Array, *, x: jax.Array | None = None,
                mask0: jax.Array | None = None, mask1: jax.Array | None = None,
                a: jax.Array | None = None, b: jax.Array | None = None) -> jax.Array:
    """Maps points through the entropic map fitted from `x0` to `x1`.

    Args:
      x0: `[n, *e]` source cloud (defines the map, and is mapped if `x` is None).
      x1: `[m, *e]` target cloud; m may differ from n.
      x: `[k, *e]` points to map (out of sample); default `x0`.
      mask0, mask1: `[n]`, `[m]` bool padding masks.
      a, b: `[n]`, `[m]` non-negative weights (normalised over valid rows).
    Returns:
      `[k, *e]` mapped points (rows of padded sources are meaningless).
    """
    plans.check_inputs("entropic_map", x0, x1, mask0=mask0, mask1=mask1)
    for name, w, size in (("a", a, x0.shape[0]), ("b", b, x1.shape[0])):
      if w is not None and tuple(w.shape) != (size,):
        raise ValueError(f"entropic_map: {name} must have shape ({size},), got {tuple(w.shape)}.")
      wc = plans.concrete(w)
      if wc is not None and (wc < 0).any():
        raise ValueError(f"entropic_map: weights {name} must be >= 0.")
    if x is not None and x.shape[1:] != x0.shape[1:]:
      raise ValueError(f"entropic_map: x has event shape {x.shape[1:]}, x0 has {x0.shape[1:]}.")
    return self._transport_jit(x0, x1, x0 if x is None else x, mask0, mask1, a, b)

  __call__ = transport
