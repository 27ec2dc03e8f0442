"""PRiMeFlow's gene-axis U-Net vs an MLP: CFM train steps/s and memory at 500 genes.

PRiMeFlow (§3.1, Remark 1) parameterises the velocity field with a 1-D U-Net
over the gene axis (each gene value sinusoidally encoded and lifted to
`channels` features, plus a learned per-gene embedding) and reports that it
beats an MLP. This times one CFM train step (Gaussian base, independent
coupling, Adam, CFG condition dropout 0.2, batch `--batch`) for

* the U-Net of `primeflow_perturbench.py:runlocal` (default) or of the full
  `:paper` config (`--paper`, PRiMeFlow Table 11: 256 channels, mult (1,1,2,2,4), 2 res
  blocks, attention at the lowest level; GPU-sized), and
* the MLP of `primeflow_perturbench.py:mlp_runlocal` (or `:mlp_paper` with `--paper`),

on random data of `--genes` genes (500 = PerturBench devel), and prints
steps/s, their ratio, and XLA's memory estimate of one compiled step
(`Compiled.memory_analysis()`: arguments + outputs + temporaries; the
activations the backward pass keeps are the temporaries).

    python benchmarks/unet_genes.py [--genes 500] [--batch 32] [--steps 200] [--paper]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import primeflow_perturbench
from flowzoo.bases.gaussian import Gaussian
from flowzoo.couplings.independent import Independent
from flowzoo.data.populations import Populations, pack
from flowzoo.methods.cfm import CFM
from flowzoo.models.mlp import MLP
from flowzoo.models.unet import UNet
from flowzoo.train import Trainer, make_optimizer

CONDITIONS = 8


def model_kwargs(variant: str) -> dict:
  """The `model` section of a primeflow_perturbench variant, without its name."""
  section = primeflow_perturbench.get_config(variant).model.to_dict()
  section.pop("name")
  return section


def trainer_for(model, genes: int, batch: int):
  rng = np.random.default_rng(0)
  pops = Populations(names=[f"c{i}" for i in range(CONDITIONS)],
                     samples=[np.abs(rng.normal(size=(256, genes)))] * CONDITIONS,
                     descriptors=np.eye(CONDITIONS), splits=["train"] * CONDITIONS)
  method = CFM(model=model, base=Gaussian(event_shape=(genes,)), coupling=Independent(),
               p_uncond=0.2, group_coupling=False)
  trainer = Trainer(method, {"velocity": make_optimizer(name="adam", lr=1e-4, grad_clip=5.0)},
                    batch_size=batch, populations_per_batch=batch, ema_decay=0.999)
  return trainer, trainer.replicate(pack(pops)), jnp.arange(CONDITIONS)


def step_memory_mb(trainer, state, data, ids) -> float:
  """XLA's estimate of one compiled train step: arguments + outputs + temporaries."""
  compiled = jax.jit(trainer.train_step).lower(state, data, ids, jax.random.key(1)).compile()
  m = compiled.memory_analysis()
  total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
  return total / 2**20, m.temp_size_in_bytes / 2**20


def bench(model, genes: int, batch: int, steps: int, spd: int):
  trainer, data, ids = trainer_for(model, genes, batch)
  state = trainer.init(jax.random.key(0), data, ids)
  params = sum(x.size for x in jax.tree.leaves(state.params["velocity"]))
  mem, temp = step_memory_mb(trainer, state, data, ids)
  key = jax.random.key(1)
  state, _ = trainer.run(state, data, ids, key, spd)  # compile
  t0 = time.perf_counter()
  for _ in range(max(steps // spd, 1)):
    state, _ = trainer.run(state, data, ids, key, spd)
  rate = max(steps // spd, 1) * spd / (time.perf_counter() - t0)
  return rate, params, mem, temp


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--genes", type=int, default=500)
  p.add_argument("--batch", type=int, default=32, help="Both models (runlocal U-Net: 32).")
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--steps_per_dispatch", type=int, default=50)
  p.add_argument("--paper", action="store_true", help="PRiMeFlow Table 11 U-Net size.")
  a = p.parse_args()
  unet_kw = model_kwargs("paper" if a.paper else "runlocal")
  mlp_kw = model_kwargs("mlp_paper" if a.paper else "mlp_runlocal")
  rows = []
  for name, model in (("U-Net", UNet(**unet_kw)), ("MLP", MLP(**mlp_kw))):
    rate, params, mem, temp = bench(model, a.genes, a.batch, a.steps, a.steps_per_dispatch)
    rows.append((name, rate, params, mem, temp))
  print(f"CFM train step, {a.genes} genes, batch {a.batch}, Adam, {jax.devices()[0].platform}; "
        f"{'full' if a.paper else 'runlocal'} configs")
  print(f"{'model':<8}{'steps/s':>10}{'params':>12}{'step memory MB':>17}{'of which temp':>15}")
  for name, rate, params, mem, temp in rows:
    print(f"{name:<8}{rate:>10.1f}{params:>12,}{mem:>17.1f}{temp:>15.1f}")
  print(f"U-Net / MLP steps/s: {rows[0][1] / rows[1][1]:.3f}")


if __name__ == "__main__":
  main()
