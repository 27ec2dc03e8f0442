"""Exact minibatch OT assignment (torchcfm's default OT-CFM; MixFlow Algorithm 1, line 10).

Three solvers of the same problem (`flowzoo/couplings/assignment.py`):

* `solver="lapx"` (default; the fastest here on CPU) and `solver="scipy"`:
  the cost blocks and warm-start duals are computed in JAX and sent to a host
  solver through one `jax.pure_callback` per call: lapx's `lapjvh` (a
  Jonker-Volgenant solver) or scipy's `linear_sum_assignment`. Every call
  copies the blocks to the host and blocks the XLA program until the solver
  returns, so it cannot run on an accelerator. lapjvh solves warm-started
  n = 256 blocks 2-4x faster than scipy (0.19-0.68 vs 0.74-1.18 ms over
  two runs, 30 problems each of Gaussian sources vs shifted-Gaussian,
  10-mode-mixture and i.i.d. targets in dims 16 and 189), with the same
  optimum (tests/couplings/test_assignment.py checks tie-heavy, rectangular
  and flow-matching costs). Where the optimum is unique both return the same
  pairs; repeated target rows (a well drawn twice) may be matched the other
  way round, which trains identically: the main job's three eval.json files
  are bit-identical under both solvers. Repeated source rows (an empirical
  base drawing a cell twice) could swap their targets, the same optimal cost
  in another row order. scipy stays selectable as the reference. (The
  older `lap.lapjv`, a different implementation, was not taken: its tracker
  has open reports of non-convergence on float costs, gatagat/lap#4, #19.)
  Packing the four callback arguments into one array measured no change in
  the step (benchmarks/mixflow_step.py), so they stay separate.
* `solver="hungarian"`: optax's Hungarian algorithm inside the program, vmapped
  over blocks; no host round-trip, so the choice on GPU/TPU and under
  `vmap`. float32: exact up to float32 rounding of the costs.

All three start from dual potentials of a few annealed Sinkhorn iterations
(`warm_start`), which changes no result and makes them 5-13x faster on
flow-matching costs at n = 256-1024 (benchmarks/couplings.py); the main
job's exact-coupled CFM step went from 4.7x to 1.9x an independent step
(benchmarks/mixflow_step.py, loaded machine), the in-JAX Hungarian being as
fast as scipy there; with lapx, 1.70x vs scipy's 2.25x in a slow phase of
the machine and 1.72x vs 2.00x at full speed (see that docstring).

Groups: pairs are made only within a group (`groups[k]` labels row k of both
x0 and x1), exactly, per group, with no penalty cost. Within a group with more
valid sources than targets, the sources left over by the assignment take
their cheapest valid target (the pairing is then no longer one-to-one).
Padded source rows k return `(k, k mod m)`: drop them with `mask0[i]`.

Blocks (`group_size`): `flowzoo.data.populations.sample_batch` lays a
minibatch out as `populations_per_batch` contiguous runs of
`batch_size // populations_per_batch` rows, one population each. With
`group_size` set to that run length (and groups given), only the diagonal
[group_size, group_size] cost blocks are computed and solved, batched: a
population drawn twice in one minibatch is then paired within each run
separately. Without it the full [n, m] cost is computed and groups are
solved wherever their rows are (any layout). `flowzoo.experiment.setup` wires
`population_rows` (the run length of its minibatch layout) in, which sets
`group_size` when the config leaves it None: with 4 populations of 64 rows
the full path cost mixflow_letters.py:runlocal 3x the step of an independent
coupling (8.2 vs 2.7 ms per 256-row coupling in a scan, loaded machine). One
row per population (mixed batches) keeps the full path, so that the rows of
a condition drawn twice are still paired with each other.

Pairing semantics under data parallelism: `flowzoo.train.Trainer` jits one
global step over a "data" mesh (no `shard_map`), so the coupling sees the
global minibatch: rows are paired within their population across device
shards, and an N-device run pairs exactly as a 1-device run
(`tests/couplings/test_exact_sharded.py`). Under `jax.shard_map` the coupling
would see one shard: the pairing would be per device shard within
populations, an exact OT pairing of each shard's rows only.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from flowzoo.couplings import assignment, plans
from flowzoo.couplings.coupling import Coupling
from flowzoo.registry import COUPLINGS

SOLVERS = (*assignment.HOST_SOLVERS, "hungarian")


@COUPLINGS.register("exact")
class Exact(Coupling):
  """Exact OT assignment (see the module docstring).

  Args:
    cost_fn: `cost_fn(x0, x1) -> [n, m]`; default squared Euclidean.
    solver: "lapx" (host callback, CPU default), "scipy" (host callback,
      the reference) or "hungarian" (in JAX: GPU/TPU, vmap).
    group_size: length of the contiguous runs of rows that hold one group
      (sample_batch's layout: batch_size // populations_per_batch); pairs are
      made within each run and only its cost block is computed. None: any
      layout, full cost matrix.
    warm_start: start the solver from approximate duals (no effect on the
      result, only on the time).
    population_rows: wired by the framework (never a config field): rows per
      population in the trainer's minibatch layout; the group_size when
      group_size is None and it is >= 2.
  """

  def __init__(self, *, cost_fn: Callable | None = None, solver: str = "lapx",
               group_size: int | None = None, warm_start: bool = True,
               population_rows: int | None = None):
    if cost_fn is not None and not callable(cost_fn):
      raise ValueError(f"exact: cost_fn must be callable (x0, x1) -> [n, m], got {cost_fn!r}.")
    if solver not in SOLVERS:
      raise ValueError(f"exact: solver must be one of {SOLVERS}, got {solver!r}.")
    if group_size is not None and (int(group_size) != group_size or group_size < 1):
      raise ValueError(f"exact: group_size must be an integer >= 1 or None, got {group_size!r}.")
    self.cost_fn = cost_fn or plans.sq_euclidean
    self.solver = solver
    if group_size is None and population_rows is not None and population_rows >= 2:
      group_size = population_rows
    self.group_size = None if group_size is None else int(group_size)
    self.warm_start = bool(warm_start)
    self._pair_jit = jax.jit(self._pair)

  def check(self, x0, x1, *, groups=None, mask0=None, mask1=None) -> None:
    """Raises ValueError on bad inputs (value checks need concrete data)."""
    plans.check_inputs("exact", x0, x1, groups=groups, mask0=mask0, mask1=mask1)
    n = plans.leading(x0)
    # n <= group_size: one block, the full problem (`blocks`; e.g. check_data's one row).
    if groups is not None and self.group_size is not None and n > self.group_size \
        and n % self.group_size:
      raise ValueError(f"exact: {n} rows do not split into runs of group_size="
                       f"{self.group_size}.")

  def blocks(self, x0, x1, groups, mask0, mask1, cost):
    """Cost blocks `[P, n/P, m/P]` and their valid entries (P = 1: the full problem)."""
    n, m = plans.leading(x0), plans.leading(x1)
    mask0 = jnp.ones((n,), bool) if mask0 is None else mask0.astype(bool)
    mask1 = jnp.ones((m,), bool) if mask1 is None else mask1.astype(bool)
    size = self.group_size
    if groups is None or size is None or size >= n:
      c = plans.cost_matrix(self.cost_fn, x0, x1) if cost is None else cost
      valid = mask0[:, None] & mask1[None, :]
      if groups is not None:
        valid = valid & (groups[:, None] == groups[None, :])
      return c[None], valid[None]
    p = n // size  # n == m: groups need equal sides (plans.check_inputs)
    split = lambda a: a.reshape(p, size, *a.shape[1:])  # noqa: E731
    if cost is None:
      c = jax.vmap(lambda a, b: plans.cost_matrix(self.cost_fn, a, b))(
          jax.tree.map(split, x0), jax.tree.map(split, x1))
    else:  # diagonal blocks of a given cost
      c = cost.reshape(p, size, p, size)[jnp.arange(p), :, jnp.arange(p), :]
    g, m0, m1 = split(groups), split(mask0), split(mask1)
    # Also restrict to equal labels within a run: a wrong group_size still
    # never pairs across groups.
    valid = m0[:, :, None] & m1[:, None, :] & (g[:, :, None] == g[:, None, :])
    return c, valid

  def _pair(self, x0, x1, groups, mask0, mask1, cost):
    n = plans.leading(x0)
    c, valid = self.blocks(x0, x1, groups, mask0, mask1, cost)
    c = jax.lax.stop_gradient(c)
    p, rows, cols = c.shape
    if self.solver == "hungarian":
      j = assignment.hungarian(c, valid, warm_start=self.warm_start)
    else:
      if self.warm_start:
        f, g = jax.vmap(assignment.warm_duals)(c, valid)
      else:
        f, g = jnp.zeros((p, rows), c.dtype), jnp.zeros((p, cols), c.dtype)
      # broadcast_all: a vmapped coupling makes one host call for all blocks.
      j = jax.pure_callback(functools.partial(assignment.assign_host, solver=self.solver),
                            jax.ShapeDtypeStruct((p, rows), jnp.int32),
                            c, valid, f, g, vmap_method="broadcast_all")
    j = j + (jnp.arange(p, dtype=jnp.int32) * cols)[:, None]  # block-local -> global column
    return jnp.arange(n, dtype=jnp.int32), j.reshape(n)

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
