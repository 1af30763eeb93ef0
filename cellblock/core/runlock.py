"""An exclusive lock on a run directory (or checkpoint) while one process writes it.

The lock is a file (``RUN/.cellblock.lock``) holding the holder's pid, host, command and
start time, locked with ``flock``: the kernel drops it when the holder dies (kill -9
included), so a lock file left behind by a dead process is stale and taken over with a
notice. A second writer gets :class:`RunLockedError` (exit 2) naming the holder.
Readers (``show``, ``report``, ``export``) never take the lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from cellblock.core.errors import RunError

_log = logging.getLogger(__name__)

LOCK_NAME = ".cellblock.lock"


class RunLockedError(RunError):
    """Another live process holds the lock of a run directory."""


def _describe(info: dict[str, Any]) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {when}"


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive, crash-safe lock on ``path`` (a lock file); use as a context manager.

    Args:
        path: The lock file (created if missing; its folder must exist).
        what: What is locked, for messages (e.g. ``run directory 'RUN'``).
        command: The holder's command, recorded in the lock file.
    """

    def __init__(self, path: str | Path, what: str, command: str = "") -> None:
        self.path = Path(path)
        self.what = what
        self.command = command or " ".join(["cellblock", *sys.argv[1:]])[:300]
        self._fd: int | None = None
        self.taken_over: dict[str, Any] | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLockedError` naming the live holder."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{self.what} is in use by another cellblock process ({_describe(holder)}"
                    f"{': ' + holder['command'] if holder.get('command') else ''}); wait for it to "
                    "finish or stop it, or use another --out"
                ) from None
            try:  # the holder may have unlinked the file between our open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = _read(fd)
        if old.get("pid") is not None and old.get("pid") != os.getpid():
            self.taken_over = old
            alive = old.get("host") == socket.gethostname() and pid_alive(int(old["pid"]))
            state = "no longer holds it" if alive else "is no longer running"
            _log.warning("taking over the stale lock of %s left by %s, which %s", self.what,
                         _describe(old), state)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": self.command}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_dir_lock(run_dir: str | Path) -> RunLock:
    """The lock of a run directory (which must exist)."""
    return RunLock(Path(run_dir) / LOCK_NAME, f"run directory {str(run_dir)!r}")


def file_lock(path: str | Path) -> RunLock:
    """The lock of an output file such as a supernet checkpoint (``FILE.lock`` beside it)."""
    path = Path(path)
    return RunLock(path.with_name(path.name + ".lock"), f"{str(path)!r}")
