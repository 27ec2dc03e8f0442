"""A run SIGKILLed at several points, mid-save included, resumes to the same bits.

The run is the real CLI (`python -m experiments.run`, cfm_letters runlocal
shrunk to seconds: 12 steps, checkpoints at 4, 8 and 12). One run is killed
twice and resumed:

1. mid-save: orbax writes a step into `<step>.orbax-checkpoint-tmp` and
   renames it when complete. The test stops the process (SIGSTOP) as soon as
   such a directory appears, checks it is still there with every thread
   stopped, and kills it then: a kill inside the save, not a guess at timing;
2. between saves, once step 6 is logged (the checkpoint of step 4 is complete).

(A kill during the final evaluation was dropped for suite time: a finished
run re-evaluating is `tests/test_experiment.py`'s.)

Each kill also leaves the workdir lock behind, which the next start takes
over. The final checkpoint, the metrics log and eval.json must equal those of
an uninterrupted run, run alongside, bit for bit.

Cost: four processes, mostly imports; the chain of three runs is the
critical path, the reference uses the other core.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = Path(__file__).resolve().parents[1]

# tests/helpers.py's tiny_letters_config, as command-line overrides.
OVERRIDES = [
    "--config.dataset.letters=SH", "--config.dataset.num_rotations=4",
    "--config.dataset.copies=1", "--config.dataset.points_per_copy=64",
    "--config.model.hidden=(16,16)", "--config.model.cond_embed=8", "--config.data.batch_size=16",
    "--config.train.steps=12", "--config.train.steps_per_dispatch=2",
    "--config.train.log_every=2", "--config.train.ckpt_every=4",
    "--config.train.keep_checkpoints=3", "--config.train.ema_decay=0.9",
    "--config.eval.num_steps=4", "--config.eval.max_samples=64", "--config.eval.chunk=128",
    "--config.eval.splits=('heldout',)", "--config.eval.select=", "--config.eval.plot_conditions=1",
    "--config.eval.metrics=('w2',)",
]
TIMEOUT = 600  # seconds; guards against a hang only (the machine may be loaded)

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(),
                                reason="needs /proc to see that every thread is stopped")


def _start(workdir: Path, log: Path) -> subprocess.Popen:
  # One persistent XLA cache for all runs: each compiles nothing the first
  # did, which halves a run's CPU time (imports take most of the rest).
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(workdir.parent / "xla_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  with open(log, "a") as out:  # a file, not a pipe: nobody reads while it runs
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.run", "--config=cfm_letters.py:runlocal",
         f"--workdir={workdir}", *OVERRIDES], cwd=REPO, env=env, stdout=out,
        stderr=subprocess.STDOUT)


def _all_threads_stopped(pid: int) -> bool:
  states = []
  for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
    try:
      states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    except (OSError, IndexError):
      continue  # a thread that just exited
  return bool(states) and all(s in "TtZX" for s in states)


def _kill_when(proc: subprocess.Popen, condition, what: str) -> None:
  """SIGKILLs `proc` at a moment `condition()` holds while the process is frozen."""
  deadline = time.monotonic() + TIMEOUT
  while time.monotonic() < deadline:
    assert proc.poll() is None, f"the run ended (code {proc.returncode}) before {what}"
    if condition():
      os.kill(proc.pid, signal.SIGSTOP)
      while not _all_threads_stopped(proc.pid):
        time.sleep(0.001)
      if condition():  # still true with every thread stopped: this is the point
        proc.kill()
        proc.wait()
        return
      os.kill(proc.pid, signal.SIGCONT)  # it moved on in between: wait for the next one
    time.sleep(0.002)
  proc.kill()
  raise AssertionError(f"timed out waiting for {what}")


def _finish(proc: subprocess.Popen, log: Path) -> str:
  assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()[-3000:]
  return log.read_text()


def _tmp_dirs(workdir: Path) -> list[Path]:
  return sorted((workdir / "checkpoints").glob("*.orbax-checkpoint-tmp*"))


def _logged(workdir: Path, step: int) -> bool:
  path = workdir / "train_metrics.jsonl"
  return path.exists() and f'"step": {step},' in path.read_text()


def _metrics(workdir: Path) -> list[dict]:
  rows = [json.loads(r) for r in (workdir / "train_metrics.jsonl").read_text().splitlines()]
  for r in rows:
    del r["steps_per_s"]  # wall-clock time
  return rows


def _state(workdir: Path, step: int):
  return jax.device_get(ocp.StandardCheckpointer().restore(
      workdir / "checkpoints" / str(step) / "default"))


def test_killed_run_resumes_to_the_bits_of_an_uninterrupted_one(tmp_path):
  ref_dir, dir_ = tmp_path / "uninterrupted", tmp_path / "killed"
  ref_log, log = tmp_path / "uninterrupted.log", tmp_path / "killed.log"
  reference = _start(ref_dir, ref_log)  # alongside: two cores

  # 1. Mid-save.
  run = _start(dir_, log)
  _kill_when(run, lambda: _tmp_dirs(dir_), "a checkpoint save")
  unfinished = _tmp_dirs(dir_)
  assert unfinished and (dir_ / "run.lock").exists()

  # 2. Between saves: the unfinished save is removed, the lock taken over.
  # (Saves are asynchronous: wait for step 4's to finish, not just step 6.)
  run = _start(dir_, log)
  _kill_when(run, lambda: _logged(dir_, 6) and (dir_ / "checkpoints" / "4").is_dir()
             and not _tmp_dirs(dir_), "step 6 logged after the checkpoint of step 4")
  out = log.read_text()
  assert f"removing {unfinished[0]}: an unfinished checkpoint save" in out
  assert "taking over the stale lock" in out

  # Last start: resumes from step 4 and finishes.
  out = _finish(_start(dir_, log), log)
  assert "resuming from checkpoint at step 4" in out
  _finish(reference, ref_log)

  assert not _tmp_dirs(dir_) and not (dir_ / "run.lock").exists()
  jax.tree.map(np.testing.assert_array_equal, _state(dir_, 12), _state(ref_dir, 12))
  assert _metrics(dir_) == _metrics(ref_dir)
  assert [r["step"] for r in _metrics(dir_)] == [2, 4, 6, 8, 10, 12]
  assert (json.loads((dir_ / "eval.json").read_text())
          == json.loads((ref_dir / "eval.json").read_text()))
