"""What a run prints: the compile line, a smoothed ETA that ignores compilation, eval progress."""

import io
import re

import pytest

from flowzoo import progress as progress_lib
from flowzoo.experiment import train_and_evaluate
from flowzoo.progress import Console, Progress
from tests.helpers import tiny_letters_config


class FakeClock:
  """`time.perf_counter` under the test's control: no timing in assertions."""

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


@pytest.fixture
def clock(monkeypatch):
  c = FakeClock()
  monkeypatch.setattr(progress_lib.time, "perf_counter", c)
  return c


def test_eta_ignores_compilation_and_is_smoothed(clock):
  out = io.StringIO()
  p = Progress(1000, console=Console("[run 2/3 (cfm)]", stream=out), smoothing=0.5)
  p.compiling(100)
  clock.now += 30.0  # the first dispatch: 30 s of compiling, 100 steps
  p.compiled(100, 100)
  clock.now += 1.0   # 100 more steps at 100 steps/s
  assert p.steps_per_second(200) == pytest.approx(200 / 31.0)  # the log's rate: as it happened
  assert p.eta(200) == pytest.approx(800 / 100.0)  # the ETA's: after compiling only
  clock.now += 4.0   # a slow interval on a shared machine: 200 steps at 50 steps/s
  p.steps_per_second(400)
  assert p.eta(400) == pytest.approx(600 / 75.0)  # EMA 0.5 * 50 + 0.5 * 100, not 600 / 50
  p.print(400, {"loss": 1.5})
  lines = out.getvalue().splitlines()
  assert lines == ["[run 2/3 (cfm)] compiling the train step (100 steps per dispatch)...",
                   "[run 2/3 (cfm)] compiled and ran the first 100 steps in 30.0s",
                   "[run 2/3 (cfm)] [    400/1000] loss=1.5 steps/s=50.0 eta=8s"]


def test_eta_is_unknown_until_a_steady_interval(clock):
  p = Progress(100, console=Console(stream=io.StringIO()))
  p.compiling(10)
  clock.now += 5.0
  p.compiled(10, 10)
  p.steps_per_second(10)  # logged right after the compiling dispatch
  assert "eta=?" in p.line(10, {})
  assert progress_lib.format_seconds(3725) == "1h02m"
  assert progress_lib.format_seconds(83) == "1m23s"


def test_counter_prints_first_last_and_every_interval(clock):
  out = io.StringIO()
  c = Console(stream=out, every=10.0).counter("scored heldout conditions", 4)
  for i, item in enumerate(("a", "b", "c", "d")):
    clock.now += 6.0 if i else 0.0
    c.tick(item)
  # a (first), c (12 s after a), d (last); b came 6 s after a.
  assert out.getvalue().splitlines() == ["scored heldout conditions: 1/4 (a), 0s",
                                         "scored heldout conditions: 3/4 (c), 12s",
                                         "scored heldout conditions: 4/4 (d), 18s"]


def test_run_lines_carry_the_prefix_compile_eta_and_eval_progress(tmp_path):
  out = io.StringIO()
  console = Console("[run 1/2 (tiny)]", stream=out, every=0.0)  # every counter line
  config = tiny_letters_config(**{"eval.splits": ("train", "heldout")})
  train_and_evaluate(config, tmp_path, console=console)
  lines = out.getvalue().splitlines()
  body = [l for l in lines if l.strip() and not l.startswith(("split", "train ", "heldout "))]
  assert all(l.startswith("[run 1/2 (tiny)] ") for l in body), body
  text = "\n".join(lines)
  assert re.search(r"compiling the train step \(4 steps per dispatch\)\.\.\.\n.*"
                   r"compiled and ran the first 4 steps in \d+\.\ds", text)
  # Step 4 is the compiling dispatch (no steady rate yet); step 8 has one.
  assert re.search(r"\[      4/8\] loss=\S+ grad_norm=\S+ steps/s=\S+ eta=\?$", text, re.M)
  assert re.search(r"\[      8/8\] loss=\S+ grad_norm=\S+ steps/s=\S+ eta=0s$", text, re.M)
  # Checkpoint selection, one line per checkpoint; then each split, per condition.
  assert re.search(r"selecting the checkpoint by heldout/w2 \(lower is better\): scoring 2 "
                   r"kept checkpoints on 2 heldout conditions", text)
  assert re.search(r"checkpoint 1/2 \(step 4\): heldout w2 = \S+\n.*"
                   r"checkpoint 2/2 \(step 8\): heldout w2 = ", text)
  for split, n in (("train", 4), ("heldout", 2)):
    assert f"evaluating {split}: generating {64 * n} samples of {n} conditions" in text
    for i in range(1, n + 1):
      assert re.search(rf"scored {split} conditions \(w1, w2, mmd, energy\): {i}/{n} "
                       rf"\([SH], \d+°\), \d+s", text), (split, i)
  # The same command again reuses the evaluation instead of scoring every checkpoint.
  again = io.StringIO()
  train_and_evaluate(config, tmp_path, console=Console("[run 1/2 (tiny)]", stream=again))
  assert "reusing its eval.json (--reevaluate scores it again)" in again.getvalue()
  assert "checkpoint" not in again.getvalue() and "compiling" not in again.getvalue()
