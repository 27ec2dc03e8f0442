"""Exact minibatch OT assignment (torchcfm's default OT-CFM; MixFlow's reference code per condition).

JAX has no assignment solver, so the cost matrix is computed in JAX and sent
to scipy's `linear_sum_assignment` (Jonker-Volgenant, O(n^3)) through
`jax.pure_callback`. Cost of that: every call copies the [n, m] cost matrix to
the host and blocks the XLA program until scipy returns; it cannot run on an
accelerator, cannot be vmapped in parallel and takes roughly 10 ms at n = 256
and 0.1-0.2 s at n = 1024 on this CPU (see benchmarks/couplings.py). Use
`sinkhorn` with `pairs="argmax"`/`"round"` at small epsilon for an on-device
approximation.

Groups are solved one by one on the host (exactly, no penalty cost). Within a
group with more valid sources than targets, the sources left over by the
assignment take their cheapest valid target (the pairing is then no longer
one-to-one). Padded source rows k return `(k, k mod m)`: drop them with `mask0[i]`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from flowzoo.couplings import plans
from flowzoo.couplings.coupling import Coupling
from flowzoo.registry import COUPLINGS


def assign(cost: np.ndarray, mask0: np.ndarray, mask1: np.ndarray,
           groups: np.ndarray | None) -> np.ndarray:
  """Host-side exact assignment; returns `j` `[n]` int32 (see module doc).

  Everything is converted to numpy first: running a JAX operation inside a
  host callback can deadlock against the dispatching thread (seen here when
  the coupling ran outside jit: `mask0 & ...` on jax arrays never returned).
  """
  cost = np.asarray(cost, np.float64)
  mask0, mask1 = np.asarray(mask0, bool), np.asarray(mask1, bool)
  groups = None if groups is None else np.asarray(groups)
  n, m = cost.shape
  j = (np.arange(n) % m).astype(np.int32)
  if groups is None:
    labels, g0, g1 = [0], np.zeros(n, int), np.zeros(m, int)
  else:
    labels, g0, g1 = np.unique(groups), groups, groups
  for label in labels:
    rows = np.flatnonzero(mask0 & (g0 == label))
    cols = np.flatnonzero(mask1 & (g1 == label))
    if rows.size == 0 or cols.size == 0:
      continue
    sub = cost[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(sub)
    j[rows[r]] = cols[c]
    left = np.setdiff1d(np.arange(rows.size), r)
    if left.size:
      j[rows[left]] = cols[np.argmin(sub[left], axis=1)]
  return j


@COUPLINGS.register("exact")
class Exact(Coupling):
  """Exact OT assignment via a host callback to scipy.

  Args:
    cost_fn: `cost_fn(x0, x1) -> [n, m]`; default squared Euclidean.
  """

  def __init__(self, *, cost_fn: Callable | None = None):
    if cost_fn is not None and not callable(cost_fn):
      raise ValueError(f"exact: cost_fn must be callable (x0, x1) -> [n, m], got {cost_fn!r}.")
    self.cost_fn = cost_fn or plans.sq_euclidean
    self._pair_jit = jax.jit(self._pair)

  def check(self, x0, x1, *, groups=None, mask0=None, mask1=None) -> None:
    """Raises ValueError on bad inputs (value checks need concrete data)."""
    plans.check_inputs("exact", x0, x1, groups=groups, mask0=mask0, mask1=mask1)

  def _pair(self, x0, x1, groups, mask0, mask1, cost):
    n, m = plans.leading(x0), plans.leading(x1)
    c = plans.cost_matrix(self.cost_fn, x0, x1) if cost is None else cost
    c = jax.lax.stop_gradient(c)
    mask0 = jnp.ones((n,), bool) if mask0 is None else mask0.astype(bool)
    mask1 = jnp.ones((m,), bool) if mask1 is None else mask1.astype(bool)
    out = jax.ShapeDtypeStruct((n,), jnp.int32)
    if groups is None:
      j = jax.pure_callback(lambda c, a, b: assign(c, a, b, None), out, c, mask0, mask1,
                            vmap_method="sequential")
    else:
      j = jax.pure_callback(lambda c, a, b, g: assign(c, a, b, g), out,
                            c, mask0, mask1, groups, vmap_method="sequential")
    return jnp.arange(n, dtype=jnp.int32), j

  def __call__(self, rng: jax.Array, x0, x1, *, groups: jax.Array | None = None,
               mask0: jax.Array | None = None, mask1: jax.Array | None = None,
               cost: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """`i = arange(n)` and the assigned targets `j` `[n]` (see `Sinkhorn.__call__`)."""
    del rng
    self.check(x0, x1, groups=groups, mask0=mask0, mask1=mask1)
    if cost is not None and tuple(cost.shape) != (plans.leading(x0), plans.leading(x1)):
      raise ValueError(f"exact: cost must have shape (n, m) = "
                       f"{(plans.leading(x0), plans.leading(x1))}, got {tuple(cost.shape)}.")
    return self._pair_jit(x0, x1, groups, mask0, mask1, cost)
