"""One run over 1, 4 and 2 x 2 devices: the same training, and a resume across processes.

The runs are the real CLI (`python -m experiments.run`, cfm_letters runlocal
shrunk to seconds):

* 1 process with 4 forced CPU devices: the reference;
* 2 processes on localhost with 2 forced CPU devices each, joined by
  `jax.distributed` (gloo CPU collectives): final parameters, optimizer state
  and EMA equal the reference's to float tolerance, and only process 0
  prints and writes (logs, plots, eval.json, the table);
* the 2-process run with its last checkpoint and evaluation removed, run
  again: both processes restore step 4 collectively and finish to the same
  state;
* this process (1 device), through the notebook API: the same losses and
  parameters as the 4-device reference (rtol 1e-3: sums over 1 vs 4 shards
  round differently).

Each subprocess has a timeout: a collective deadlock fails the test instead
of hanging CI. The runs share one persistent XLA cache, so the resumed run
compiles nothing.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.helpers import tiny_letters_config

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds; guards against a hang only (the machine may be loaded)
OVERRIDES = {"data.batch_size": 32, "eval.select": "", "eval.metrics": ("w2",),
             "eval.plot_conditions": 1}
CONFIG = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.helpers import tiny_letters_config
def get_config():
  return tiny_letters_config(**{OVERRIDES!r})
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(tmp: Path, workdir: Path, devices: int, log: str, *flags: str):
  """Starts one process of a run; returns (process, log path)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "")  # + conftest's flags
             + f" --xla_force_host_platform_device_count={devices}",
             JAX_COMPILATION_CACHE_DIR=str(tmp / "xla_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  path = tmp / log
  with open(path, "a") as out:  # a file, not a pipe: nobody reads while it runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", f"--config={tmp / 'tiny.py'}",
         f"--workdir={workdir}", *flags], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
  return proc, path


def _two_processes(tmp: Path, workdir: Path) -> list:
  address = f"localhost:{_free_port()}"
  return [_start(tmp, workdir, 2, f"process{i}.log", f"--coordinator_address={address}",
                 "--num_processes=2", f"--process_id={i}") for i in range(2)]


def _finish(procs: list) -> None:
  try:
    codes = [p.wait(timeout=TIMEOUT) for p, _ in procs]
  finally:
    for p, _ in procs:
      p.kill()
  for code, (_, log) in zip(codes, procs):
    assert code == 0, f"{log.name}:\n{log.read_text()[-3000:]}"


def _state(workdir: Path, step: int) -> dict:
  path = workdir / "checkpoints" / str(step) / "default"
  checkpointer = ocp.PyTreeCheckpointer()
  meta = checkpointer.metadata(path).item_metadata.tree
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def _losses(workdir: Path) -> list[float]:
  rows = (workdir / "train_metrics.jsonl").read_text().splitlines()
  return [json.loads(r)["loss"] for r in rows]


def _close(a, b, rtol=1e-5, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("multiprocess")
  (tmp / "tiny.py").write_text(CONFIG)
  ref, multi = tmp / "one_process", tmp / "two_processes"
  procs = [_start(tmp, ref, 4, "reference.log"), *_two_processes(tmp, multi)]
  _finish(procs)
  return tmp, ref, multi


def test_two_processes_train_as_one_process_on_as_many_devices(runs):
  tmp, ref, multi = runs
  final = _state(ref, 8)
  _close(_state(multi, 8), final)
  np.testing.assert_allclose(_losses(multi), _losses(ref), rtol=1e-5)
  w2 = lambda d: json.loads((d / "eval.json").read_text())["w2"]["heldout"]["mean"]  # pylint: disable=unnecessary-lambda-assignment
  np.testing.assert_allclose(w2(multi), w2(ref), rtol=1e-4)
  primary, other = (tmp / "process0.log").read_text(), (tmp / "process1.log").read_text()
  assert "devices: 4 x cpu in 2 processes" in primary and "[      8/8]" in primary
  assert "| tiny |" in primary  # the table
  for line in ("devices:", "[      8/8]", "| tiny |", "evaluating"):
    assert line not in other, f"process 1 printed {line!r}:\n{other[-2000:]}"


def test_two_processes_resume_a_collective_checkpoint(runs):
  tmp, ref, multi = runs
  shutil.rmtree(multi / "checkpoints" / "8")
  (multi / "eval.json").unlink()
  _finish(_two_processes(tmp, multi))
  assert "resuming from checkpoint at step 4" in (tmp / "process0.log").read_text()
  _close(_state(multi, 8), _state(ref, 8))
  assert len(_losses(multi)) == 2  # steps 4 and 8, the resumed step 8 replacing the first


def test_one_device_in_process_matches_four(runs):
  _, ref, _ = runs
  from flowzoo.experiment import setup  # pylint: disable=import-outside-toplevel
  exp = setup(tiny_letters_config(**OVERRIDES))
  assert jax.device_count() == 1
  state, metrics = exp.train(exp.init(), 8)
  final = _state(ref, 8)
  _close(jax.device_get(state.params), final["params"], rtol=1e-3, atol=1e-5)
  # The log's rows are means over each dispatch of 4 steps.
  np.testing.assert_allclose(metrics["loss"].reshape(2, 4).mean(1), _losses(ref), rtol=1e-4)


@pytest.mark.parametrize("args, env, message", [
    ((None, 2, 1), {}, "needs the coordinator's host:port"),
    (("localhost:1", None, None), {}, "given without num_processes"),
    (("localhost:1", 2, 2), {}, r"process_id must be in \[0, num_processes=2\), got 2"),
    ((None, None, None), {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
])
def test_incomplete_distributed_settings_are_refused_before_contacting_anyone(
    monkeypatch, args, env, message):
  from flowzoo import distributed  # pylint: disable=import-outside-toplevel
  for key in distributed.ENV:
    monkeypatch.delenv(key, raising=False)
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  with pytest.raises(ValueError, match=message):
    distributed.initialize(*args)


def test_no_distributed_settings_is_one_process(monkeypatch):
  from flowzoo import distributed  # pylint: disable=import-outside-toplevel
  for key in distributed.ENV:
    monkeypatch.delenv(key, raising=False)
  assert distributed.initialize() is False
  assert distributed.initialize("localhost:1", 1, 0) is False
  assert distributed.is_primary() and jax.process_count() == 1


def test_checkpoint_selection_is_refused_in_a_multi_process_run(monkeypatch, tmp_path):
  """Refused before anything is built or trained (selection needs one process)."""
  from flowzoo.experiment import train_and_evaluate  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(ValueError, match=r"eval.select='heldout/w2'.*--config.eval.select="):
    train_and_evaluate(tiny_letters_config(), tmp_path / "run")
  assert not (tmp_path / "run").exists()
