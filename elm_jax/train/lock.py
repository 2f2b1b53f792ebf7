"""An exclusive lock on a run's work directory: ``WORKDIR/.lock``.

One process at a time may write into a work directory (train, resume).  The lock is
an advisory ``flock`` on ``WORKDIR/.lock``, whose content names the holder::

    {"pid": 1234, "host": "node7", "started": "2026-12-04T14:19:20", "pid_start": ...,
     "command": [...]}

* A second process is refused at once with `WorkdirLocked`, whose message names the
  holder (pid, host, start time) and the lock file.
* The kernel drops a ``flock`` when its process dies (even by SIGKILL), so a lock file
  left by a killed process is *stale*: the next process gets the ``flock``, sees that
  the pid named in the file is not running on this host (or is another process that
  reused the pid: its start time differs) and takes the lock over, saying so.
* A lock file naming a process on *another host* is never taken over (its liveness
  cannot be checked; network file systems do not all forward ``flock``): the message
  says to delete the file if that process is gone.
* Release (normal exit, exception, SIGTERM handled by the trainer) unlinks the file
  while the ``flock`` is held; a process that opened the old file before the unlink
  notices that its file is no longer the one at the path and retries, so two
  processes can never both hold the lock.

Where ``flock`` is not supported (some FUSE file systems) only the pid check applies.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Self

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class WorkdirLocked(RuntimeError):
    """The work directory is held by another process (the message names it)."""


def _pid_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its ")"
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def holder_running(info: dict[str, Any]) -> bool | None:
    """Whether the process named by a lock file's `info` still runs: True, False, or None
    when it cannot be told (another host, or an unreadable lock file)."""
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    if not _pid_alive(pid):
        return False
    recorded, current = info.get("pid_start"), _pid_start(pid)
    # a different start time: the pid was reused by another process
    return recorded is None or current is None or recorded == current


def describe_holder(info: dict[str, Any]) -> str:
    """``pid 1234 on host node7 since 2026-12-04T14:19:20`` (what is known of it)."""
    if not info:
        return "an unknown process (the lock file is empty or unreadable)"
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since "
            f"{info.get('started', '?')}")


class WorkdirLock:
    """The exclusive lock of one work directory (a context manager).

    Args:
      workdir: the run directory (created if missing).
      name: the lock file's name inside it.
      command: the command line recorded in the lock file (default ``sys.argv``).

    ``acquire()`` raises `WorkdirLocked` if another live process holds the directory;
    ``release()`` (idempotent) frees it, and removes the directory again if `acquire`
    created it and it is still empty (a run refused by a later check leaves nothing).  `took_over` holds the description of a stale
    holder whose lock was taken over (else None).
    """

    def __init__(self, workdir: str | os.PathLike, *, name: str = LOCK_NAME,
                 command: list[str] | None = None):
        self.path = Path(workdir).absolute() / name
        self.command = list(command if command is not None else sys.argv)
        self.took_over: str | None = None
        self._fd: int | None = None
        self._created_dir = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "pid_start": _pid_start(os.getpid()), "command": self.command}

    def _refuse(self, info: dict[str, Any]) -> WorkdirLocked:
        hint = ("" if holder_running(info) else
                f"; if that process is no longer running, delete {self.path}")
        return WorkdirLocked(f"{self.path.parent} is in use by {describe_holder(info)} "
                             f"(lock file {self.path}){hint}")

    def acquire(self) -> Self:
        """Take the lock (WorkdirLocked naming the holder if another process has it)."""
        if self._fd is not None:
            return self
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._created_dir = True
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                if not _flock(fd):
                    raise self._refuse(_read_info(fd))
                try:  # the file may have been released (unlinked) since we opened it
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                previous = _read_info(fd)
                if previous and previous.get("pid") != os.getpid():
                    running = holder_running(previous)
                    if running is not False:  # alive, or cannot tell (another host)
                        raise self._refuse(previous)
                    self.took_over = describe_holder(previous)
                _write_info(fd, self._info())
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self
        raise WorkdirLocked(f"could not lock {self.path}: it is being created and removed "
                            f"by other processes")

    def release(self) -> None:
        """Free the lock (remove the lock file); a no-op when it is not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
        if self._created_dir:  # a run that failed before writing anything leaves no trace
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only if empty

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _flock(fd: int) -> bool:
    """Try an exclusive flock; False if another process holds it (True where flock is
    not supported: the pid check then decides)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return True
        raise
    return True


def _read_info(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _write_info(fd: int, info: dict[str, Any]) -> None:
    data = (json.dumps(info) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)
