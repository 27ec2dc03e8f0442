"""`train_and_evaluate(config, workdir)`: the whole run behind `experiments.run`.

Also the notebook API: `setup(config)` builds data, method and trainer
without touching the file system; `Experiment.train`/`generate` use them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flowzoo import build as build_lib
from flowzoo import evaluate as eval_lib
from flowzoo import config as config_lib
from flowzoo import distributed, domain_eval, generated_cells, perturbation_eval, plots, selection
from flowzoo.checkpoint import Checkpointer
from flowzoo.config import RESUME_SAFE
from flowzoo.data.populations import Packed, Populations, pack
from flowzoo.train import Trainer, TrainState, make_optimizer
from flowzoo.workdir_lock import WorkdirLock
from flowzoo.progress import Console, Progress
from flowzoo.writers import MetricWriter, eval_scalars


class Training:
  """`train`, the notebook API over a run's `dispatch` (vector and image experiments)."""

  def train(self, state: TrainState, num_steps: int) -> tuple[TrainState, dict]:
    """Runs `num_steps` more updates (a multiple of `train.steps_per_dispatch`).

    `state`'s buffers are donated to the update: use the returned state.
    """
    spd = self.config.train.steps_per_dispatch
    if num_steps < 1 or num_steps % spd:
      raise ValueError(f"Experiment.train: num_steps={num_steps} must be a positive multiple "
                       f"of config.train.steps_per_dispatch={spd}.")
    rng = jax.random.key(self.config.seed + 1)
    logs = []
    for _ in range(num_steps // spd):
      state, m = self.dispatch(state, rng, spd)
      logs.append(m)
    return state, {k: np.concatenate([m[k] for m in logs]) for k in logs[0]} if logs else {}


@dataclasses.dataclass
class Experiment(Training):
  """Data, method and trainer built from one config (no I/O)."""

  config: ml_collections.ConfigDict
  pops: Populations
  method: object
  trainer: Trainer
  packed: Packed
  train_ids: jax.Array

  def init(self) -> TrainState:
    """Initial state, with the method's data-dependent initialisation applied."""
    state = self.trainer.init(jax.random.key(self.config.seed), self.packed, self.train_ids)
    ids = np.asarray(self.train_ids)
    x = np.concatenate([self.pops.samples[k] for k in ids])
    groups = np.repeat(ids, [len(self.pops.samples[k]) for k in ids])
    params = self.method.init_from_data(jax.device_get(state.params), x, groups,
                                        seed=self.config.seed)
    # Separate copies: params and EMA are donated buffers of the train step.
    return state.replace(params=self.trainer.replicate(params),
                         ema=self.trainer.replicate(jax.tree.map(np.copy, params)))

  def abstract_state(self) -> TrainState:
    """Shapes and shardings of the train state (no compute): the restore target."""
    return self.trainer.abstract_state(jax.random.key(self.config.seed), self.packed,
                                       self.train_ids)

  def describe(self) -> str:
    return (f"dataset: {self.pops.info or self.config.dataset.name} | {len(self.pops.names)} "
            f"conditions, event shape {self.pops.event_shape}, descriptor dim "
            f"{self.pops.cond_dim}")

  def dispatch(self, state: TrainState, rng: jax.Array,
               num_steps: int) -> tuple[TrainState, dict]:
    """`num_steps` updates in one dispatch (minibatches drawn inside the step)."""
    return self.trainer.run(state, self.packed, self.train_ids, rng, num_steps)

  def close(self) -> None:
    """Nothing to release: the data lives on the device (cf. `ImageExperiment.close`)."""

  def generate(self, params, condition: str | int, num: int, seed: int = 0) -> np.ndarray:
    """`[num, *event]` samples of one condition (by name or index)."""
    names = self.pops.names
    if isinstance(condition, str):
      if condition not in names:
        close = difflib.get_close_matches(condition, names, n=3)
        raise KeyError(f"Experiment.generate: unknown condition {condition!r}"
                       f"{f'; did you mean {close}' if close else ''} ({len(names)} conditions, "
                       f"e.g. {names[:5]}).")
      k = names.index(condition)
    else:
      k = int(condition)
      if not 0 <= k < len(names):  # a negative index would silently pick from the end
        raise IndexError(f"Experiment.generate: condition index {k} not in [0, {len(names)}).")
    if num < 1:
      raise ValueError(f"Experiment.generate: num must be >= 1, got {num}.")
    batch = eval_lib.condition_batch(self.pops, [k], [num], np.random.default_rng(seed))
    ev = self.config.eval
    return np.asarray(jax.jit(lambda p, r, b: self.method.generate(
        p, r, b, solver=ev.solver, num_steps=ev.num_steps, guidance=ev.guidance))(
            params, jax.random.key(seed), {k_: jnp.asarray(v) for k_, v in batch.items()}))


def setup(config, *, quiet_unused: bool = False) -> Experiment:
  """Builds everything a run needs from `config`; raises on bad input.

  Args:
    quiet_unused: do not warn about settings no built component uses (a
      swapped-out component's fields, optimizer overrides of a parameter
      group the method lacks). For baseline arms, whose parent config set
      them for its own components (`flowzoo.config.baseline_arms`).
  """
  config_lib.validate(config)
  if getattr(build_lib.DATASETS.get(config.dataset.name), "streamed", False):
    from flowzoo import image_experiment  # pylint: disable=import-outside-toplevel
    return image_experiment.setup(config, quiet_unused=quiet_unused)
  pops = build_lib.build_dataset(config)
  train_ids = pops.split_ids("train")
  # population_rows: `sample_batch` lays populations out as contiguous runs,
  # so an exact coupling solves only their diagonal blocks (couplings/exact.py).
  method = build_lib.build_method(
      config, event_shape=pops.event_shape, cond_dim=pops.cond_dim,
      total_steps=config.train.steps, num_conditions=len(pops.names),
      population_rows=config.data.batch_size // config.data.populations_per_batch,
      warn_unused=not quiet_unused)
  if method.base.needs_sources and pops.sources is None:
    raise ValueError(f"base {config.base.name!r} needs source samples (control cells), but "
                     f"dataset {config.dataset.name!r} provides no `sources`.")
  config_lib.validate_built(config, pops, eval_lib.valid_metrics(method))
  trainer = make_trainer(config, method, quiet_unused)
  packed = trainer.replicate(pack(pops))
  return Experiment(config, pops, method, trainer, packed,
                    trainer.replicate(jnp.asarray(train_ids, jnp.int32)))


def make_trainer(config, method, quiet_unused: bool = False) -> Trainer:
  """The trainer of `method` with one optimizer per parameter group, from `config`."""
  unused = config_lib.unused_groups(config, method.groups)
  if unused and not quiet_unused:
    # Not an error: `--config.base.name=gaussian` turns MixFlow into CFM, which
    # has no base parameters, and must keep working as one config line.
    logging.warning("config.optim_overrides: method %r has no parameter group(s) %s (its "
                    "groups: %s); those overrides are unused.", config.method.name, unused,
                    list(method.groups))
  optimizers = {}
  for g in method.groups:
    try:
      optimizers[g] = make_optimizer(**config_lib.optimizer_kwargs(config, g),
                                     total_steps=config.train.steps)
    except (KeyError, ValueError) as e:
      raise type(e)(f"parameter group {g!r} (config.optim / optim_overrides.{g}): {e}") from e
  return Trainer(method, optimizers, batch_size=config.data.batch_size,
                 populations_per_batch=config.data.populations_per_batch,
                 ema_decay=config.train.ema_decay, unroll=config.train.unroll)


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during training, with the step reached and where a rerun resumes."""


# What a run writes besides config.json and checkpoints/ (see train_and_evaluate).
RUN_OUTPUTS = ("train_metrics.jsonl", "tensorboard", "eval.json", "samples.npz",
                "selection.json", "*_real_vs_generated.png", "*_flow.png", "*_pca_*.png",
                "*_trajectories.png", "trajectories.npz",
                "*_metrics.png", generated_cells.FILE, "perturbench.txt", "perturbench.json")


def train_and_evaluate(config, workdir: str | Path, *, overwrite: bool = False,
                       reevaluate: bool = False, console: Console | None = None,
                       arm: bool = False) -> dict:
  """Trains (resuming from `workdir` if possible), evaluates and writes outputs.

  Writes to `workdir`: config.json, checkpoints/, train_metrics.jsonl,
  tensorboard/, eval.json, samples.npz, selection.json (with eval.select)
  and PNG plots (`flowzoo.plots.plot_run`). `overwrite` (a workdir holding
  another config's run) deletes that run's checkpoints and these outputs
  first. A finished run of the same config with the same evaluation settings
  (`flowzoo.config.finished_run`) is not evaluated again: its eval.json is
  returned, unless `reevaluate`. In a multi-process run every process trains
  and checkpoints; only the primary one prints, writes and evaluates, and the
  others return `{}` (`flowzoo.distributed`).

  Args:
    console: where progress lines go (a multi-run job's carries the run's
      "[run i/N (name)]" prefix); None: plain lines on stdout.
    arm: the config is a baseline arm its parent config defines
      (`flowzoo.config.baseline_arms`): the parent's settings for components
      the arm swapped out are expected, not warned about.
  Returns:
    the evaluation results (metric -> split -> mean / per_condition).
  """
  workdir = Path(workdir)
  console = console or Console()
  if not reevaluate and config_lib.finished_run(config, workdir):
    console.say(f"{workdir} holds this config's finished run with the same evaluation "
                f"settings: reusing its eval.json (--reevaluate scores it again).")
    results = json.loads((workdir / "eval.json").read_text())
    console.say("\n" + eval_lib.results_table(results))
    return results
  if jax.process_count() > 1 and config_lib.parse_select(config.eval.select):
    raise ValueError(
        f"eval.select={config.eval.select!r}: checkpoint selection restores and scores every "
        "kept checkpoint in the primary process alone, which a multi-process run cannot do. "
        "Train with --config.eval.select= here, or run the same command again in one process "
        "to select and evaluate.")
  if not distributed.is_primary():
    console = Console(stream=open(os.devnull, "w"))  # pylint: disable=consider-using-with
  exp = setup(config, quiet_unused=arm)
  console.say(exp.describe())
  console.say(f"devices: {jax.device_count()} x {jax.devices()[0].platform}"
              + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""))
  # One lock per run, held by the primary process (`flowzoo.distributed`).
  with WorkdirLock(workdir) if distributed.is_primary() else contextlib.nullcontext():
    return _train_and_evaluate_locked(exp, workdir, overwrite, console)


def _train_and_evaluate_locked(exp: Experiment, workdir: Path, overwrite: bool,
                               console: Console) -> dict:
  config = exp.config
  ckpt = Checkpointer(workdir, config_lib.resolved(config).to_dict(),
                      keep=config.train.keep_checkpoints, overwrite=overwrite,
                      resume_safe=RESUME_SAFE + config_lib.evaluation_only_keys(config),
                      outputs=RUN_OUTPUTS)
  state = restore_or_init(exp, ckpt, console)
  t = config.train
  start = int(state.step)
  rng = jax.random.key(config.seed + 1)
  primary = distributed.is_primary()
  writer = MetricWriter(workdir, start) if primary else None
  progress = Progress(t.steps, start, console)
  try:
    step = start
    while step < t.steps:
      if step == start:  # the first dispatch compiles the step: say so, and how long it took
        progress.compiling(t.steps_per_dispatch)
      state, m = exp.dispatch(state, rng, t.steps_per_dispatch)
      if step == start:
        progress.compiled(step + t.steps_per_dispatch, t.steps_per_dispatch)
      step += t.steps_per_dispatch
      ckpt.check()  # a failed background save stops the run now, not a save later
      if writer is not None and (step % t.log_every == 0 or step == t.steps):
        scalars = {k: float(np.mean(v)) for k, v in m.items()}
        scalars["steps_per_s"] = progress.steps_per_second(step)
        writer.write(step, scalars)
        progress.print(step, {k: scalars[k] for k in ("loss", "grad_norm")})
      if step % t.ckpt_every == 0 or step == t.steps:
        ckpt.save(step, state)
    ckpt.wait()
    if start >= t.steps:
      console.say(f"restored a finished run at step {start}; evaluating only.")
    if jax.process_count() > 1:  # the primary evaluates alone, from a host copy
      state = jax.device_get(state)
      if not primary:
        distributed.barrier("evaluated")
        return {}
    exp.close()
    ev = config.eval
    if not isinstance(exp, Experiment):  # streamed images (`flowzoo.image_experiment`)
      results = exp.evaluate_and_write(state, workdir, console, writer)
      distributed.barrier("evaluated")
      return results
    generator = eval_lib.Generator(exp.method, solver=ev.solver, num_steps=ev.num_steps,
                                   guidance=ev.guidance, chunk=ev.chunk)
    if config_lib.parse_select(ev.select):
      state = selection.select_checkpoint(exp, ckpt, workdir, _eval_key(config),
                                          generator=generator, console=console, writer=writer)
    results = _evaluate_and_write(exp, state, workdir, generator, console, writer)
    distributed.barrier("evaluated")
    return results
  except FloatingPointError as e:  # diverged: say where a rerun resumes and what to change
    raise FloatingPointError(f"{e} {_divergence_advice(config, ckpt)}") from None
  except KeyboardInterrupt:
    raise Interrupted(f"interrupted at step {step}; run the same command again to resume "
                      f"(from the checkpoint of step {ckpt.latest_step()}).") from None
  finally:
    exp.close()
    if writer is not None:
      writer.close()
    ckpt.close()


def restore_or_init(exp: Experiment, ckpt: Checkpointer,
                    console: Console | None = None) -> TrainState:
  """The newest usable checkpoint (damaged ones are skipped), else a fresh state."""
  if ckpt.latest_step() is None:
    return exp.init()
  state = ckpt.restore(exp.abstract_state())
  (console or Console()).say(f"resuming from checkpoint at step {int(state.step)}")
  return state


def _divergence_advice(config, ckpt: Checkpointer) -> str:
  ckpt.wait()  # a save still being written is the last good one
  last = ckpt.last_saved_step()
  o = config.optim
  return ((f"The last good checkpoint is step {last} ({ckpt.directory / str(last)}); a rerun "
           f"resumes from it. " if last is not None else "No checkpoint was saved. ")
          + f"Training diverged: lower the learning rate (config.optim.lr, now {o.lr:g}) or "
          + (f"the gradient clip (config.optim.grad_clip, now {o.grad_clip:g})." if o.grad_clip
             else "clip gradients (config.optim.grad_clip, now 0 = off; e.g. 1.0)."))


def _eval_key(config) -> jax.Array:
  return jax.random.key(config.seed + 2)


def _evaluate_and_write(exp: Experiment, state: TrainState, workdir: Path,
                        generator: eval_lib.Generator, console: Console,
                        writer: MetricWriter) -> dict:
  """Final evaluation: eval.json, samples.npz, plots, and all of it in TensorBoard."""
  ev, step = exp.config.eval, int(state.step)
  t0 = time.perf_counter()
  rng = _eval_key(exp.config)
  results, samples = eval_lib.evaluate(
      exp.method, state.ema, exp.pops, rng, splits=ev.splits, solver=ev.solver,
      num_steps=ev.num_steps, guidance=ev.guidance, metric_names=ev.metrics,
      max_samples=ev.max_samples, samples_per_condition=ev.samples_per_condition,
      chunk=ev.chunk, seed=exp.config.seed, generator=generator, console=console)
  if (domain := domain_eval.for_config(exp.config)):  # e.g. retrieval, MoA, DEG recall
    results.update(domain.score_run(exp.config, exp.pops, samples, ev.splits))
  tmp = workdir / "eval.json.tmp"
  tmp.write_text(json.dumps(results, indent=2))
  tmp.replace(workdir / "eval.json")
  np.savez_compressed(workdir / "samples.npz", **samples)
  console.say("plotting...")
  figures = plots.plot_run(exp.method, state.ema, exp.pops, samples, results, workdir, rng, ev)
  log_evaluation(exp.config, step, results, figures, writer, console, t0)
  if (h5ad := perturbation_eval.after_evaluation(workdir, exp.config, samples)):
    console.say(f"generated cells: {h5ad}")
  return results


def log_evaluation(config, step: int, results: dict, figures, writer: MetricWriter,
                   console: Console, t0: float) -> None:
  """Evaluation scores, figures (`[(tag, png)]`) and the config to TensorBoard; the table."""
  writer.eval_results(step, results)
  for tag, path in figures:
    writer.image(tag, path, step)
  writer.hparams(config_lib.resolved(config).to_dict(), eval_scalars(results))
  console.say(f"evaluation took {time.perf_counter() - t0:.1f}s; figures: "
              f"{', '.join(sorted({p.name for _, p in figures}))}")
  console.say("\n" + eval_lib.results_table(results))


def train_with_baselines(config, workdir: str | Path, *, overwrite: bool = False,
                         reevaluate: bool = False, label: str = "",
                         results: str | Path | None = None, command: str = "") -> dict:
  """Trains `config` in `workdir` and each of its `baselines` arms beside it; one table.

  The arms (`config.baselines`: name -> overrides, see
  `flowzoo.config.baseline_arms`) run in `workdir/baselines/<name>`, each a
  plain `train_and_evaluate` whose lines carry "[run i/N (name)]"; finished
  ones are reused unless `reevaluate`. The table (the
  config's first tabulated split, every `eval.metrics`) is printed and
  written to `workdir/comparison.{md,json,csv,png}` by the report writer.

  Args:
    label: the config's row name (e.g. its file's stem).
    results: a `results/<config>.md` page to write the table into (section
      "<label> run"), with `command`.
  Returns:
    `{arm name: eval results}`, the config itself first (named `label`);
    `{}` as the results in the non-primary processes of a multi-process run.
  """
  from flowzoo import report  # pylint: disable=import-outside-toplevel
  from flowzoo.sweep import Point  # pylint: disable=import-outside-toplevel
  workdir = Path(workdir)
  arms = config_lib.baseline_arms(config)
  label = label or config.method.name
  runs = {label: (config, workdir)}
  runs.update({name: (cfg, workdir / "baselines" / name) for name, cfg in arms.items()})
  what = {name: f"{config_lib.describe(cfg)} ({config.baselines.get(name, 'this config')})"
          for name, (cfg, _) in runs.items()}
  results_of = {}
  for i, (name, (cfg, rdir)) in enumerate(runs.items()):
    console = Console(f"[run {i + 1}/{len(runs)} ({name})]" if len(runs) > 1 else "")
    if len(runs) > 1 and distributed.is_primary():
      console.say(what[name])
    if name != label and _reuse_training(config, workdir, cfg, rdir):
      console.say(f"differs from {label} in evaluation settings only: evaluating {label}'s "
                  f"final checkpoint (linked into {rdir / 'checkpoints'})")
    results_of[name] = train_and_evaluate(cfg, rdir, overwrite=overwrite, reevaluate=reevaluate,
                                          console=console, arm=name != label)
  if not distributed.is_primary():  # tables are the primary's (`flowzoo.distributed`)
    return results_of
  split = next(s for s in ("heldout", "validation", "train") if s in config.eval.splits)
  table_results = {(n, config.seed): r for n, r in results_of.items()}
  points = [Point(n) for n in runs]
  extras = dict(metrics=config.eval.metrics)
  notes = []
  if (domain := domain_eval.for_config(config)):  # + the trivial baselines' rows
    more = domain.add_baselines(config, split, table_results, [config.seed])
    points += [Point(n) for n in more["names"]]
    what.update(more["descriptions"])
    extras = dict(metrics=more["metrics"], higher=more["higher"], baselines=more["names"])
    notes = more["notes"]
  summary = report.summarize(points, [config.seed], table_results, split=split, **extras)
  tabulate = len(points) > 1
  summary.update(title=f"{label}" + (" beside its baselines" if tabulate else "")
                 + f" ({split} conditions)", reference=None, notes=notes,
                 arms=what if tabulate else {})
  if tabulate:
    report.write_outputs(summary, workdir, stem="comparison")
    print("\n" + report.format_table(summary))
  if results:
    figures = [workdir / f for f in getattr(domain, "PAGE_FIGURES", ()) if (workdir / f).exists()]
    page = report.results_page(summary, results, section=f"{label} run", command=command,
                               figures=figures)
    print(f"(results page: {page})")
  return results_of


def _reuse_training(parent, parent_dir: Path, arm, arm_dir: Path) -> bool:
  """Links the parent's final checkpoint into an arm that differs only in what is evaluated.

  Such an arm (e.g. another guidance scale) would train the same parameters
  again; instead its run finds a finished checkpoint and only evaluates.
  Orbax never rewrites a saved checkpoint, so hard links are safe (copies
  across file systems). Returns whether the arm reuses the parent's training.
  """
  stored = lambda c: config_lib.as_stored(config_lib.resolved(c).to_dict())
  safe = RESUME_SAFE + config_lib.evaluation_only_keys(parent)
  if config_lib.config_diff(stored(parent), stored(arm), safe):
    return False
  src = parent_dir / "checkpoints" / str(parent.train.steps)
  dst = arm_dir / "checkpoints" / src.name
  if not src.is_dir() or (arm_dir / "checkpoints").exists():
    return (arm_dir / "checkpoints").exists() and dst.is_dir()
  if distributed.is_primary():
    def link(a, b):
      try:
        os.link(a, b)
      except OSError:
        shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link)
  distributed.barrier("reused checkpoint linked")
  return True
