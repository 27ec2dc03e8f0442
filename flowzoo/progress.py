"""What a run prints while it works: prefixed lines, the training line with its ETA, counters.

Every line of a run goes through one `Console`, so in a job of several runs
(a config beside its baselines, a sweep) each line carries the run's prefix,
e.g. `[run 2/3 (cfm_ot_twin)]`. Three kinds of lines:

* `Console.say`: one-off messages (compiling, checkpoint selected, ...);
* `Progress`: `[step/total] loss=… steps/s=… eta=…` once per log interval;
* `Counter`: `i/n` of a long loop (conditions scored, checkpoints compared),
  printed for the first and last item and at most every `every` seconds in
  between, so a minute of evaluation is never silent and never floods.

Hand-written, not tqdm or rich: runs are mostly read as log files (nohup, a
sweep's output, CI), where a progress bar's carriage-return redraws turn into
thousands of partial lines; each line here is complete, carries the loss and
the run's prefix, and needs no extra dependency.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Mapping


class Console:
  """Prints flushed lines, each prefixed with the run's name in a multi-run job.

  Args:
    prefix: e.g. "[run 2/3 (cfm_ot_twin)]"; "" for a single run.
    stream: where to print; None is `sys.stdout` at print time (pytest's
      capture replaces it after import).
    every: minimum seconds between two lines of one `Counter` (0: every item).
  """

  def __init__(self, prefix: str = "", stream=None, every: float = 5.0):
    self.prefix, self.stream, self.every = prefix, stream, every

  def say(self, msg: str) -> None:
    print(f"{self.prefix} {msg}" if self.prefix else msg, file=self.stream or sys.stdout,
          flush=True)

  def counter(self, what: str, total: int) -> Counter:
    """A counter of `total` items of the task `what` (e.g. "scoring heldout")."""
    return Counter(self, what, total)


class Counter:
  """`what: i/n (item), Ts`: the first and last item, and at most every `console.every` s."""

  def __init__(self, console: Console, what: str, total: int):
    self.console, self.what, self.total = console, what, total
    self.done = 0
    self._t0 = self._last = time.perf_counter()

  def tick(self, item: str = "") -> None:
    self.done += 1
    now = time.perf_counter()
    if self.done in (1, self.total) or now - self._last >= self.console.every:
      self._last = now
      self.console.say(f"{self.what}: {self.done}/{self.total}"
                       + (f" ({item})" if item else "") + f", {now - self._t0:.0f}s")


def format_seconds(s: float) -> str:
  """`83` -> "1m23s", `7300` -> "2h01m"; "?" when unknown."""
  if not math.isfinite(s):
    return "?"
  s = max(0, int(round(s)))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
  """The training line `[step/total] loss=… steps/s=… eta=…`, one per log interval.

  The first dispatch compiles the train step (seconds to a minute on a CPU),
  so `compiled` marks where the steady rate starts: the ETA uses only time
  after it, smoothed by an exponential moving average of the per-interval
  rate (weight `smoothing` on the newest), so one slow interval on a shared
  machine moves it a little, not by half. The steps/s column is the rate of
  the last interval itself (the one written to the metrics log).

  Args:
    total: the last step.
    start: the step training starts (or resumes) from.
    console: where lines go (None: a plain `Console`).
    smoothing: EMA weight of the newest interval's rate, in (0, 1].
  """

  def __init__(self, total: int, start: int = 0, console: Console | None = None,
               smoothing: float = 0.3):
    if not 0.0 < smoothing <= 1.0:
      raise ValueError(f"Progress: smoothing must be in (0, 1], got {smoothing}.")
    self.total, self.console = total, console or Console()
    self.smoothing = smoothing
    self._last = (time.perf_counter(), start)  # (time, step) of the previous interval's end
    self._steady = None  # (time, step) the compiled step started running at
    self._rate = float("nan")  # last interval, compile included
    self._ema = float("nan")   # smoothed steady rate, for the ETA
    self._compile_t0 = self._last[0]

  def compiling(self, steps_per_dispatch: int) -> None:
    """Says the first dispatch is compiling; call just before it."""
    self._compile_t0 = time.perf_counter()
    self.console.say(f"compiling the train step ({steps_per_dispatch} steps per dispatch)...")

  def compiled(self, step: int, steps_per_dispatch: int) -> None:
    """Says how long compiling took; the steady rate is measured from here (`step`)."""
    now = time.perf_counter()
    self.console.say(f"compiled and ran the first {steps_per_dispatch} steps in "
                     f"{now - self._compile_t0:.1f}s")
    self._steady = (now, step)

  def steps_per_second(self, step: int) -> float:
    """The rate of the interval since the previous call; updates the smoothed rate."""
    now = time.perf_counter()
    (t0, s0) = self._last
    if step > s0 and now > t0:
      self._rate = (step - s0) / (now - t0)
      self._last = (now, step)
      # The ETA's rate: only the part of the interval after compilation.
      if self._steady is not None and self._steady[0] > t0:
        t0, s0 = self._steady
      if self._steady is not None and step > s0 and now > t0:
        rate = (step - s0) / (now - t0)
        self._ema = rate if math.isnan(self._ema) else (
            self.smoothing * rate + (1 - self.smoothing) * self._ema)
    return self._rate

  def eta(self, step: int) -> float:
    """Seconds left at the smoothed steady rate (nan before the first steady interval)."""
    return (self.total - step) / self._ema if self._ema > 0 else float("nan")

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    parts = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    return (f"[{step:>7d}/{self.total}] {parts} steps/s={self._rate:.1f} "
            f"eta={format_seconds(self.eta(step))}")

  def print(self, step: int, scalars: Mapping[str, float]) -> None:
    self.console.say(self.line(step, scalars))
