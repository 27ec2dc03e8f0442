"""Training logs: JSONL, TensorBoard event files and a progress line with ETA."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np


class MetricWriter:
  """Appends scalar metrics to `train_metrics.jsonl` and TensorBoard events.

  Args:
    workdir: run directory.
    start_step: the step training resumes from. Rows logged after it by an
      interrupted run are dropped, since the resumed run logs those steps again.
      So is a torn last row (the run was killed while writing it).
  Raises:
    ValueError: a row before the last is not a metrics row (the file was
      damaged otherwise), naming the file and line.
  """

  def __init__(self, workdir: str | Path, start_step: int = 0):
    from tensorboardX import SummaryWriter  # small, no TensorFlow needed
    self.path = Path(workdir) / "train_metrics.jsonl"
    if self.path.exists():
      rows = [r for r in _read_rows(self.path) if json.loads(r)["step"] <= start_step]
      tmp = self.path.with_suffix(".jsonl.tmp")
      tmp.write_text("".join(r + "\n" for r in rows))
      tmp.replace(self.path)  # atomic: a crash here keeps the old file
    self._jsonl = self.path.open("a")
    self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(f"train/{k}", float(v), int(step))

  def close(self) -> None:
    self._jsonl.close()
    self._tb.close()


def _read_rows(path: Path) -> list[str]:
  """The rows of `path` that parse; a torn last row is dropped with a message."""
  lines = [(i, r) for i, r in enumerate(path.read_text(errors="replace").splitlines(), 1)
           if r.strip()]
  rows = []
  for i, r in lines:
    try:
      row = json.loads(r)
      ok = isinstance(row, dict) and isinstance(row.get("step"), int)
    except ValueError:
      ok = False
    if ok:
      rows.append(r)
    elif i == lines[-1][0]:  # appended last: a kill during its write
      print(f"{path}: dropped a torn last line (the run was killed while writing it): "
            f"{r[:80]!r}", flush=True)
    else:
      raise ValueError(
          f"{path}, line {i}, is not a metrics row: {r[:80]!r}. Only a torn last line is "
          "repaired automatically; move the file away to start a new log (the resumed run "
          "logs from its checkpoint on), or pass --overwrite to start the run over.")
  return rows


class Progress:
  """Prints `step/total loss steps/s ETA` lines (one per log interval).

  Steps/s is measured over the last interval, so the first interval includes
  compilation and later ones show the steady-state rate.
  """

  def __init__(self, total: int, start: int = 0, stream=None):
    # None: `sys.stdout` when printing, not the stream it was at import time
    # (pytest's capture replaces and closes it).
    self.total, self.stream = total, stream
    self._t0, self._s0 = time.perf_counter(), start
    self._rate = float("nan")

  def steps_per_second(self, step: int) -> float:
    """Rate since the previous call (or since construction)."""
    now = time.perf_counter()
    dt = now - self._t0
    if step > self._s0 and dt > 0:
      self._rate = (step - self._s0) / dt
      self._t0, self._s0 = now, step
    return self._rate

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    sps = self._rate
    eta = (self.total - step) / sps if sps and np.isfinite(sps) and sps > 0 else float("nan")
    parts = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    return (f"[{step:>7d}/{self.total}] {parts} steps/s={sps:.1f} "
            f"eta={eta:.0f}s")

  def print(self, step: int, scalars: Mapping[str, float]) -> None:
    print(self.line(step, scalars), file=self.stream or sys.stdout, flush=True)
