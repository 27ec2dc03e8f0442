"""`train_and_evaluate(config, workdir)`: the whole run behind `experiments.run`.

Also the notebook API: `setup(config)` builds data, method and trainer
without touching the file system; `Experiment.train`/`generate` use them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flowzoo import build as build_lib
from flowzoo import evaluate as eval_lib
from flowzoo import plots
from flowzoo.checkpoint import RESUME_SAFE, Checkpointer
from flowzoo.data.populations import SPLITS, Packed, Populations, pack
from flowzoo.registry import SOLVERS
from flowzoo.train import Trainer, TrainState, make_optimizer
from flowzoo.workdir_lock import WorkdirLock
from flowzoo.writers import MetricWriter, Progress


@dataclasses.dataclass
class Experiment:
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
      state, m = self.trainer.run(state, self.packed, self.train_ids, rng, spd)
      logs.append(m)
    return state, {k: np.concatenate([m[k] for m in logs]) for k in logs[0]} if logs else {}

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


def check_config(config) -> None:
  """Cross-field checks that must fail before anything is built."""
  t, ev = config.train, config.eval
  for name, v in (("train.steps_per_dispatch", t.steps_per_dispatch),
                  ("train.log_every", t.log_every), ("train.ckpt_every", t.ckpt_every),
                  ("train.keep_checkpoints", t.keep_checkpoints),
                  ("data.batch_size", config.data.batch_size),
                  ("data.populations_per_batch", config.data.populations_per_batch),
                  ("eval.num_steps", ev.num_steps), ("eval.max_samples", ev.max_samples),
                  ("eval.chunk", ev.chunk)):
    if v < 1:
      raise ValueError(f"config.{name} must be >= 1, got {v}.")
  if not 0.0 <= t.ema_decay < 1.0:
    raise ValueError(f"config.train.ema_decay must be in [0, 1), got {t.ema_decay}.")
  for name in ("log_every", "ckpt_every", "steps"):
    if t[name] % t.steps_per_dispatch:
      raise ValueError(f"config.train.{name}={t[name]} must be a multiple of "
                       f"config.train.steps_per_dispatch={t.steps_per_dispatch}.")
  if t.steps <= 0:
    raise ValueError(f"config.train.steps must be > 0, got {t.steps}.")
  eval_lib.check_samples_per_condition(config.eval.samples_per_condition)
  if parse_select(config.eval.select):
    saves = -(-t.steps // t.ckpt_every)  # every ckpt_every steps, and the last step
    if t.keep_checkpoints < saves:
      raise ValueError(
          f"config.eval.select={config.eval.select!r} picks among the kept checkpoints, but "
          f"config.train.keep_checkpoints={t.keep_checkpoints} keeps only the last "
          f"{t.keep_checkpoints} of the {saves} saved; set it to >= {saves}.")


def parse_select(select: str) -> tuple[str, str] | None:
  """`eval.select` as `(split, metric)`; None for "" (evaluate the last checkpoint).

  MixFlow §5.1 reports every metric at "the best checkpoint based on
  validation Wasserstein-2 distance": `eval.select="heldout/w2"` (letters,
  where the validation set is the held-out rotations) scores each kept
  checkpoint by the split mean of that metric (lower is better) and evaluates
  the best one.
  """
  if not select:
    return None
  parts = select.split("/")
  if len(parts) != 2 or not all(parts):
    raise ValueError(f"config.eval.select must be 'split/metric' (e.g. 'heldout/w2') or '', "
                     f"got {select!r}.")
  return parts[0], parts[1]


def _check_eval(config, pops: Populations, method) -> None:
  """`eval` names exist (needs the dataset and method), so a typo fails before training."""
  ev = config.eval
  valid = eval_lib.valid_metrics(method)
  unknown = sorted(set(ev.metrics) - set(valid))
  if unknown:
    raise KeyError(f"config.eval.metrics: unknown metric(s) {unknown}; valid: {valid}.")
  SOLVERS.get(ev.solver)  # raises listing the valid solvers
  bad = [s for s in ev.splits if s not in SPLITS]
  if bad:
    raise ValueError(f"config.eval.splits: unknown split(s) {bad}; valid: {list(SPLITS)}.")
  # Splits the data lack are skipped (the common default lists all three).
  if not any(pops.has_split(s) for s in ev.splits):
    raise ValueError(f"config.eval.splits={tuple(ev.splits)}: dataset {config.dataset.name!r} "
                     f"has none of them (it has {sorted(set(pops.splits))}).")
  select = parse_select(ev.select)
  if select is None:
    return
  split, metric = select
  if not pops.has_split(split):
    raise ValueError(f"config.eval.select={ev.select!r}: dataset "
                     f"{config.dataset.name!r} has no {split!r} split.")
  if metric not in valid:
    raise KeyError(f"config.eval.select={ev.select!r}: unknown metric {metric!r}; "
                   f"valid: {valid}.")


def _set_overrides(config, group: str) -> dict:
  """Fields of `optim_overrides.<group>` that are set (None: the placeholders
  `common.finalize` adds, which inherit `optim`)."""
  return {k: v for k, v in config.optim_overrides.get(group, {}).items() if v is not None}


def optimizer_kwargs(config, group: str) -> dict:
  """`config.optim` updated by the fields of `optim_overrides.<group>` that are set."""
  return dict(config.optim) | _set_overrides(config, group)


def setup(config) -> Experiment:
  """Builds everything a run needs from `config`; raises on bad input."""
  check_config(config)
  pops = build_lib.build_dataset(config)
  train_ids = pops.split_ids("train")
  method = build_lib.build_method(config, event_shape=pops.event_shape, cond_dim=pops.cond_dim,
                                  total_steps=config.train.steps, num_conditions=len(pops.names))
  base = getattr(method, "base", None)
  if getattr(base, "needs_sources", False) and pops.sources is None:
    raise ValueError(f"base {config.base.name!r} needs source samples (control cells), but "
                     f"dataset {config.dataset.name!r} provides no `sources`.")
  _check_eval(config, pops, method)
  unused = sorted(g for g in set(config.optim_overrides) - set(method.groups)
                  if _set_overrides(config, g))
  if unused:
    # Not an error: `--config.base.name=gaussian` turns MixFlow into CFM, which
    # has no base parameters, and must keep working as one config line.
    logging.warning("config.optim_overrides: method %r has no parameter group(s) %s (its "
                    "groups: %s); those overrides are unused.", config.method.name, unused,
                    list(method.groups))
  optimizers = {}
  for g in method.groups:
    try:
      optimizers[g] = make_optimizer(**optimizer_kwargs(config, g), total_steps=config.train.steps)
    except (KeyError, ValueError) as e:
      raise type(e)(f"parameter group {g!r} (config.optim / optim_overrides.{g}): {e}") from e
  trainer = Trainer(method, optimizers, batch_size=config.data.batch_size,
                    populations_per_batch=config.data.populations_per_batch,
                    ema_decay=config.train.ema_decay)
  packed = trainer.replicate(pack(pops))
  return Experiment(config, pops, method, trainer, packed,
                    trainer.replicate(jnp.asarray(train_ids, jnp.int32)))


# What a run writes besides config.json and checkpoints/ (see train_and_evaluate).
RUN_OUTPUTS = ("train_metrics.jsonl", "tensorboard", "eval.json", "samples.npz",
               "selection.json", "*_real_vs_generated.png", "*_flow.png")


def train_and_evaluate(config, workdir: str | Path, *, overwrite: bool = False) -> dict:
  """Trains (resuming from `workdir` if possible), evaluates and writes outputs.

  Writes to `workdir`: config.json, checkpoints/, train_metrics.jsonl,
  tensorboard/, eval.json, samples.npz, selection.json (with eval.select)
  and, for 2-D data, PNG plots. `overwrite` (a workdir holding another
  config's run) deletes that run's checkpoints and these outputs first.

  Returns:
    the evaluation results (metric -> split -> mean / per_condition).
  """
  workdir = Path(workdir)
  exp = setup(config)
  print(f"dataset: {exp.pops.info or config.dataset.name} | {len(exp.pops.names)} conditions, "
        f"event shape {exp.pops.event_shape}, descriptor dim {exp.pops.cond_dim}")
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}")
  with WorkdirLock(workdir):  # a second run on `workdir` is refused
    return _train_and_evaluate_locked(exp, workdir, overwrite)


def _train_and_evaluate_locked(exp: Experiment, workdir: Path, overwrite: bool) -> dict:
  config = exp.config
  ckpt = Checkpointer(workdir, build_lib.resolved(config).to_dict(),
                      keep=config.train.keep_checkpoints, overwrite=overwrite,
                      resume_safe=RESUME_SAFE + build_lib.evaluation_only_keys(config),
                      outputs=RUN_OUTPUTS)
  state = restore_or_init(exp, ckpt)
  t = config.train
  start = int(state.step)
  rng = jax.random.key(config.seed + 1)
  writer, progress = MetricWriter(workdir, start), Progress(t.steps, start)
  try:
    step = start
    while step < t.steps:
      state, m = exp.trainer.run(state, exp.packed, exp.train_ids, rng, t.steps_per_dispatch)
      step += t.steps_per_dispatch
      ckpt.check()  # a failed background save stops the run now, not a save later
      if step % t.log_every == 0 or step == t.steps:
        scalars = {k: float(np.mean(v)) for k, v in m.items()}
        scalars["steps_per_s"] = progress.steps_per_second(step)
        writer.write(step, scalars)
        progress.print(step, {k: scalars[k] for k in ("loss", "grad_norm")})
      if step % t.ckpt_every == 0 or step == t.steps:
        ckpt.save(step, state)
    ckpt.wait()
    if start >= t.steps:
      print(f"restored a finished run at step {start}; evaluating only.")
    if parse_select(config.eval.select):
      state = select_checkpoint(exp, ckpt, workdir)
  except FloatingPointError as e:  # diverged: say where a rerun resumes and what to change
    raise FloatingPointError(f"{e} {_divergence_advice(config, ckpt)}") from None
  finally:
    writer.close()
    ckpt.close()
  return _evaluate_and_write(exp, state, workdir)


def restore_or_init(exp: Experiment, ckpt: Checkpointer) -> TrainState:
  """The newest usable checkpoint (damaged ones are skipped), else a fresh state."""
  if ckpt.latest_step() is None:
    return exp.init()
  state = ckpt.restore(exp.abstract_state())
  print(f"resuming from checkpoint at step {int(state.step)}")
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


def select_checkpoint(exp: Experiment, ckpt: Checkpointer, workdir: Path) -> TrainState:
  """Restores the kept checkpoint with the lowest `eval.select` score.

  Every checkpoint is scored with the final evaluation's generation key and
  subsample, so differences are the checkpoints', and when `eval.splits` is
  just the selection split the reported metric equals the selection score.
  Writes `selection.json`: the score of each step, the selected step and the
  rule.
  """
  ev = exp.config.eval
  split, metric = parse_select(ev.select)
  abstract = exp.abstract_state()
  scores = {}
  for step in ckpt.all_steps():
    state = ckpt.restore(abstract, step)
    results, _ = eval_lib.evaluate(
        exp.method, state.ema, exp.pops, _eval_key(exp.config), splits=(split,),
        solver=ev.solver, num_steps=ev.num_steps, guidance=ev.guidance, metric_names=(metric,),
        max_samples=ev.max_samples, samples_per_condition=ev.samples_per_condition,
        chunk=ev.chunk, seed=exp.config.seed)
    scores[step] = results[metric][split]["mean"]
    print(f"checkpoint {step}: {split} {metric} = {scores[step]:.4g}")
  best = min(scores, key=scores.get)
  print(f"selected checkpoint {best} ({ev.select}); the last is {max(scores)}")
  tmp = workdir / "selection.json.tmp"
  tmp.write_text(json.dumps({"select": ev.select, "selected_step": best,
                             "scores": {str(k): v for k, v in scores.items()}}, indent=2))
  tmp.replace(workdir / "selection.json")
  return ckpt.restore(abstract, best)


def _eval_key(config) -> jax.Array:
  return jax.random.key(config.seed + 2)


def _evaluate_and_write(exp: Experiment, state: TrainState, workdir: Path) -> dict:
  ev = exp.config.eval
  t0 = time.perf_counter()
  rng = _eval_key(exp.config)
  results, samples = eval_lib.evaluate(
      exp.method, state.ema, exp.pops, rng, splits=ev.splits, solver=ev.solver,
      num_steps=ev.num_steps, guidance=ev.guidance, metric_names=ev.metrics,
      max_samples=ev.max_samples, samples_per_condition=ev.samples_per_condition,
      chunk=ev.chunk, seed=exp.config.seed)
  tmp = workdir / "eval.json.tmp"
  tmp.write_text(json.dumps(results, indent=2))
  tmp.replace(workdir / "eval.json")
  np.savez_compressed(workdir / "samples.npz", **samples)
  if exp.pops.event_shape == (2,):
    _plot(exp, state, samples, workdir, rng)
  print(f"evaluation took {time.perf_counter() - t0:.1f}s")
  print(eval_lib.results_table(results))
  return results


def _plot(exp: Experiment, state: TrainState, samples: dict, workdir: Path, rng) -> None:
  pops, ev = exp.pops, exp.config.eval
  split = next((s for s in ("heldout", "validation", "train") if pops.has_split(s)))
  ids = pops.split_ids(split)[: ev.plot_conditions]
  names = [pops.names[k] for k in ids]
  real = [pops.samples[k] for k in ids]
  plots.real_vs_generated(workdir / f"{split}_real_vs_generated.png", names, real,
                          [samples[f"{split}/{n}"] for n in names])
  counts = [min(len(r), 500) for r in real]
  gen = eval_lib.Generator(exp.method, solver=ev.solver, num_steps=ev.num_steps,
                           guidance=ev.guidance, chunk=ev.chunk)
  traj = gen.trajectory(state.ema, rng, eval_lib.condition_batch(
      pops, ids, counts, np.random.default_rng(0)))
  parts = np.split(traj, np.cumsum(counts)[:-1], axis=1)
  plots.flow_snapshots(workdir / f"{split}_flow.png", names, parts, real)
