"""Checkpoints of a run's `TrainState` (orbax) and the config guard.

Orbax writes each step to a temporary directory and renames it when complete,
so an interrupted save never leaves a half-written checkpoint. A workdir
remembers the config it was trained with (`config.json`); resuming with a
different config is refused unless the caller asks to overwrite. Fields that
do not change what is trained may differ (`flowzoo.config.RESUME_SAFE`, plus a
dataset's evaluation-only fields passed by the caller).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import orbax.checkpoint as ocp

from flowzoo.config import RESUME_SAFE, as_stored, config_diff, flatten


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
    if cfg_path.exists() and ckpt_dir.exists() and any(ckpt_dir.iterdir()):
      old = json.loads(cfg_path.read_text())
      diff = config_diff(old, config_dict, resume_safe)
      if diff:
        if not overwrite:
          # A key only one side has usually means the run was written by an
          # older (or newer) flowzoo that lacked the field: say so.
          stored, current = flatten(old), flatten(config_dict)
          shown = [k + (" (not in the stored config)" if k not in stored else
                        " (only in the stored config)" if k not in current else "")
                   for k in diff[:10]]
          raise ValueError(
              f"{self.workdir} holds checkpoints of a different config (differs in: "
              f"{', '.join(shown)}{' ...' if len(diff) > 10 else ''}). "
              + ("train.steps shapes the whole run (cosine and warm-up schedules, "
                 "MixFlow's planner phases), so a longer run is a new run, not a "
                 "continuation. "
                 if "train.steps" in diff else "")
              + "Use another --workdir, or pass --overwrite to discard them.")
        shutil.rmtree(ckpt_dir)
        for path in (p for pattern in outputs for p in self.workdir.glob(pattern)):
          if path.is_dir():
            shutil.rmtree(path)
          else:
            path.unlink()
    tmp = cfg_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config_dict, indent=2, sort_keys=True, default=str))
    tmp.replace(cfg_path)  # atomic
    self.manager = ocp.CheckpointManager(
        ckpt_dir.resolve(), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of the kept checkpoints, ascending."""
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, *, force: bool = False) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, abstract_state, step: int | None = None):
    """Restores `step` (default latest) into the structure of `abstract_state`."""
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def wait(self) -> None:
    """Blocks until every asynchronous save is on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.manager.close()
