"""CFM train-step throughput: flowzoo (JAX) vs the same step in PyTorch, eager and compiled.

Batch 256, dim 64, MLP 3x512 (SiLU), Adam, independent coupling, Gaussian
base. flowzoo runs `steps_per_dispatch` steps per jitted `lax.scan` dispatch;
PyTorch runs its usual eager loop, then the same update under `torch.compile`.
Prints steps/s, the ratios and achieved
GFLOP/s (matmul FLOPs of forward + backward, ~3x forward), and the bound
that the CPU's peak float32 matmul throughput (a jitted 2048^3 matmul) puts
on any implementation of this step.

    python benchmarks/cfm_step.py [--steps 2000] [--steps_per_dispatch 100]

PyTorch is optional (`pip install -e '.[bench]'`); without it only flowzoo is timed.

Measured on the idle 2-core CPU (2026-11-30), one run each (peak matmul
105-128 GFLOP/s between runs, so +-10 %):

  default                                   73.0-74.5 steps/s, 57-61 % of the peak bound
    PyTorch eager 57.2-58.0, torch.compile 59.8-61.4 (flowzoo 1.26-1.30x, 1.21-1.22x)
  --flat_optimizer (optax.flatten: Adam on one vector)         51.1  (worse: concat/split)
  XLA_FLAGS=--xla_cpu_use_thunk_runtime=false                  81.6
  XLA_FLAGS=--xla_cpu_multi_thread_eigen=false                 80.0
  XLA_FLAGS=--xla_cpu_use_xnnpack=true                         83.3
  --steps_per_dispatch 500                                     80.7  (71 % of the bound)

On 2026-12-01 (03:15), when the same machine ran at full speed (peak
186.6 GFLOP/s), the default run printed 146.7 steps/s, 72 % of the peak
bound and 85 % of its matmuls-alone bound (171.7 steps/s); PyTorch eager
117.4, torch.compile 120.9 (flowzoo 1.25x, 1.21x).

On 2026-12-02 (idle, the fastest phase yet: peak 330 GFLOP/s) the default
run printed 255.5 steps/s, 71 % of the peak bound and 80 % of the
matmuls-alone bound; PyTorch eager 107.1, torch.compile 124.6 (flowzoo
2.38x, 2.05x: PyTorch did not speed up with the machine). Tries, flowzoo
only (`--torch_steps 0`), each one run: XLA_FLAGS=--xla_cpu_use_xnnpack=true
263.9; --xla_cpu_use_thunk_runtime=false 239.0 (slower today);
--steps_per_dispatch 500 268.4-271.0 (62-63 % of a peak measured at 390-430
GFLOP/s in those runs: the peak itself moves by +-15 % within minutes).

Later on 2026-12-02 (idle, peak 329-368 GFLOP/s between runs) the default
run printed 229.5 steps/s, 60 % of the peak bound and 70 % of the
matmuls-alone bound (329.6 steps/s); PyTorch eager 227.8, torch.compile
244.5 (flowzoo 1.01x, 0.94x: PyTorch ran twice as fast as in the run above, on
the same machine at a similar peak). Tries the same hour, each interleaved with the default
in one process (3 rounds, best of each, scratch script): the first layer as
x @ W_x + time_features @ W_t + cond @ W_c instead of one matmul on their
concatenation (the time embedding fused into the first layer, no concat)
232.5 vs 232.8; no buffer donation in the jitted scan 233.2 vs 232.8: both
noise. `JAX_DEFAULT_MATMUL_PRECISION` (one process each, `--torch_steps 0`):
default 229.6 / 222.1, highest 225.2, bfloat16 226.8 steps/s: XLA:CPU
computes float32 dots in float32 whatever the flag says.

None reaches 85 % of the 2048^3 peak. What bounds it is the size of the
step's matrices: this step's matmuls alone (the last line printed, no
element-wise work at all) run at 96 steps/s, so flowzoo's whole step
(sampling, conditions, Adam, EMA, metrics) is at 76-87 % of its own
matmuls' speed. At full speed the matmuls alone reach 86 % of the peak
bound (329.6 of 382.9 steps/s, the run above), so 85 % of the peak would
need everything else in the step to cost nothing.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowzoo.bases.gaussian import Gaussian
from flowzoo.couplings.independent import Independent
from flowzoo.data.populations import Populations, pack
from flowzoo.methods.cfm import CFM
from flowzoo.models.mlp import MLP
from flowzoo.train import Trainer, make_optimizer

BATCH, DIM, WIDTH, DEPTH, FREQ = 256, 64, 512, 3, 8


def matmul_flops_per_step(in_dim: int) -> float:
  """2*B*(sum of layer fan-in*fan-out), times 3 for forward + backward."""
  layers = [(in_dim, WIDTH)] + [(WIDTH, WIDTH)] * (DEPTH - 1) + [(WIDTH, DIM)]
  return 3 * 2 * BATCH * sum(a * b for a, b in layers)


def bench_flowzoo(steps: int, spd: int, flat_optimizer: bool = False) -> tuple[float, int]:
  rng = np.random.default_rng(0)
  pops = Populations(names=["c0", "c1"], samples=[rng.normal(size=(4096, DIM))] * 2,
                     descriptors=np.eye(2), splits=["train", "train"])
  # cond_embed=0: the descriptor is concatenated raw, as in the PyTorch twin.
  model = MLP(hidden=(WIDTH,) * DEPTH, act="silu", time_frequencies=FREQ, cond_embed=0)
  method = CFM(model=model, base=Gaussian(event_shape=(DIM,)), coupling=Independent())
  opt = make_optimizer(name="adam", lr=1e-3)
  # A try (issue 25): Adam on one flat vector instead of one array per layer.
  opt = optax.flatten(opt) if flat_optimizer else opt
  trainer = Trainer(method, {"velocity": opt},
                    batch_size=BATCH, populations_per_batch=BATCH, ema_decay=0.999)
  data, ids = trainer.replicate(pack(pops)), jnp.arange(2)
  state = trainer.init(jax.random.key(0), data, ids)
  key = jax.random.key(1)
  state, _ = trainer.run(state, data, ids, key, spd)  # compile
  t0 = time.perf_counter()
  for _ in range(steps // spd):
    state, _ = trainer.run(state, data, ids, key, spd)
  return (steps // spd) * spd / (time.perf_counter() - t0), DIM + 2 * FREQ + 1 + 2


def peak_matmul_gflops(n: int = 2048, reps: int = 5) -> float:
  """Best GFLOP/s of one jitted float32 [n, n] x [n, n] matmul: this CPU's practical bound."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best / 1e9


def shape_matmul_gflops(in_dim: int, reps: int = 2000, spd: int = 100) -> float:
  """GFLOP/s of this step's own matmuls alone (forward and both backward products
  of every layer at batch B, chained in a scan, no element-wise work): the
  bound that matrices this small put on the step, below the 2048^3 peak."""
  layers = [(in_dim, WIDTH)] + [(WIDTH, WIDTH)] * (DEPTH - 1) + [(WIDTH, DIM)]
  rng = np.random.default_rng(0)
  ws = [jnp.asarray(rng.normal(size=s) / np.sqrt(s[0]), jnp.float32) for s in layers]
  x0 = jnp.asarray(rng.normal(size=(BATCH, in_dim)), jnp.float32)

  def body(x, _):
    hs = [x]
    for w in ws:
      hs.append(hs[-1] @ w)  # forward
    g, dws = hs[-1], []
    for h, w in zip(reversed(hs[:-1]), reversed(ws)):
      dws.append(h.T @ g)  # dW
      g = g @ w.T  # dX
    return x + 1e-6 * (g + sum(jnp.sum(d) for d in dws)), None

  f = jax.jit(lambda x: jax.lax.scan(body, x, None, length=spd)[0])
  x = jax.block_until_ready(f(x0))
  t0 = time.perf_counter()
  for _ in range(reps // spd):
    x = f(x)
  jax.block_until_ready(x)
  return reps // spd * spd * matmul_flops_per_step(in_dim) / (time.perf_counter() - t0) / 1e9


def bench_torch(steps: int, compiled: bool = False) -> float | None:
  """Steps/s of the PyTorch twin, eager or with the step under `torch.compile` (inductor)."""
  try:
    import torch
  except ImportError:
    print("torch not installed: skipping the PyTorch twin (pip install -e '.[bench]')")
    return None
  torch.manual_seed(0)
  in_dim = DIM + 2 * FREQ + 1 + 2
  layers, d = [], in_dim
  for _ in range(DEPTH):
    layers += [torch.nn.Linear(d, WIDTH), torch.nn.SiLU()]
    d = WIDTH
  net = torch.nn.Sequential(*layers, torch.nn.Linear(d, DIM))
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  data = torch.randn(4096, DIM)
  freqs = torch.logspace(0, np.log10(64.0), FREQ)
  cond_table = torch.eye(2)

  def loss_fn(x1, c, x0, t):
    xt = (1 - t) * x0 + t * x1
    ang = 2 * np.pi * t * freqs
    inp = torch.cat([xt, t, torch.sin(ang), torch.cos(ang), c], -1)
    return ((net(inp) - (x1 - x0)) ** 2).sum(-1).mean()

  def update(x1, c, x0, t):
    loss = loss_fn(x1, c, x0, t)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  # The whole update compiled, optimizer included (PyTorch's recipe for
  # compiling an optimizer step); the random draws stay outside, as in eager.
  update = torch.compile(update) if compiled else update

  def step():
    idx = torch.randint(0, 4096, (BATCH,))
    x1, c = data[idx], cond_table[torch.randint(0, 2, (BATCH,))]
    update(x1, c, torch.randn(BATCH, DIM), torch.rand(BATCH, 1))

  for _ in range(50):
    step()
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  return steps / (time.perf_counter() - t0)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--steps_per_dispatch", type=int, default=100)
  p.add_argument("--torch_steps", type=int, default=500, help="0: time flowzoo only")
  p.add_argument("--flat_optimizer", action="store_true",
                 help="a try: optax.flatten(adam), one parameter vector for the update")
  p.add_argument("--torch_compile", action=argparse.BooleanOptionalAction, default=True,
                 help="also time the PyTorch step under torch.compile (needs a C++ compiler)")
  a = p.parse_args()
  for name in ("steps", "steps_per_dispatch"):
    if getattr(a, name) < 1:
      p.error(f"--{name} must be >= 1, got {getattr(a, name)}")
  if a.steps < a.steps_per_dispatch:
    p.error(f"--steps ({a.steps}) must be >= --steps_per_dispatch ({a.steps_per_dispatch})")
  if a.torch_steps < 0:
    p.error(f"--torch_steps must be >= 0 (0: flowzoo only), got {a.torch_steps}")
  fz, in_dim = bench_flowzoo(a.steps, a.steps_per_dispatch, a.flat_optimizer)
  flops = matmul_flops_per_step(in_dim)
  print(f"flowzoo  CFM step (B={BATCH}, D={DIM}, MLP {DEPTH}x{WIDTH}, Adam, "
        f"{a.steps_per_dispatch} steps/dispatch): {fz:8.1f} steps/s  "
        f"{fz * flops / 1e9:6.1f} GFLOP/s")
  th = bench_torch(a.torch_steps) if a.torch_steps else None
  if th is not None:
    print(f"pytorch  same step, eager:                                   {th:8.1f} steps/s  "
          f"{th * flops / 1e9:6.1f} GFLOP/s")
    tc = bench_torch(a.torch_steps, compiled=True) if a.torch_compile else None
    if tc is not None:
      print(f"pytorch  same step, torch.compile (inductor):                {tc:8.1f} steps/s  "
            f"{tc * flops / 1e9:6.1f} GFLOP/s")
    print(f"ratio flowzoo / pytorch eager: {fz / th:.2f}x"
          + (f"; flowzoo / torch.compile: {fz / tc:.2f}x" if tc is not None else ""))
  peak = peak_matmul_gflops()
  bound = peak * 1e9 / flops
  note = f" = {bound / th:.2f}x pytorch eager" if th is not None else ""
  print(f"bound    peak f32 matmul {peak:6.1f} GFLOP/s -> at most {bound:8.1f} steps/s{note}")
  print(f"flowzoo at {fz / bound:.0%} of the FLOP bound (target >= 85 %)")
  shaped = shape_matmul_gflops(in_dim) * 1e9 / flops
  print(f"bound    this step's matmuls alone (B={BATCH}): at most {shaped:8.1f} steps/s; flowzoo "
        f"at {fz / shaped:.0%} of it")


if __name__ == "__main__":
  main()
