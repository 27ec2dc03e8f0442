"""Benchmark scripts refuse bad arguments by name, before building or compiling anything."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, args, message", [
    ("cfm_step.py", ["--torch_steps", "-1"], "--torch_steps must be >= 0"),
    ("cfm_step.py", ["--steps", "10"], "--steps (10) must be >= --steps_per_dispatch (100)"),
    ("mixflow_step.py", ["--steps", "5"], "--steps (5) must be >= --steps_per_dispatch (100)"),
    ("mixflow_step.py", ["--populations_per_batch", "3"],
     "--populations_per_batch must divide the batch of 256, got 3"),
])
def test_bad_benchmark_arguments_fail_with_a_message(script, args, message):
  out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode == 2, out.stderr[-2000:]  # argparse's usage error
  assert message in out.stderr
  assert "Traceback" not in out.stderr
