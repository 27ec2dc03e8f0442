"""Multi-process runs: `jax.distributed` set-up, the primary process, replicated inputs.

One run can span several processes (hosts of a GPU node or a TPU slice; on one
CPU machine, processes with forced devices). Every process runs the same
program (JAX's multi-controller model): the trainer's mesh spans
`jax.devices()`, i.e. every process's devices, and each jitted step runs on all
of them at once, so the N-process run trains exactly as a 1-process run on the
same number of devices (`tests/test_multiprocess.py`).

What each process does (decisions; BUILD.md "Multi-process" has the launch
commands):

* **Data.** Each process loads the (in-memory) dataset itself and contributes
  its copy of the replicated inputs through
  `jax.make_array_from_process_local_data` (`replicate`). The minibatch is
  drawn inside the step and constrained to the "data" axis, so each device
  gathers only its rows of the global batch: no process builds, holds or
  sends another's shard.
* **Checkpoints** are written collectively by orbax: every process takes part
  in each save and restore (a fully replicated state is written once). The
  workdir must be on a file system every process sees; its bookkeeping files
  (`config.json`, the workdir lock, removal of unfinished saves) belong to the
  primary process, and the others wait for it (`barrier`).
* **Logs, plots, eval.json and tables** are written by the primary process
  (`jax.process_index() == 0`) only. It evaluates alone, on its own devices,
  from a host copy of the (replicated) parameters; the other processes wait
  at a barrier and return.

CPU collectives between processes use gloo (`jax_cpu_collectives_implementation`),
set before `jax.distributed.initialize`; it has no effect on GPU/TPU backends.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

# JAX itself reads JAX_COORDINATOR_ADDRESS; these two complete the set for
# launchers that export variables rather than pass flags.
ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins a multi-process run; returns False (and does nothing) for a 1-process run.

  Arguments left as None are read from `JAX_COORDINATOR_ADDRESS`,
  `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`. `coordinator_address="auto"`
  lets JAX detect the cluster (TPU slices, SLURM, Open MPI), which sets all
  three. Call it before anything touches a JAX device.

  Raises:
    ValueError: an incomplete or inconsistent set (e.g. a process id without
      an address, or `process_id >= num_processes`), before contacting anyone.
  """
  env = {k: os.environ.get(k) or None for k in ENV}
  address = coordinator_address or env["JAX_COORDINATOR_ADDRESS"]
  n = num_processes if num_processes is not None else _int_env(env, "JAX_NUM_PROCESSES")
  pid = process_id if process_id is not None else _int_env(env, "JAX_PROCESS_ID")
  if address is None:
    if (n or 1) > 1 or pid not in (None, 0):
      raise ValueError(f"a multi-process run (num_processes={n}, process_id={pid}) needs the "
                       "coordinator's host:port (--coordinator_address or "
                       "JAX_COORDINATOR_ADDRESS; 'auto' on a TPU slice or SLURM).")
    return False
  if address == "auto":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize()
    return True
  if n is None or pid is None:
    raise ValueError(f"coordinator {address!r} given without num_processes ({n}) and "
                     f"process_id ({pid}): pass both (--num_processes, --process_id or "
                     "JAX_NUM_PROCESSES, JAX_PROCESS_ID).")
  if n < 1 or not 0 <= pid < n:
    raise ValueError(f"process_id must be in [0, num_processes={n}), got {pid}.")
  if n == 1:
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=pid)
  return True


def _int_env(env: dict, key: str) -> int | None:
  if env[key] is None:
    return None
  try:
    return int(env[key])
  except ValueError:
    raise ValueError(f"{key}={env[key]!r} is not an integer.") from None


def is_primary() -> bool:
  """True in the process that writes logs and outputs (process 0; a 1-process run)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def replicate(tree, sharding):
  """Places host arrays (`tree`, the same on every process) replicated over `sharding`'s mesh."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
