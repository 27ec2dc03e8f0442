"""WFM train-step time on point clouds as the cloud size doubles.

Batch of 64 clouds (WFM App. E.2) of N points in 2-D, N = 64, 128, 256, 512
by default; transformer velocity field, Gaussian-cloud base, rounded matching
inner map (epsilon and iterations as flags). For each N prints the time of a
whole train step (sampling, inner OT, forward, backward, Adam; jitted, several
steps per dispatch) and, separately, of the inner OT alone (Sinkhorn + rounding,
vmapped over the 64 pairs) and of the network's forward + backward alone, then
the growth factor per doubling. Both parts are quadratic in N (the attention
matrix and the N x N cost/plan), WFM App. E.2; at small N fixed per-step
overheads hide that.

    python benchmarks/wfm_step.py [--sizes 64,128,256,512] [--width 128] [--blocks 2]

Measured on the idle 2-core CPU (2026-11-30, `--repeats 2 --steps_per_dispatch 1`,
the method's defaults: eps 0.01, <= 1000 iterations, all solves converge):

  inner OT vmapped over all 64 pairs (`--inner_chunk 64`, the old behaviour):
     N    step ms  x prev
    64      627       -
   128     1889    3.01
   256    17410    9.22
   512    68681    3.95   (the last row ran beside another benchmark for a minute)

  in chunks (`WFM.inner_chunk` automatic: 32, 8, 2, 1 pairs at a time):
     N    step ms  x prev  inner OT ms  x prev  net fwd+bwd ms  x prev
    64      734       -          458       -             161       -
   128     1705    2.32         1481    3.23             462    2.86
   256     4998    2.93         3999    2.70            1328    2.87
   512    16978    3.40        11126    2.78            4476    3.37

  the same, re-measured 2026-12-02 at full speed (2048^3 matmul at 318-368 GFLOP/s):
     N    step ms  x prev  inner OT ms  x prev  net fwd+bwd ms  x prev
    64      419       -          391       -              89       -
   128     1119    2.67          795    2.04             201    2.25
   256     4298    3.84         2894    3.64             491    2.45
   512    12229    2.85         8132    2.81            2051    4.17

Why vmapping all pairs grew worse than quadratic: not the iterations (their
mean per solve falls with N: 330, 310, 277, 278), but the [64, N, N] working
set of a Sinkhorn iteration leaving the caches (7.6x and 8.4x per doubling per
iteration from N = 64, against 2.9x and 4.2x 8 pairs at a time), and a
vmapped while-loop runs every pair to the slowest one's count (max 860 at N =
64). At N = 256 the chunk size mattered: 16 pairs 10.0 s per step, 8 or 4
pairs 8.0 s, 2 pairs 4.5 s.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from flowzoo.bases.pointclouds import GaussianClouds
from flowzoo.couplings import rounding
from flowzoo.couplings.independent import Independent
from flowzoo.data.populations import Populations, pack, sample_batch
from flowzoo.methods.wfm import WFM
from flowzoo.models.transformer import Transformer
from flowzoo.train import Trainer, make_optimizer

BATCH, DIM = 64, 2


def timed(fn, *args, repeats: int) -> float:
  """Seconds per call after one compiling call."""
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - t0) / repeats


def bench(n: int, args) -> dict[str, float]:
  rng = np.random.default_rng(0)
  # 256 clouds of exactly n points: anisotropic Gaussians with random means.
  scale = rng.uniform(0.3, 1.0, (256, 1, DIM))
  x = (rng.normal(size=(256, n, DIM)) * scale + rng.normal(0, 0.3, (256, 1, DIM)))
  pops = Populations(names=["a"], samples=[x.astype(np.float32)], descriptors=np.ones((1, 1)),
                     splits=["train"], masks=[np.ones((256, n), bool)])
  model = Transformer(width=args.width, num_blocks=args.blocks, num_heads=args.heads,
                      event_shape=(n, DIM))
  method = WFM(model=model, base=GaussianClouds(event_shape=(n, DIM)), coupling=Independent(),
               epsilon=args.epsilon, max_iterations=args.max_iterations,
               inner_chunk=args.inner_chunk or None)
  trainer = Trainer(method, {"velocity": make_optimizer(lr=1e-4)}, batch_size=BATCH,
                    populations_per_batch=1, ema_decay=0.999)
  data, ids = trainer.replicate(pack(pops)), jnp.arange(1)
  state = trainer.init(jax.random.key(0), data, ids)
  spd = args.steps_per_dispatch

  def run(state):
    return trainer.run(state, data, ids, jax.random.key(1), spd)[0]

  state = jax.block_until_ready(run(state))  # compile (the state buffers are donated)
  t0 = time.perf_counter()
  for _ in range(args.repeats):
    state = run(state)
  jax.block_until_ready(state)
  step = (time.perf_counter() - t0) / (args.repeats * spd)

  batch = sample_batch(data, jax.random.key(2), ids, batch_size=BATCH, populations_per_batch=1)
  x0 = method.base.sample(state.params["base"], jax.random.key(3), batch)
  ot = timed(jax.jit(method.transport), x0, batch["x1"], batch["mask1"], batch["mask1"],
             repeats=args.repeats)
  # What convergence costs: iterations per pair (the vmapped loop runs the max).
  plan = jax.jit(jax.vmap(lambda a, b, m: method.rounded.plan(a, b, mask0=m, mask1=m)))(
      x0, batch["x1"], batch["mask1"])
  iters = np.asarray(plan.iterations)

  def net_loss(p, t, xt, u):
    v = model.apply(p, t, xt, batch["cond"], mask=batch["mask1"])
    return jnp.mean((v - u) ** 2)

  t = jnp.full((BATCH,), 0.5)
  net = timed(jax.jit(jax.grad(net_loss)), state.params["velocity"], t, x0, batch["x1"] - x0,
              repeats=args.repeats)
  return {"step": step, "ot": ot, "net": net, "iters_mean": float(iters.mean()),
          "iters_max": int(iters.max()), "converged": float(np.mean(plan.converged))}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", default="64,128,256,512")
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--blocks", type=int, default=2)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--epsilon", type=float, default=0.01)
  # The method's default (200, WFM App. E.2, left every solve unconverged here).
  p.add_argument("--max_iterations", type=int, default=rounding.MAX_ITERATIONS)
  p.add_argument("--steps_per_dispatch", type=int, default=2)
  p.add_argument("--inner_chunk", type=int, default=0,
                 help=f"WFM's inner_chunk: pairs solved at once ({BATCH} = all vmapped, the "
                      "old behaviour); 0 = automatic (the default)")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  print(f"WFM train step, {BATCH} clouds of N points in {DIM}-D, transformer width "
        f"{args.width} x {args.blocks} blocks, rounded matching eps={args.epsilon}, "
        f"<= {args.max_iterations} Sinkhorn iterations, inner OT "
        f"{args.inner_chunk or 'automatic'} pairs at a time, "
        f"{jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)")
  print(f"{'N':>6} {'step ms':>10} {'x prev':>7} {'inner OT ms':>12} {'x prev':>7} "
        f"{'net fwd+bwd ms':>15} {'x prev':>7} {'iters mean/max':>15} {'converged':>9}")
  prev = None
  for n in (int(s) for s in args.sizes.split(",")):
    r = bench(n, args)
    ratio = {k: (f"{r[k] / prev[k]:7.2f}" if prev else f"{'-':>7}") for k in ("step", "ot", "net")}
    print(f"{n:>6} {1e3 * r['step']:>10.1f} {ratio['step']} {1e3 * r['ot']:>12.1f} "
          f"{ratio['ot']} {1e3 * r['net']:>15.1f} {ratio['net']} "
          f"{r['iters_mean']:>9.0f}/{r['iters_max']:<5d} {100 * r['converged']:>8.0f}%", flush=True)
    prev = r
  print("x prev: growth per doubling of N (4.0 = quadratic, 2.0 = linear).")


if __name__ == "__main__":
  main()
