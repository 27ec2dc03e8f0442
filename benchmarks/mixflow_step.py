"""MixFlow train-step cost vs a CFM step with the same network, batch and coupling.

Same MLP (3x256, SiLU), batch 256, dim 16, descriptors 32-d, one population
per minibatch (MixFlow Algorithm 1, lines 7-9) and the same trainer. Timed:

  * cfm / independent: vanilla CFM, N(0, I) base, independent pairs (the
    cheapest step, cfm_letters.py);
  * cfm / <coupling>: vanilla CFM with MixFlow's coupling (the fair twin:
    MixFlow with `base.name=gaussian`);
  * mixflow / <coupling>: GMM base (I modes, MLP h_Theta and h_p) in the
    alternating phase, where one step in k + 1 updates the base.

Prints ms per step and the ratios mixflow / cfm (the issue's target: <= 1.5x
the same-coupling CFM step) and, with `--coupling exact`, exact / independent
for CFM (issue 25: <= 2x) with each exact solver (`flowzoo/couplings/exact.py`):
lapx (the default), scipy with and without the warm start (without = the old
coupling) and the in-JAX Hungarian. The measurements below up to the lapx
section used scipy, then the default. Defaults are the main job's layout
(experiments/configs/mixflow_bbbc021.py: batch 256, one population per batch).

    python benchmarks/mixflow_step.py [--steps 1000] [--coupling exact] [--modes 10]
        [--populations_per_batch 1]
    python benchmarks/mixflow_step.py --main_job [--steps 1000 --steps_per_dispatch 200]

`--main_job` times the main job's own config instead (real wells: 189
features, 173-d descriptors, so the GMM's h_Theta is as large as the velocity
MLP), with and without MixFlow's `active_group_grads`. Two runs, 2026-12-02
(the first a scratch script timing the same arms at 2000 steps, 500 per
dispatch; the second `--main_job --steps 1000 --steps_per_dispatch 200`; the
machine drifting between them): cfm / independent 1.81 / 2.02 ms, cfm /
exact 4.65 / 5.63 ms (2.57x / 2.79x), mixflow / exact 8.85 / 9.22 ms, with
active_group_grads 6.98 / 8.79 ms; mixflow / independent 4.66 / 4.52 ms, with
active_group_grads 3.29 / 3.56 ms. So on the real data MixFlow costs 1.6-1.9x
its twin, not the 1.2x of the synthetic layout below.

Measured on the idle 2-core CPU (2026-12-01, `--steps 600 --repeats 3`, one
run, the machine in a steady phase): cfm / independent 2.31 ms; cfm / exact
4.08 ms (1.76x: the <= 2x target holds); in-JAX Hungarian 5.42 ms (2.34x);
the old coupling (no warm start) 13.5 ms (5.84x); mixflow / exact 4.91 ms
(1.20x its CFM twin). The ratio moves with the machine: this virtual
machine's speed drifts by up to 1.7x within an hour, and the host callback's
fixed cost does not scale with it; two runs an hour earlier, in a slow
phase, gave 1.90x and 2.08x (independent 3.27 / 2.63 ms). The repeats
interleave the variants so that a drift hits all of them. Where the exact
coupling's time goes (n = 256, dim 16, scratch timings): warm-start duals
0.6-0.7 ms, scipy on the reduced cost 0.9-1.1 ms (8.7 ms cold), the host
callback's round trip 0.3-0.6 ms with nothing to do, the rest moving the
blocks and assembling the pairs.

Re-measured 2026-12-02 (`python benchmarks/mixflow_step.py`, idle, a 2048^3
matmul at 361 GFLOP/s, the fastest this machine has run): cfm / independent
1.27 ms, cfm / exact 3.33 ms (2.62x: the target fails), Hungarian 5.43 ms
(4.28x), old coupling 12.6 ms (9.89x), mixflow / exact 3.92 ms (1.18x its
twin). The faster the network step, the larger the ratio: the coupling's
cost does not speed up with the matmuls. Per coupling of 256 rows (dim 16, a
fresh problem each time): scipy on the warm-started cost 0.44-0.65 ms (0.35
ms when one problem is solved repeatedly, cache-hot: earlier breakdowns that
timed a repeated problem read too low), warm-start duals and cost blocks
0.55 ms, the callback 0.1-0.4 ms. Tried the same day without gain: fewer or
more warm-start iterations or levels (the duals' time barely depends on
them; fewer make scipy slower), centring both clouds (scipy's time does not
grow with the shift), XLA flags (`--xla_cpu_multi_thread_eigen=false`, the
thunk runtime off), Python's switch interval, one host callback for the
couplings of 100 steps at once (vmapped duals, scipy in one loop: 1.82 ms
per coupling vs 1.56 ms one per step, so batching the round trips saves
nothing), a preallocated host buffer for the reduced cost (slower), and a
higher first warm-start level (epsilons 0.3, 0.1, ..., 0.003): duals plus
scipy 1.76 -> 1.15 ms per problem on 60 of the main job's saved problems
timed alone, but slower inside the step (main job 4.57 vs 4.32 ms, this
layout 3.31 vs 2.97 ms, interleaved A/B): timings of the coupling alone do
not predict the step.

lapx (2026-12-02, the default solver since; a slow phase of the machine, a
2048^3 matmul at 140-168 GFLOP/s). `python benchmarks/mixflow_step.py`: cfm /
independent 2.91 ms, cfm / exact (lapx) 4.98 ms (1.71x), solver=scipy 6.23
ms (2.14x), Hungarian 7.76 ms (2.66x), old coupling 17.2 ms (5.92x), mixflow
/ exact 6.50 ms (1.31x its twin). `--main_job --steps 1000
--steps_per_dispatch 200 --repeats 2`: cfm / independent 4.09 ms, cfm /
exact (lapx) 6.96 ms (1.70x), solver=scipy 9.19 ms (2.25x); mixflow / exact
15.2 ms (scipy 16.9 ms), with active_group_grads 10.3 ms. Where the rest of
the exact step goes (scratch timings in the step, same phase, 600 steps):
independent 2.49 ms; the same step with a host callback that takes one
scalar and returns the identity pairing 3.09 ms, with the cost matrix as its
argument 3.58 ms, plus the warm-start duals (callback still a no-op) 4.26
ms, plus scipy 5.67 ms or lapx 4.97 ms. So after lapx the callback's round
trip (0.5-1 ms inside the step, 50-100 us in an empty loop) and the duals
(0.3 ms) are most of what is left. Not kept: solving the next step's
problem on a host thread while XLA trains this one (an ordered
`io_callback` submits, a second one collects): the solve hides behind the
step (0.13-0.2 ms left to wait) but the two callbacks and the contention
for the 2 cores cost more (4.9-5.2 vs 4.6-4.9 ms synchronous), and it only
applies to fixed bases. scipy's sparse LAPJVsp
(`min_weight_full_bipartite_matching`) was slower than its dense solver
(2.1-2.8 vs 0.8-1.2 ms warm).

lapx at full speed (2026-12-02 again, idle, a 2048^3 matmul at 342-367
GFLOP/s before and after each run). `--main_job --steps 1000
--steps_per_dispatch 200 --repeats 2`: cfm / independent 2.46 ms, cfm /
exact (lapx) 4.22 ms (1.72x: the <= 2x target holds at full speed too),
solver=scipy 4.93 ms (2.00x); mixflow / exact 7.51 ms (scipy 8.66 ms), with
active_group_grads 6.45 ms; mixflow / independent 5.46 ms (4.14 ms with
active_group_grads), so MixFlow's own exact / independent is 1.37x.
`python benchmarks/mixflow_step.py`: cfm / independent 1.63 ms, cfm / exact
(lapx) 3.03 ms (1.86x), solver=scipy 3.38 ms (2.08x), Hungarian 4.42 ms
(2.72x), old coupling 9.65 ms (5.94x), mixflow / exact 4.15 ms (1.37x its
twin).
"""

from __future__ import annotations

import argparse
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import mixflow_bbbc021
from flowzoo import config as config_lib
from flowzoo.bases.gaussian import Gaussian
from flowzoo.bases.mixture import GMM
from flowzoo.data.populations import Populations, pack
from flowzoo.experiment import setup
from flowzoo.methods.mixflow import MixFlow
from flowzoo.models.mlp import MLP
from flowzoo.registry import COUPLINGS
from flowzoo.train import Trainer, make_optimizer

BATCH, DIM, COND, WIDTH, DEPTH = 256, 16, 32, 256, 3


def _populations(rng: np.random.Generator) -> Populations:
  n = 8
  return Populations(names=[f"c{i}" for i in range(n)],
                     samples=[rng.normal(size=(512, DIM)) + i for i in range(n)],
                     descriptors=rng.normal(size=(n, COND)), splits=["train"] * n)


def steps_per_second(base, coupling: str, steps: int, spd: int, ppb: int = 1,
                     **coupling_kwargs) -> float:
  """Measured train steps/s of MixFlow with `base` (Gaussian = vanilla CFM)."""
  pops = _populations(np.random.default_rng(0))
  # total_steps = 10 * steps: the timed steps all fall in the alternating phase.
  method = MixFlow(model=MLP(hidden=(WIDTH,) * DEPTH, act="silu", cond_embed=64),
                   base=base, coupling=COUPLINGS.build(coupling, coupling_kwargs), total_steps=10 * steps,
                   warmup=0.0, alternating=1.0, cooldown=0.0, base_every=10)
  opts = {g: make_optimizer(name="adam", lr=1e-3) for g in method.groups}
  trainer = Trainer(method, opts, batch_size=BATCH, populations_per_batch=ppb)
  data, ids = trainer.replicate(pack(pops)), jnp.arange(len(pops.names))
  key = jax.random.key(1)
  return _rate(lambda s: trainer.run(s, data, ids, key, spd)[0],
               trainer.init(jax.random.key(0), data, ids), steps, spd)


def _rate(run, state, steps: int, spd: int) -> float:
  """Steps/s of `run(state) -> state` (`spd` steps each), after one untimed call (compile)."""
  state = run(state)
  t0 = time.perf_counter()
  for _ in range(steps // spd):
    state = run(state)
  return (steps // spd) * spd / (time.perf_counter() - t0)


# --main_job: the main job's own config (real wells: 189 features, 173-d
# descriptors; experiments/configs/mixflow_bbbc021.py) with these overrides.
MAIN_JOB_ARMS = {
    "cfm / independent": "base.name=gaussian;coupling.name=independent",
    "cfm / exact (the main job's twin)": "base.name=gaussian",
    "cfm / exact, solver=scipy": "base.name=gaussian;coupling.solver=scipy",
    "mixflow / independent": "coupling.name=independent",
    "mixflow / independent, active_group_grads":
        "coupling.name=independent;method.active_group_grads=True",
    "mixflow / exact (the main job)": "",
    "mixflow / exact, solver=scipy": "coupling.solver=scipy",
    "mixflow / exact, active_group_grads": "method.active_group_grads=True",
}


def main_job_steps_per_second(overrides: str, steps: int, spd: int) -> float:
  """Train steps/s of the main job's config with `overrides`, after its first dispatch."""
  config = config_lib.apply_overrides(mixflow_bbbc021.get_config(),
                                      config_lib.parse_overrides(overrides))
  exp, key = setup(config, quiet_unused=True), jax.random.key(1)
  return _rate(lambda s: exp.trainer.run(s, exp.packed, exp.train_ids, key, spd)[0],
               exp.init(), steps, spd)


def main_job(a) -> None:
  """`--main_job`: the arms of MAIN_JOB_ARMS, best of `--repeats`, interleaved."""
  logging.getLogger().setLevel(logging.ERROR)  # the dataset's notes, once per arm and repeat
  print(f"main job (mixflow_bbbc021.py, real wells), {a.steps} steps after the first "
        f"{a.steps_per_dispatch}, {a.steps_per_dispatch} per dispatch")
  rates = {name: 0.0 for name in MAIN_JOB_ARMS}
  for rep in range(a.repeats):
    for name, overrides in MAIN_JOB_ARMS.items():
      r = main_job_steps_per_second(overrides, a.steps, a.steps_per_dispatch)
      rates[name] = max(rates[name], r)
      print(f"[{rep + 1}/{a.repeats}] {name:<44} {1e3 / r:8.3f} ms/step", flush=True)
  ms = {name: 1e3 / r for name, r in rates.items()}
  for name, t in ms.items():
    print(f"best: {name:<44} {t:8.3f} ms/step")
  twin = ms["cfm / exact (the main job's twin)"]
  print(f"cfm exact / cfm independent: {twin / ms['cfm / independent']:.2f}x (target <= 2x); "
        f"with solver=scipy {ms['cfm / exact, solver=scipy'] / ms['cfm / independent']:.2f}x")
  for name in ("mixflow / exact (the main job)", "mixflow / exact, active_group_grads"):
    print(f"{name} / its cfm twin: {ms[name] / twin:.2f}x")
  mix = ms["mixflow / exact (the main job)"] / ms["mixflow / independent"]
  mix_active = (ms["mixflow / exact, active_group_grads"]
                / ms["mixflow / independent, active_group_grads"])
  print(f"mixflow exact / mixflow independent: {mix:.2f}x; with active_group_grads "
        f"{mix_active:.2f}x")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--steps_per_dispatch", type=int, default=100)
  p.add_argument("--coupling", default="exact")
  p.add_argument("--modes", type=int, default=10)
  p.add_argument("--repeats", type=int, default=3, help="best of N timings per variant")
  p.add_argument("--populations_per_batch", type=int, default=1)
  p.add_argument("--main_job", action="store_true",
                 help="time the main job's own config (real wells) instead; see MAIN_JOB_ARMS")
  a = p.parse_args()
  if min(a.steps_per_dispatch, a.repeats, a.modes, a.populations_per_batch) < 1:
    p.error("--steps_per_dispatch, --repeats, --modes and --populations_per_batch must be >= 1")
  if a.steps < a.steps_per_dispatch:
    p.error(f"--steps ({a.steps}) must be >= --steps_per_dispatch ({a.steps_per_dispatch})")
  if BATCH % a.populations_per_batch:
    p.error(f"--populations_per_batch must divide the batch of {BATCH}, got {a.populations_per_batch}")
  if a.main_job:
    return main_job(a)
  ppb = a.populations_per_batch
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; batch {BATCH}, dim {DIM}, "
        f"MLP {DEPTH}x{WIDTH}, {ppb} population(s) per batch, {a.steps} steps, "
        f"{a.steps_per_dispatch} per dispatch")
  gauss = Gaussian(event_shape=(DIM,))
  gmm = GMM(event_shape=(DIM,), num_modes=a.modes, hidden=(128,), dropout=0.1)
  kw = {"group_size": BATCH // ppb} if a.coupling == "exact" and ppb > 1 else {}
  variants = [("cfm / independent", gauss, "independent", {}),
              (f"cfm / {a.coupling}", gauss, a.coupling, kw),
              (f"mixflow / {a.coupling} (I={a.modes})", gmm, a.coupling, kw)]
  if a.coupling == "exact":
    variants += [("cfm / exact, solver=scipy", gauss, "exact", dict(kw, solver="scipy")),
                 ("cfm / exact, no warm start (old)", gauss, "exact",
                  dict(kw, solver="scipy", warm_start=False)),
                 ("cfm / exact, solver=hungarian", gauss, "exact", dict(kw, solver="hungarian")),
                 ("mixflow / exact, no warm start (old)", gmm, "exact",
                  dict(kw, solver="scipy", warm_start=False))]
  # Repeats interleave the variants, so a slow spell of the (shared, virtual)
  # machine hits every variant of one repeat rather than all repeats of one.
  rates = {name: 0.0 for name, *_ in variants}
  for rep in range(a.repeats):
    for name, base, coupling, kwargs in variants:
      r = steps_per_second(base, coupling, a.steps, a.steps_per_dispatch, ppb, **kwargs)
      rates[name] = max(rates[name], r)
      print(f"[{rep + 1}/{a.repeats}] {name:<36} {1e3 / r:8.3f} ms/step", flush=True)
  for name, r in rates.items():
    print(f"best: {name:<36} {1e3 / r:8.3f} ms/step  {r:8.1f} steps/s")
  mix, twin = rates[variants[2][0]], rates[variants[1][0]]
  indep = rates[variants[0][0]]
  print(f"mixflow / cfm, same coupling ({a.coupling}): {twin / mix:.2f}x the step time "
        f"(target <= 1.5x)")
  print(f"mixflow / cfm with independent pairs:      {indep / mix:.2f}x the step time")
  for name, _, _, _ in variants[1:]:
    if name.startswith("cfm / "):
      print(f"{name} / cfm independent: {indep / rates[name]:.2f}x the step time"
            + (" (target <= 2x)" if name == variants[1][0] else ""))


if __name__ == "__main__":
  main()
