"""Coupling speed: flowzoo couplings vs POT (and torchcfm when installed), and OT-CFM step cost.

Prints, for batch 256 and 1024 (dim 64, standard normal source and target):
  * ms per call of every flowzoo coupling (jitted, blocked on), with the
    exact coupling's solvers side by side: lapx (the CPU default) and scipy
    through a host callback, and optax's Hungarian in JAX, with and without
    the warm start;
  * the exact solvers on a flow-matching-like cost (target shifted by 1 and
    scaled by 0.5, dim 16: harder for both than i.i.d. normal pairs),
  * POT's `ot.emd` and `ot.sinkhorn` (kernel and log domain) on the same cost,
    at the same epsilon (on the mean-scaled cost) and the same iteration count
    as flowzoo's fixed-iteration Sinkhorn rows,
  * torchcfm's `OTPlanSampler` (exact and sinkhorn) if torch/torchcfm import;
and the OT-CFM train step time divided by the independent-CFM step time at
batch 256 (jitted value_and_grad of `CFM.loss` + optax Adam update, MLP 3x512).

    python benchmarks/couplings.py [--reps 20] [--iters 100] [--eps 0.05]
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowzoo.bases.gaussian import Gaussian
from flowzoo.couplings.entropic_map import EntropicMap
from flowzoo.couplings.exact import Exact
from flowzoo.couplings.independent import Independent
from flowzoo.couplings.rounding import RoundedMatching
from flowzoo.couplings.sinkhorn import Sinkhorn
from flowzoo.methods.cfm import CFM
from flowzoo.models.mlp import MLP

DIM = 64


def timeit(fn, reps: int) -> float:
  """Median seconds per call after one warm-up (compile) call."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def row(name: str, seconds: float | None, note: str = "") -> float | None:
  val = "   skipped" if seconds is None else f"{seconds * 1e3:10.2f}"
  print(f"  {name:<52s}{val} ms  {note}")
  return seconds


def bench_flowzoo(x0, x1, reps, iters, eps) -> dict:
  """Times every coupling; returns the fixed-iteration Sinkhorn times by domain."""
  key = jax.random.key(0)
  fixed = dict(epsilon=eps, threshold=0.0, max_iterations=iters, inner_iterations=iters)
  fixed_log = f"sinkhorn eps={eps}, {iters} iters fixed, lse"
  fixed_kernel = f"sinkhorn eps={eps}, {iters} iters fixed, kernel"
  couplings = {
      "independent": Independent(),
      f"sinkhorn eps={eps} (mean-scaled), thr 1e-3, lse": Sinkhorn(epsilon=eps),
      fixed_log: Sinkhorn(**fixed),
      fixed_kernel: Sinkhorn(**fixed, lse_mode=False),
      f"sinkhorn eps={eps}, thr 1e-3, kernel": Sinkhorn(epsilon=eps, lse_mode=False),
      f"sinkhorn eps={eps}, thr 1e-3, argmax": Sinkhorn(epsilon=eps, pairs="argmax"),
      "rounded_matching (eps 0.01, <= 1000 it, WFM defaults)": RoundedMatching(),
      **exact_solvers(x0.shape[0]),
  }
  times = {}
  for name, c in couplings.items():
    f = jax.jit(lambda k, a, b, c=c: c(k, a, b))
    times[name] = row(name, timeit(lambda f=f: f(key, x0, x1), reps))
  em = jax.jit(lambda a, b: EntropicMap()(a, b))
  row("entropic_map transport (eps 0.01, <= 1000 it)", timeit(lambda: em(x0, x1), reps))
  return {"kernel": times[fixed_kernel], "log": times[fixed_log]}


def exact_solvers(n: int) -> dict:
  """The exact coupling's solvers; the cold in-JAX Hungarian only up to n = 256 (~0.1 s there)."""
  solvers = {
      "exact, lapx callback + warm start (default)": Exact(),
      "exact, scipy callback + warm start": Exact(solver="scipy"),
      "exact, scipy callback, no warm start (old)": Exact(solver="scipy", warm_start=False),
      "exact, in-JAX Hungarian (optax) + warm start": Exact(solver="hungarian"),
  }
  if n <= 256:
    solvers["exact, in-JAX Hungarian (optax), no warm start"] = Exact(solver="hungarian",
                                                                     warm_start=False)
  return solvers


def bench_exact_shifted(batch: int, reps: int) -> None:
  """Exact solvers on a shifted target in dim 16 (MixFlow-like minibatch costs)."""
  rng = np.random.default_rng(batch + 1)
  x0 = jnp.asarray(rng.normal(size=(batch, 16)), jnp.float32)
  x1 = jnp.asarray(rng.normal(size=(batch, 16)) * 0.5 + 1.0, jnp.float32)
  key = jax.random.key(0)
  print(f"  exact solvers, shifted target, dim 16 (batch {batch}):")
  times = {}
  for name, c in exact_solvers(batch).items():
    f = jax.jit(lambda k, a, b, c=c: c(k, a, b))
    times[name] = row("  " + name, timeit(lambda f=f: f(key, x0, x1), max(3, reps // 4)))
  old = times["exact, scipy callback, no warm start (old)"]
  for name, t in times.items():
    print(f"    {name}: {old / t:.2f}x faster than the old coupling")


def bench_pot(x0, x1, reps, iters, eps) -> dict:
  """Times POT; returns its fastest Sinkhorn per domain (float64 or float32)."""
  try:
    import ot
  except ImportError:
    print("  POT not importable: skipping POT rows.")
    return {}
  warnings.filterwarnings("ignore", module="ot")  # fixed iteration counts: no convergence warnings.
  a0, a1 = np.asarray(x0, np.float64), np.asarray(x1, np.float64)
  n = a0.shape[0]
  w = np.full(n, 1.0 / n)
  m = ot.dist(a0, a1)  # squared Euclidean
  ms = m / m.mean()
  row("POT ot.emd", timeit(lambda: ot.emd(w, w, m), max(3, reps // 4)))
  times = {}
  for method, domain in (("sinkhorn", "kernel"), ("sinkhorn_log", "log")):
    times[domain] = row(
        f"POT ot.sinkhorn {method} eps={eps} (mean-scaled), {iters} iters",
        timeit(lambda method=method: ot.sinkhorn(w, w, ms, eps, method=method,
                                                 numItermax=iters, stopThr=0.0), reps))
  f32, w32 = ms.astype(np.float32), w.astype(np.float32)
  t32 = row(f"POT ot.sinkhorn sinkhorn (float32), {iters} iters",
            timeit(lambda: ot.sinkhorn(w32, w32, f32, eps, numItermax=iters, stopThr=0.0), reps))
  times["kernel"] = min(times["kernel"], t32)
  return times


def bench_torchcfm(x0, x1, reps, eps):
  try:
    import torch
    from torchcfm.optimal_transport import OTPlanSampler
  except Exception as e:  # noqa: BLE001  (any import failure means: not available here)
    print(f"  torch/torchcfm not importable ({type(e).__name__}: {e}); skipping torchcfm. "
          "Install: pip install torch==2.13.0, then torchcfm with constraint torch==2.13.0.")
    return
  t0, t1 = torch.from_numpy(np.array(x0)), torch.from_numpy(np.array(x1))
  for method in ("exact", "sinkhorn"):
    sampler = OTPlanSampler(method=method, reg=eps, normalize_cost=True)
    row(f"torchcfm OTPlanSampler({method}).sample_plan",
        timeit(lambda s=sampler: s.sample_plan(t0, t1), max(3, reps // 4)))


def step_time(coupling, reps: int, batch: int = 256) -> float:
  """Seconds per jitted CFM step (value_and_grad of CFM.loss + Adam)."""
  model = MLP(hidden=(512,) * 3, act="silu", time_frequencies=8, cond_embed=0)
  rng = np.random.default_rng(0)
  data = {"x1": jnp.asarray(rng.normal(size=(batch, DIM)), jnp.float32),
          "cond": jnp.zeros((batch, 2)), "group": jnp.zeros((batch,), jnp.int32)}
  method = CFM(model=model, base=Gaussian(event_shape=(DIM,)), coupling=coupling)
  params = method.init(jax.random.key(0), data)
  loss_fn = method.loss
  opt = optax.adam(1e-3)
  state = (params, opt.init(params))

  @jax.jit
  def step(state, key):
    p, o = state
    (_, _), g = jax.value_and_grad(loss_fn, has_aux=True)(p, key, data, 0)
    upd, o = opt.update(g, o, p)
    return optax.apply_updates(p, upd), o

  keys = iter(jax.random.split(jax.random.key(1), reps + 1))
  holder = [state]

  def run():
    holder[0] = step(holder[0], next(keys))
    return holder[0]
  return timeit(run, reps)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--reps", type=int, default=20)
  p.add_argument("--iters", type=int, default=100)
  p.add_argument("--eps", type=float, default=0.05)
  p.add_argument("--step_reps", type=int, default=200)
  a = p.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; median ms per call")
  for batch in (256, 1024):
    rng = np.random.default_rng(batch)
    x0 = jnp.asarray(rng.normal(size=(batch, DIM)), jnp.float32)
    x1 = jnp.asarray(rng.normal(size=(batch, DIM)), jnp.float32)
    print(f"\nbatch {batch}, dim {DIM}")
    ours = bench_flowzoo(x0, x1, a.reps, a.iters, a.eps)
    bench_exact_shifted(batch, a.reps)
    pot = bench_pot(x0, x1, a.reps, a.iters, a.eps)
    bench_torchcfm(x0, x1, a.reps, a.eps)
    for domain, t_pot in pot.items():
      print(f"  => {domain} domain, eps {a.eps}, {a.iters} iterations: flowzoo "
            f"{ours[domain] * 1e3:.2f} ms (incl. cost and pair draw) vs POT "
            f"{t_pot * 1e3:.2f} ms: speed-up {t_pot / ours[domain]:.2f}x (POT time / flowzoo "
            f"time; target > 1)")
  print("\nCFM train step, batch 256, dim 64, MLP 3x512, Adam (one jitted step per dispatch)")
  t_ind = step_time(Independent(), a.step_reps)
  row("independent coupling", t_ind)
  for name, c in (("sinkhorn (default: eps 0.05 mean-scaled, thr 1e-3, lse)", Sinkhorn()),
                  ("sinkhorn kernel mode (precomputed kernel)", Sinkhorn(lse_mode=False)),
                  ("exact (lapx callback + warm start, default)", Exact()),
                  ("exact (scipy callback + warm start)", Exact(solver="scipy")),
                  ("exact (scipy callback, no warm start: old)",
                   Exact(solver="scipy", warm_start=False)),
                  ("exact (in-JAX Hungarian + warm start)", Exact(solver="hungarian"))):
    t = step_time(c, a.step_reps)
    row(f"OT-CFM, {name}", t, f"ratio {t / t_ind:.2f} (target <= 1.3)")


if __name__ == "__main__":
  main()
