"""One run per workdir: an exclusive lock file holding the owner's pid and host.

Two runs on one workdir both trained, interleaving checkpoints, metrics and
the temporary files each deletes on start. `WorkdirLock` creates
`workdir/run.lock` with `O_CREAT | O_EXCL` (atomic, also on NFS) and writes
who holds it; a second run is refused with that information.

A lock outlives a run that was killed (SIGKILL, out of memory, power loss).
It is *stale* when its host is this host and its process is gone: no process
with that pid, or one that started at another time (the pid was reused, e.g.
in a restarted container), or the machine rebooted since. A stale lock is
taken over with a message. A lock held on another host cannot be checked and
is refused; the message says which file to delete if that run is gone.
Taking over is serialised by `flock` on `run.lock.guard`, so two runs that
find the same stale lock cannot both take it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
import uuid
from pathlib import Path

LOCK_NAME = "run.lock"


class WorkdirLockedError(RuntimeError):
  """Another live run holds the workdir."""


def _proc_start_ticks(pid: int) -> int | None:
  """Start time of `pid` in clock ticks since boot (Linux), None if unknown."""
  try:
    stat = Path(f"/proc/{pid}/stat").read_text()
  except OSError:
    return None
  try:  # field 22; the command name (field 2) may hold spaces, so split after ')'
    return int(stat.rsplit(")", 1)[1].split()[19])
  except (IndexError, ValueError):
    return None


def _boot_id() -> str | None:
  try:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
  except OSError:
    return None


def _pid_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


class WorkdirLock:
  """Exclusive use of `workdir` by this process (a context manager).

  Args:
    workdir: run directory; created if missing.
  Raises (on `acquire`):
    WorkdirLockedError: another live run holds the lock.
    NotADirectoryError: `workdir` is a file.
  """

  _held: set[str] = set()  # tokens this process holds (a pid alone cannot tell)

  def __init__(self, workdir: str | Path):
    self.workdir = Path(workdir)
    self.path = self.workdir / LOCK_NAME
    self._token: str | None = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> None:
    if self.workdir.exists() and not self.workdir.is_dir():
      raise NotADirectoryError(f"workdir {str(self.workdir)!r} exists and is not a directory.")
    self.workdir.mkdir(parents=True, exist_ok=True)
    with open(self.workdir / (LOCK_NAME + ".guard"), "a") as guard:
      fcntl.flock(guard, fcntl.LOCK_EX)  # released when the file closes
      if self.path.exists():
        owner = self._read()
        why = self._stale(owner)
        if why is None:
          raise WorkdirLockedError(self._refusal(owner))
        print(f"taking over the stale lock {self.path} ({why}).", flush=True)
        self.path.unlink()
      token = uuid.uuid4().hex
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "token": token,
                   "boot_id": _boot_id(), "start_ticks": _proc_start_ticks(os.getpid()),
                   "started": datetime.datetime.now().isoformat(timespec="seconds"),
                   "command": " ".join(sys.argv)}, f)
        f.flush()
        os.fsync(f.fileno())
    self._token = token
    WorkdirLock._held.add(token)

  def release(self) -> None:
    """Removes the lock file if it is still this holder's."""
    if self._token is None:
      return
    WorkdirLock._held.discard(self._token)
    token, self._token = self._token, None
    if self.path.exists() and self._read().get("token") == token:
      self.path.unlink()

  def _read(self) -> dict:
    try:
      owner = json.loads(self.path.read_text())
    except (OSError, ValueError):
      return {}
    return owner if isinstance(owner, dict) else {}

  def _stale(self, owner: dict) -> str | None:
    """Why the lock's holder is gone, or None if it may be alive."""
    if not {"pid", "host"} <= set(owner):
      # Lock files are written under the guard, so an unreadable one was left
      # by a run killed while writing it.
      return "its content is unreadable"
    pid, host = owner["pid"], owner["host"]
    if host != socket.gethostname():
      return None  # another machine's processes cannot be checked from here
    if owner.get("boot_id") and _boot_id() and owner["boot_id"] != _boot_id():
      return f"pid {pid} ran before this machine rebooted"
    if pid == os.getpid() and owner.get("token") not in WorkdirLock._held:
      return f"pid {pid} is this process, which does not hold it"
    if not _pid_exists(pid):
      return f"pid {pid} on {host} no longer exists"
    ticks = owner.get("start_ticks")
    if ticks is not None and _proc_start_ticks(pid) not in (None, ticks):
      return f"pid {pid} now belongs to a process started later"
    return None

  def _refusal(self, owner: dict) -> str:
    pid, host = owner["pid"], owner["host"]
    unchecked = ("" if host == socket.gethostname() else
                 ", which this process cannot check from another host")
    return (f"workdir {self.workdir} is in use by another run: pid {pid} on host {host!r}, "
            f"started {owner.get('started', '?')} ({owner.get('command', '?')}). One run per "
            f"workdir: wait for it to finish or stop it, or use another --workdir. If that "
            f"run is gone{unchecked}, delete {self.path}.")
