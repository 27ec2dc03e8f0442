"""Runs on streamed image crops: `ImageExperiment`, built by `flowzoo.experiment.setup`.

The vector datasets live on the device and the train step draws its own
minibatch (`flowzoo.train.Trainer.run`). Crops need not fit in memory: the
grain pipeline (`flowzoo.data.crops_pipeline`) reads global step s's batch
from disk, each process its own rows, and the step trains on it
(`Trainer.run_batches`). A batch is a pure function of (seed, step), so a run
resumed at step s reads the batches an uninterrupted run reads: the iterator
restarts at the restored step, no iterator state is checkpointed.
Evaluation is `flowzoo.image_eval`'s (FID_o/FID_c/KID, accuracy, image and
trajectory grids). Checkpoint selection (`eval.select`) is not offered for
images yet: it is refused before anything is built.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from flowzoo import build as build_lib
from flowzoo import config as config_lib
from flowzoo import image_eval
from flowzoo.experiment import Training, log_evaluation, make_trainer
from flowzoo.train import Trainer, TrainState

# Training batches whose x1 feed a method's data-dependent initialisation.
INIT_BATCHES = 4


@dataclasses.dataclass
class ImageExperiment(Training):
  """Data pipeline, method and trainer of an image config (no I/O beyond the dataset)."""

  config: ml_collections.ConfigDict
  data: Any  # flowzoo.data.crops.Crops
  method: object
  trainer: Trainer
  pipe: Any  # flowzoo.data.crops_pipeline.CropsPipeline
  _it: Any = None
  _next_step: int = -1

  def describe(self) -> str:
    return (f"dataset: {self.data.info} | {len(self.data.names)} conditions, event shape "
            f"{self.data.event_shape}, descriptor dim {self.pipe.cond_dim}")

  def init(self) -> TrainState:
    """Initial state, with the method's data-dependent initialisation applied."""
    seed = self.config.seed
    state = self.trainer.init_from_batch(jax.random.key(seed), self.pipe.batch(0))
    # Whole global batches: every process must compute the same parameters.
    whole = self.data.pipeline(batch_size=self.trainer.batch_size, seed=seed, whole=True)
    batches = [whole.batch(s) for s in range(INIT_BATCHES)]
    params = self.method.init_from_data(
        jax.device_get(state.params), np.concatenate([b["x1"] for b in batches]),
        np.concatenate([b["group"] for b in batches]), seed=seed)
    # Separate copies: params and EMA are donated buffers of the train step.
    return state.replace(params=self.trainer.replicate(params),
                         ema=self.trainer.replicate(jax.tree.map(np.copy, params)))

  def abstract_state(self) -> TrainState:
    """Shapes and shardings of the train state (no compute): the restore target."""
    return self.trainer.abstract_state_from_batch(jax.random.key(self.config.seed),
                                                  self.pipe.batch(0))

  def dispatch(self, state: TrainState, rng: jax.Array,
               num_steps: int) -> tuple[TrainState, dict]:
    """`num_steps` updates on the pipeline's batches from `state.step` on (one dispatch)."""
    step = int(state.step)
    if self._it is None or self._next_step != step:  # first call, or resumed elsewhere
      self.close()
      self._it = self.pipe.iterator(start_step=step)
    batches = [next(self._it) for _ in range(num_steps)]
    self._next_step = step + num_steps
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    return self.trainer.run_batches(state, stacked, rng)

  def close(self) -> None:
    """Stops the pipeline's worker processes (a later `dispatch` restarts them)."""
    self._it, self._next_step = None, -1

  def evaluate_and_write(self, state: TrainState, workdir: Path, console, writer) -> dict:
    """Final evaluation: eval.json, samples.npz, image and trajectory grids, TensorBoard."""
    t0, step = time.perf_counter(), int(state.step)
    rng = jax.random.key(self.config.seed + 2)
    results, samples, refs = image_eval.evaluate(self, state.ema, rng, console=console)
    tmp = workdir / "eval.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(workdir / "eval.json")
    np.savez_compressed(workdir / "samples.npz", **samples)
    console.say("plotting...")
    figures = []
    for split, ref in refs.items():
      gen = {n: samples[f"{split}/{n}"] for n in ref.names}
      figures.append((f"{split}/real_vs_generated", image_eval.image_grid(
          workdir / f"{split}_real_vs_generated.png", ref, gen,
          max_conditions=self.config.eval.plot_conditions)))
    split = "heldout" if "heldout" in refs else next(iter(refs), None)
    if split is not None:
      ref = refs[split]
      name = ref.names[-1]  # the last condition: the highest dose of the last compound
      paths = image_eval.trajectories(self, state.ema, ref, name)
      np.savez_compressed(workdir / "trajectories.npz", times=image_eval.TRAJECTORY_TIMES,
                          condition=name, **paths)
      figures.append((f"{split}/trajectories", image_eval.trajectory_grid(
          workdir / f"{split}_trajectories.png", paths["forward"], paths["backward"],
          f"{name}: forward from held-out controls, backward from held-out treated cells")))
    log_evaluation(self.config, step, results, figures, writer, console, t0)
    return results


def setup(config, *, quiet_unused: bool = False) -> ImageExperiment:
  """`flowzoo.experiment.setup` for a streamed dataset; raises on bad input before compiling."""
  if config_lib.parse_select(config.eval.select):
    raise ValueError(f"config.eval.select={config.eval.select!r}: checkpoint selection is not "
                     f"available for image datasets ({config.dataset.name!r}); set "
                     "--config.eval.select= (the last checkpoint is evaluated).")
  unknown = sorted(set(config.eval.metrics) - set(image_eval.METRICS))
  if unknown:
    raise KeyError(f"config.eval.metrics: unknown metric(s) {unknown} for image data; valid: "
                   f"{list(image_eval.METRICS)}.")
  data = build_lib.build(build_lib.DATASETS, config.dataset, "dataset")
  if not any(data.has_split(s) for s in config.eval.splits):
    raise ValueError(f"config.eval.splits={tuple(config.eval.splits)}: the crops dataset has "
                     f"splits {[s for s in ('train', 'heldout') if data.has_split(s)]}.")
  pipe = data.pipeline(batch_size=config.data.batch_size, seed=config.seed)
  method = build_lib.build_method(config, event_shape=data.event_shape, cond_dim=pipe.cond_dim,
                                  total_steps=config.train.steps, num_conditions=len(data.names),
                                  warn_unused=not quiet_unused)
  return ImageExperiment(config, data, method, make_trainer(config, method, quiet_unused), pipe)
