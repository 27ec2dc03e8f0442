"""Checkpoint selection by a validation score (MixFlow §5.1: "the best checkpoint based on
validation Wasserstein-2 distance"); `config.eval.select = "split/metric"`."""

from __future__ import annotations

import json
from pathlib import Path

import jax

from flowzoo import evaluate as eval_lib
from flowzoo.checkpoint import Checkpointer
from flowzoo.config import parse_select
from flowzoo.progress import Console


def select_checkpoint(exp, ckpt: Checkpointer, workdir: Path, rng: jax.Array, *,
                      generator=None, console=None, writer=None):
  """Restores the kept checkpoint with the lowest `eval.select` score.

  Every checkpoint is scored with the final evaluation's generation key `rng`
  and subsample, so differences are the checkpoints', and when `eval.splits` is
  just the selection split the reported metric equals the selection score.
  Writes `selection.json`: the score of each step, the selected step and the
  rule.

  Args:
    exp: the run's `flowzoo.experiment.Experiment`.
    ckpt: its checkpointer.
    workdir: where `selection.json` goes.
    rng: the final evaluation's key.
    generator: an `evaluate.Generator` to reuse (one compiled program for
      every checkpoint); None: a new one.
    console: a `flowzoo.progress.Console`: one line per checkpoint scored.
    writer: a `flowzoo.writers.MetricWriter`: each score as the TensorBoard
      scalar `selection/<split>/<metric>` at its step.
  Returns:
    the restored `TrainState` of the selected step.
  """
  ev = exp.config.eval
  split, metric = parse_select(ev.select)
  console = console or Console()
  generator = generator or eval_lib.Generator(exp.method, solver=ev.solver,
                                              num_steps=ev.num_steps, guidance=ev.guidance,
                                              chunk=ev.chunk)
  abstract = exp.abstract_state()
  steps = ckpt.all_steps()
  console.say(f"selecting the checkpoint by {ev.select} (lower is better): scoring "
              f"{len(steps)} kept checkpoints on {len(exp.pops.split_ids(split))} {split} "
              "conditions...")
  scores = {}
  for i, step in enumerate(steps):
    state = ckpt.restore(abstract, step)
    results, _ = eval_lib.evaluate(
        exp.method, state.ema, exp.pops, rng, splits=(split,),
        solver=ev.solver, num_steps=ev.num_steps, guidance=ev.guidance, metric_names=(metric,),
        max_samples=ev.max_samples, samples_per_condition=ev.samples_per_condition,
        chunk=ev.chunk, seed=exp.config.seed, generator=generator)
    scores[step] = results[metric][split]["mean"]
    console.say(f"checkpoint {i + 1}/{len(steps)} (step {step}): {split} {metric} = "
                f"{scores[step]:.4g}")
    if writer is not None:
      writer.scalar(f"selection/{split}/{metric}", scores[step], step)
  best = min(scores, key=scores.get)
  console.say(f"selected checkpoint {best} ({ev.select}); the last is {max(scores)}")
  tmp = workdir / "selection.json.tmp"
  tmp.write_text(json.dumps({"select": ev.select, "selected_step": best,
                             "scores": {str(k): v for k, v in scores.items()}}, indent=2))
  tmp.replace(workdir / "selection.json")
  return ckpt.restore(abstract, best)
