"""What a run logs for later: train metrics (JSONL + TensorBoard) and its evaluation in TensorBoard.

TensorBoard (`tensorboard --logdir DIR`, README "Using it") shows, per run:
`train/*` scalars; `eval/<split>/<metric>` split means; `selection/<split>/<metric>`
per checkpoint step (with `eval.select`); every PNG the run writes, as an
image; and the config as hyper-parameters with the eval means as their
metrics (HParams tab), so runs of a sweep can be compared side by side.
The printed progress lines are `flowzoo/progress.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from flowzoo.config import flatten


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

  def eval_results(self, step: int, results: Mapping) -> None:
    """`eval/<split>/<metric>`: the split means of `evaluate`'s results at `step`."""
    for tag, value in eval_scalars(results).items():
      self._tb.add_scalar(tag, value, int(step))

  def scalar(self, tag: str, value: float, step: int) -> None:
    self._tb.add_scalar(tag, float(value), int(step))

  def image(self, tag: str, png: str | Path, step: int) -> None:
    """The PNG file `png` as image `tag` (RGB)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel
    with Image.open(png) as im:
      pixels = np.asarray(im.convert("RGB"))
    self._tb.add_image(tag, pixels, int(step), dataformats="HWC")

  def hparams(self, config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """The config (nested dict) as hyper-parameters, `metrics` (tag -> value) as their results.

    Written into this run's own event file (tensorboardX's `add_hparams`
    would open a sub-run), so the HParams tab reads the metrics from the
    `eval/...` scalars logged beside them.
    """
    from tensorboardX.summary import hparams  # pylint: disable=import-outside-toplevel
    flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in flatten(dict(config)).items()}
    for summary in hparams(flat, dict(metrics)):
      self._tb.file_writer.add_summary(summary)

  def flush(self) -> None:
    self._tb.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._tb.close()


def eval_scalars(results: Mapping) -> dict[str, float]:
  """`{"eval/<split>/<metric>": split mean}` of `evaluate`'s results."""
  return {f"eval/{split}/{m}": float(r["mean"])
          for m, per_split in results.items() for split, r in per_split.items()}



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
