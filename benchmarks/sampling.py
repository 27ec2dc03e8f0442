"""Sampling throughput: flowzoo (JAX, diffrax) vs PyTorch + torchdiffeq, same MLP field.

The velocity field is flowzoo's MLP (3 x 256, SiLU, 8 Fourier time
frequencies, unconditional) RANDOMLY INITIALISED (seed 0), not trained: the
throughput of a fixed-step solver does not depend on the weights, and an
adaptive solver's step count is printed next to its time. The PyTorch twin
copies the same weights (the outputs are compared). 10k samples from
N(0, I) in `--dim` dimensions are integrated from t = 0 to 1 with

  * fixed-step Euler, 100 steps (flowzoo `integrate(solver="euler")`,
    torchdiffeq `method="euler"`, step 0.01);
  * adaptive dopri5 at the same rtol = atol (diffrax `Dopri5` + PID
    controller, as `integrate(solver="dopri5")`; torchdiffeq `dopri5`); both
    use one step size for the whole batch (RMS error norm over all samples).

Prints samples/s per solver and framework and the ratio JAX / torch. torch
and torchdiffeq are optional (`pip install -e .[bench]`: torch==2.13.0 is a
local CPU wheel; install torchdiffeq with `-c` torch==2.13.0 so pip never
fetches a CUDA build); without them only the JAX rows are printed.

    python benchmarks/sampling.py [--samples 10000] [--dim 16] [--tol 1e-5] [--repeats 3]

Measured on the idle 2-core CPU (2026-12-02, a 2048^3 matmul at 347-373
GFLOP/s, two runs of the default): Euler 100 JAX 8354-8586 samples/s,
torch 10137-10141 (JAX / torch 0.82-0.85x); dopri5 JAX 2816-2954, torch
3103 (0.91-0.95x; diffrax 47 steps, torchdiffeq 290 evaluations).
Where JAX's Euler goes (scratch script, batch 10k, same weights, one run):
`integrate(solver="euler")` 1243 ms, a hand-written `lax.scan` Euler 1236
ms, the MLP's matmuls alone 943 ms (torch's whole solve: 986 ms), the
matmuls plus SiLU 1130 ms. So JAX loses on element-wise work (SiLU, time
features, biases), not in the solver. Flags did not help Euler:
`XLA_FLAGS=--xla_cpu_use_xnnpack=true` (one benchmark run: Euler 0.84x;
dopri5 1.02x, JAX 3230 ms against 3386-3551 ms without the flag, one run
only, so not established) and `--xla_cpu_use_thunk_runtime=false`
(`integrate` 1276 ms).
"""

from __future__ import annotations

import argparse
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from flowzoo.models.mlp import MLP
from flowzoo.sampling import integrate

HIDDEN, FREQS = (256, 256, 256), 8


def best_time(fn, repeats: int, name: str = "", samples: int = 0) -> float:
  """Best wall time of `repeats` calls after a warm-up (compile) call; printed at once."""
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  if name:
    print(f"  {name:<18} {min(times) * 1e3:9.1f} ms  {samples / min(times):12.0f} samples/s",
          flush=True)
  return min(times)


def torch_field(params):
  """The flax MLP's forward pass in torch, with the same weights (None if torch is absent)."""
  try:
    import torch
    import torchdiffeq  # noqa: F401  (checked here, used by the caller)
  except ImportError as e:
    print(f"torch/torchdiffeq not importable ({e}); JAX rows only. Install: "
          "pip install torch==2.13.0 && pip install torchdiffeq -c <(echo torch==2.13.0)")
    return None
  p = params["params"]
  names = [f"dense_{i}" for i in range(len(HIDDEN))] + ["out"]
  layers = []
  for name in names:
    lin = torch.nn.Linear(*np.asarray(p[name]["kernel"]).shape)
    with torch.no_grad():
      lin.weight.copy_(torch.from_numpy(np.asarray(p[name]["kernel"]).T.copy()))
      lin.bias.copy_(torch.from_numpy(np.asarray(p[name]["bias"]).copy()))
    layers.append(lin)
  freqs = torch.from_numpy(np.geomspace(1.0, 64.0, FREQS).astype(np.float32))

  class Field(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.layers = torch.nn.ModuleList(layers)

    def forward(self, t, x):  # flowzoo.models.embeddings.fourier_time, then the MLP
      tt = t.reshape(1, 1).expand(x.shape[0], 1)
      ang = 2 * np.pi * tt * freqs[None, :]
      h = torch.cat([x, tt, torch.sin(ang), torch.cos(ang)], -1)
      for lin in self.layers[:-1]:
        h = torch.nn.functional.silu(lin(h))
      return self.layers[-1](h)

  return Field().eval()


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--samples", type=int, default=10000)
  p.add_argument("--dim", type=int, default=16)
  p.add_argument("--tol", type=float, default=1e-5)
  p.add_argument("--repeats", type=int, default=3)
  a = p.parse_args()
  model = MLP(hidden=HIDDEN, act="silu", time_frequencies=FREQS, cond_embed=0)
  x0 = jax.random.normal(jax.random.key(1), (a.samples, a.dim))
  params = model.init(jax.random.key(0), jnp.zeros((1,)), x0[:1], None)
  v = lambda t, x: model.apply(params, t, x, None)  # noqa: E731
  euler = jax.jit(lambda x: integrate(v, x, solver="euler", num_steps=100))
  dopri = jax.jit(lambda x: integrate(v, x, solver="dopri5", rtol=a.tol, atol=a.tol))
  stats = jax.jit(lambda x: diffrax.diffeqsolve(
      diffrax.ODETerm(lambda t, y, _: v(jnp.broadcast_to(t, (y.shape[0],)), y)),
      diffrax.Dopri5(), 0.0, 1.0, None, x,
      stepsize_controller=diffrax.PIDController(rtol=a.tol, atol=a.tol)).stats)(x0)
  print(f"{a.samples} samples, dim {a.dim}, MLP {len(HIDDEN)}x{HIDDEN[0]} (random init), "
        f"tol {a.tol}; jax {jax.__version__} on {jax.devices()[0].platform}; times move with "
        "the machine's load: compare ratios from one run")
  res = {}
  res["jax euler 100"] = best_time(lambda: euler(x0).block_until_ready(), a.repeats,
                                   "jax euler 100", a.samples)
  res["jax dopri5"] = best_time(lambda: dopri(x0).block_until_ready(), a.repeats, "jax dopri5",
                                a.samples)
  print(f"  diffrax dopri5: {int(stats['num_accepted_steps'])} accepted / "
        f"{int(stats['num_steps'])} steps")
  field = torch_field(params)
  if field is not None:
    import torch
    from torchdiffeq import odeint
    xt = torch.from_numpy(np.array(x0))  # a writable copy
    ts = torch.tensor([0.0, 1.0])

    def run_torch(method, **kw):
      with torch.no_grad():
        return odeint(field, xt, ts, method=method, **kw)[-1]

    diff = np.abs(run_torch("euler", options=dict(step_size=0.01)).numpy()
                  - np.asarray(euler(x0))).max()
    print(f"  max |x1_torch - x1_jax| (euler): {diff:.2e}")
    res["torch euler 100"] = best_time(lambda: run_torch("euler", options=dict(step_size=0.01)),
                                       a.repeats, "torch euler 100", a.samples)
    nfe = [0]
    counted = lambda t, x: (nfe.__setitem__(0, nfe[0] + 1), field(t, x))[1]  # noqa: E731
    with torch.no_grad():
      odeint(counted, xt, ts, method="dopri5", rtol=a.tol, atol=a.tol)
    print(f"  torchdiffeq dopri5: {nfe[0]} function evaluations")
    res["torch dopri5"] = best_time(lambda: run_torch("dopri5", rtol=a.tol, atol=a.tol),
                                    a.repeats, "torch dopri5", a.samples)
  for solver in ("euler 100", "dopri5"):
    if f"torch {solver}" in res:
      print(f"  {solver}: JAX / torch throughput {res[f'torch {solver}'] / res[f'jax {solver}']:.2f}x")


if __name__ == "__main__":
  main()
