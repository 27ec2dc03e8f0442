"""One run per workdir: a live holder refuses others, a killed one's lock is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from flowzoo.workdir_lock import LOCK_NAME, WorkdirLock, WorkdirLockedError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Holds the lock of argv[1] until killed; prints once it holds it. The module
# is loaded from its file: `import flowzoo.workdir_lock` would first import the
# package (jax and every component), 10-30 s on a busy 2-core machine.
_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location(
    "workdir_lock", {repo!r} + "/flowzoo/workdir_lock.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
lock = module.WorkdirLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
  """A live process on this host holding `tmp_path`'s lock (killed at the end)."""
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(repo=REPO), str(tmp_path)],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  yield proc
  proc.kill()
  proc.wait()


def test_second_holder_is_refused_with_pid_and_host(tmp_path, holder):
  with pytest.raises(WorkdirLockedError,
                     match=rf"in use by another run: pid {holder.pid} on host "
                           rf"'{socket.gethostname()}'.*use another --workdir"):
    WorkdirLock(tmp_path).acquire()
  assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid  # untouched


def test_lock_of_a_killed_run_is_taken_over(tmp_path, holder, capsys):
  holder.send_signal(signal.SIGKILL)  # no clean-up: the lock file stays
  holder.wait()
  assert (tmp_path / LOCK_NAME).exists()
  with WorkdirLock(tmp_path):
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
  assert f"stale lock {tmp_path / LOCK_NAME} (pid {holder.pid} on" in capsys.readouterr().out
  assert not (tmp_path / LOCK_NAME).exists()  # released on exit


def test_one_process_cannot_hold_a_workdir_twice(tmp_path):
  with WorkdirLock(tmp_path):
    with pytest.raises(WorkdirLockedError, match=f"pid {os.getpid()}"):
      WorkdirLock(tmp_path).acquire()
  WorkdirLock(tmp_path).acquire()  # free again


def _write_lock(tmp_path, **owner):
  (tmp_path / LOCK_NAME).write_text(json.dumps(owner))


def test_lock_from_another_host_is_refused_with_the_file_to_delete(tmp_path):
  _write_lock(tmp_path, pid=1, host="other-machine", started="2026-01-01T00:00:00")
  with pytest.raises(WorkdirLockedError, match=r"host 'other-machine'.*cannot check from "
                                              rf"another host, delete {tmp_path / LOCK_NAME}"):
    WorkdirLock(tmp_path).acquire()


def test_reused_pid_or_reboot_makes_a_lock_stale(tmp_path, capsys):
  me = socket.gethostname()
  # pid 1 exists, but started at another time than the one recorded.
  _write_lock(tmp_path, pid=1, host=me, start_ticks=-5)
  WorkdirLock(tmp_path).acquire()
  assert "pid 1 now belongs to a process started later" in capsys.readouterr().out
  _write_lock(tmp_path, pid=1, host=me, boot_id="a-previous-boot")
  WorkdirLock(tmp_path).acquire()
  assert "ran before this machine rebooted" in capsys.readouterr().out
  (tmp_path / LOCK_NAME).write_text('{"pid": 12')  # killed while writing the lock
  WorkdirLock(tmp_path).acquire()
  assert "content is unreadable" in capsys.readouterr().out


def test_release_leaves_a_lock_taken_over_by_another_run(tmp_path):
  lock = WorkdirLock(tmp_path)
  lock.acquire()
  _write_lock(tmp_path, pid=1, host="other-machine", token="theirs")
  lock.release()
  assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == "theirs"


def test_workdir_that_is_a_file_is_named(tmp_path):
  (tmp_path / "f").write_text("x")
  with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
    WorkdirLock(tmp_path / "f").acquire()


def test_train_and_evaluate_refuses_a_locked_workdir(tmp_path, holder):
  # Two runs on one workdir used to both train, interleaving checkpoints.
  from flowzoo.experiment import train_and_evaluate  # pylint: disable=import-outside-toplevel
  from tests.helpers import tiny_letters_config  # pylint: disable=import-outside-toplevel
  with pytest.raises(WorkdirLockedError, match=f"pid {holder.pid}"):
    train_and_evaluate(tiny_letters_config(), tmp_path)
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "config.json").exists()
