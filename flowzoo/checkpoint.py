"""Checkpoints of a run's `TrainState` (orbax) and the config guard.

Orbax writes each step to a temporary directory (`<step>.orbax-checkpoint-tmp*`)
and renames it when complete, so an interrupted save never leaves a
half-written checkpoint; the temporary directory it does leave is removed on
the next start. A workdir remembers the config it was trained with
(`config.json`); resuming with a different config is refused unless the
caller asks to overwrite. Fields that do not change what is trained may differ
(`flowzoo.config.RESUME_SAFE`, plus a dataset's evaluation-only fields passed by
the caller).

What can still go wrong on disk, and what happens:
  * a damaged newest checkpoint (bit rot, a copy cut short, a file removed)
    is skipped: `restore` falls back to the newest checkpoint that restores
    with finite values and moves the unusable ones to `checkpoints.damaged/`;
  * a state with NaN/inf values is never saved (a rerun would resume from it);
  * a failed save (disk full) raises `CheckpointSaveError` with the free
    space, instead of being logged by orbax's background thread.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from flowzoo import distributed
from flowzoo.config import RESUME_SAFE, as_stored, config_diff, flatten

# Orbax's unfinished step directories (`orbax/checkpoint/_src/path/atomicity_types.py`).
TMP_GLOB = "*.orbax-checkpoint-tmp*"
# Where `restore` moves checkpoints it cannot use, next to `checkpoints/`.
DAMAGED = "checkpoints.damaged"


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written (e.g. the disk is full)."""


class CheckpointRestoreError(RuntimeError):
  """No kept checkpoint can be restored."""


def _importance(key: str) -> tuple[int, str]:
  """Sort key: what a run is (components, data) before its knobs."""
  section, _, field = key.partition(".")
  if field == "name":
    return (0, key)
  return (1 if section in ("dataset", "method", "base", "coupling", "model") else 2, key)


class Checkpointer:
  """Keep-N periodic checkpoints in `workdir/checkpoints`.

  Args:
    workdir: run directory.
    config_dict: the resolved config as a JSON-able dict.
    keep: how many checkpoints to keep.
    overwrite: delete existing checkpoints of a different config instead of refusing.
    outputs: glob patterns (relative to `workdir`) of the files the run
      derives from its checkpoints (metrics, evaluation, plots); `overwrite`
      deletes them with the checkpoints, so no file mixes two runs.
    resume_safe: dotted config prefixes that may differ from the stored
      config (default `RESUME_SAFE`; runs add their dataset's
      evaluation-only fields, `config.evaluation_only_keys`).
  Raises:
    ValueError: `workdir` holds checkpoints of another config, or a
      `config.json` that cannot be read, and `overwrite` is False.

  The caller must hold the workdir (`flowzoo.workdir_lock`): construction
  deletes unfinished saves, which would be another run's saves in progress.
  """

  def __init__(self, workdir: str | Path, config_dict: dict, *, keep: int = 3,
               overwrite: bool = False, resume_safe: Sequence[str] = RESUME_SAFE,
               outputs: Sequence[str] = ()):
    self.workdir = Path(workdir)
    if self.workdir.exists() and not self.workdir.is_dir():
      raise NotADirectoryError(f"workdir {str(self.workdir)!r} exists and is not a directory.")
    self.workdir.mkdir(parents=True, exist_ok=True)
    config_dict = as_stored(config_dict)
    ckpt_dir = self.workdir / "checkpoints"
    cfg_path = self.workdir / "config.json"
    discard = False
    if cfg_path.exists() and ckpt_dir.exists() and any(ckpt_dir.iterdir()):
      old = _read_config(cfg_path, ckpt_dir, overwrite)  # None: unreadable, overwritten
      diff = ["config.json"] if old is None else config_diff(old, config_dict, resume_safe)
      if diff:
        if not overwrite:  # every process reads the same files, so all refuse alike
          # A key only one side has usually means the run was written by an
          # older (or newer) flowzoo that lacked the field: say so.
          stored, current = flatten(old), flatten(config_dict)
          shown = [k + (" (not in the stored config)" if k not in stored else
                        " (only in the stored config)" if k not in current else "")
                   for k in sorted(diff, key=_importance)[:10]]
          raise ValueError(
              f"{self.workdir} holds checkpoints of a different config (differs in: "
              f"{', '.join(shown)}{' ...' if len(diff) > 10 else ''}). "
              + ("train.steps shapes the whole run (cosine and warm-up schedules, "
                 "MixFlow's planner phases), so a longer run is a new run, not a "
                 "continuation. "
                 if "train.steps" in diff else "")
              + "Use another --workdir, or pass --overwrite to discard them.")
        discard = True
    # Every process has read the workdir; from here its files are the primary's.
    distributed.barrier("checkpointer_read")
    if distributed.is_primary():
      if discard:
        _discard_run(self.workdir, outputs)
      tmp = cfg_path.with_suffix(".json.tmp")
      tmp.write_text(json.dumps(config_dict, indent=2, sort_keys=True, default=str))
      tmp.replace(cfg_path)  # atomic
      # Safe only because no other run writes here (`flowzoo.workdir_lock`).
      for path in sorted(ckpt_dir.glob(TMP_GLOB)):
        print(f"removing {path}: an unfinished checkpoint save (the run was killed or the "
              f"save failed while writing it).", flush=True)
        shutil.rmtree(path)
    distributed.barrier("checkpointer")  # the others wait for the clean-up
    self.directory = ckpt_dir.resolve()
    # The handler fixes orbax's single-item layout (`<step>/default/`); left
    # to infer it, orbax locks in whatever the first step restored looks
    # like, and one step missing `default/` made every other step fail.
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_handlers=ocp.StandardCheckpointHandler())
    self._pending: int | None = None  # step of a save that may still be running

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of the kept checkpoints, ascending."""
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, *, force: bool = False) -> None:
    """Starts saving `state` as `step` (asynchronously: see `check` and `wait`).

    Raises:
      FloatingPointError: `state` holds NaN/inf values; nothing is saved.
      CheckpointSaveError: the previous save or this one failed.
    """
    self._settle()  # orbax waits for the previous save here anyway; name its step
    bad = nonfinite_leaves(state)
    if bad:
      raise FloatingPointError(
          f"the train state at step {step} has NaN/inf values in {len(bad)} array(s) "
          f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); not checkpointing it, "
          f"since a rerun would resume from it.")
    try:
      self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e
    self._pending = step

  def check(self) -> None:
    """Raises `CheckpointSaveError` if a save has failed in the background; never blocks.

    Orbax only logs such a failure and reports it at the next save, so a run
    would otherwise train a whole checkpoint interval past a full disk.
    """
    if self._pending is not None and not self.manager.is_saving_in_progress():
      self._settle()

  def last_saved_step(self) -> int | None:
    """Newest complete checkpoint on disk (None if there is none)."""
    steps = [int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(steps, default=None)

  def restore(self, abstract_state, step: int | None = None):
    """Restores into the structure of `abstract_state`.

    Args:
      abstract_state: the target structure, shapes and shardings.
      step: the checkpoint to restore; None restores the newest one that
        can be restored and holds finite values. Newer ones that cannot
        (damaged files, missing parts, NaN/inf) are reported, skipped and
        moved to `workdir/checkpoints.damaged/`, since the resumed run
        saves those steps again.
    Raises:
      CheckpointRestoreError: `step` (or, for None, every kept checkpoint)
        cannot be restored; nothing is moved then.
    """
    if step is not None:
      try:
        return self._restore(abstract_state, step)
      except Exception as e:  # pylint: disable=broad-except
        raise CheckpointRestoreError(
            f"checkpoint {self.directory / str(step)} cannot be restored: {_reason(e)}") from e
    failed = {}
    for s in reversed(self.all_steps()):
      try:
        state = self._restore(abstract_state, s)
      except Exception as e:  # pylint: disable=broad-except
        failed[s] = _reason(e)
      else:
        bad = nonfinite_leaves(state)
        if not bad:
          self._set_aside(failed)
          return state
        failed[s] = f"NaN/inf values in {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}"
      print(f"skipping checkpoint {self.directory / str(s)}: {failed[s]}", flush=True)
    if not failed:
      raise CheckpointRestoreError(f"no checkpoint in {self.directory} to restore.")
    raise CheckpointRestoreError(
        f"no checkpoint in {self.directory} can be restored ("
        + "; ".join(f"step {s}: {r}" for s, r in failed.items())
        + "). If flowzoo changed since they were written, the state's structure may differ; "
        "otherwise they are damaged. Pass --overwrite to discard them and start over, or "
        "use another --workdir.")

  def wait(self) -> None:
    """Blocks until every asynchronous save is on disk; raises `CheckpointSaveError`."""
    self._settle()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()

  def _restore(self, abstract_state, step: int):
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def _settle(self) -> None:
    """Waits for the pending save and raises if it did not produce its checkpoint."""
    step, self._pending = self._pending, None
    if step is None:
      return
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e
    # Orbax logs some finalisation failures without raising: check the result.
    if not (self.directory / str(step)).is_dir():
      raise self._save_error(step, None)

  def _save_error(self, step: int, cause: BaseException | None) -> CheckpointSaveError:
    usage = shutil.disk_usage(self.directory)
    last = self.last_saved_step()
    last = None if last == step else last
    return CheckpointSaveError(
        f"saving the checkpoint of step {step} to {self.directory / str(step)} failed"
        + (f" ({_reason(cause)})" if cause is not None else "")
        + f". Free space there: {usage.free / 2**30:.2f} GiB of {usage.total / 2**30:.1f} GiB. "
        "Free some space (or lower config.train.keep_checkpoints) and rerun: the run "
        + (f"resumes from the last complete checkpoint, step {last}." if last is not None
           else "starts over (no checkpoint was completed)."))

  def _set_aside(self, failed: dict[int, str]) -> None:
    """Moves unusable checkpoints out of orbax's directory (the run saves those steps again)."""
    if not failed:
      return
    dest = self.workdir / DAMAGED
    if distributed.is_primary():
      dest.mkdir(exist_ok=True)
      for s in failed:
        target, n = dest / str(s), 1
        while target.exists():
          target, n = dest / f"{s}.{n}", n + 1
        shutil.move(str(self.directory / str(s)), target)
      print(f"resuming from the newest usable checkpoint; moved step(s) {sorted(failed)} to "
            f"{dest} (delete them once inspected).", flush=True)
    distributed.barrier("set_aside")
    self.manager.reload()


def _discard_run(workdir: Path, outputs: Sequence[str]) -> None:
  """Deletes another config's checkpoints and the outputs derived from them."""
  shutil.rmtree(workdir / "checkpoints")
  shutil.rmtree(workdir / DAMAGED, ignore_errors=True)
  for path in (p for pattern in outputs for p in workdir.glob(pattern)):
    if path.is_dir():
      shutil.rmtree(path)
    else:
      path.unlink()


def _read_config(path: Path, ckpt_dir: Path, overwrite: bool) -> dict | None:
  """The stored config; None if it is unreadable and `overwrite` discards it anyway."""
  try:
    stored = json.loads(path.read_text())
    if not isinstance(stored, dict):
      raise ValueError(f"expected a JSON object, got {type(stored).__name__}")
  except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if overwrite:
      return None
    raise ValueError(
        f"{path} is not a readable config ({e}), so the checkpoints in {ckpt_dir} cannot be "
        "matched to this run's config. Pass --overwrite to discard them and start over, or "
        "use another --workdir.") from e
  return stored


def _reason(e: BaseException) -> str:
  """`Type: first line of the message`, shortened: tensorstore errors run long."""
  lines = str(e).strip().splitlines()
  text = lines[0] if lines else ""
  return f"{type(e).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


@jax.jit
def _finite(leaves: list[jax.Array]) -> list[jax.Array]:
  return [jnp.isfinite(x).all() for x in leaves]


def nonfinite_leaves(tree) -> list[str]:
  """Key paths (e.g. `.params['velocity']['dense_0']['kernel']`) of the float
  leaves of `tree` holding NaN or inf. One fused reduction: cheap next to a save."""
  flat = [(jax.tree_util.keystr(path), x)
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
          if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  finite = jax.device_get(_finite([x for _, x in flat]))
  return [path for (path, _), ok in zip(flat, finite) if not ok]
