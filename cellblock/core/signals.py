"""Signals and child processes: SIGTERM stops a command like Ctrl-C, and worker
processes exit when their parent dies (kill -9 included).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


class Terminated(KeyboardInterrupt):
    """SIGTERM was received: unwound like Ctrl-C (records closed, derived files refreshed)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def install_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


PR_SET_PDEATHSIG = 1
WATCHDOG_S = 1.0


def die_with_parent(parent_pid: int) -> None:
    """Exit this (worker) process when ``parent_pid`` dies.

    On Linux the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``);
    everywhere a daemon thread also checks the parent pid every second.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="cellblock-parent-watchdog", daemon=True).start()


_REAPER = r"""
import os, signal, sys, time
driver, me = int(sys.argv[1]), os.getpid()
def stat(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(f[1]), f[19]
def tree():
    kids = {}
    for e in os.listdir("/proc"):
        s = stat(int(e)) if e.isdigit() else None
        if s:
            kids.setdefault(s[0], []).append((int(e), s[1]))
    out, todo = {}, [driver]
    while todo:
        for pid, start in kids.get(todo.pop(), []):
            if pid != me:
                out[pid] = start
                todo.append(pid)
    return out
known = {}
while os.getppid() == driver:
    known.update(tree())
    known = {p: t for p, t in known.items() if (s := stat(p)) and s[1] == t}
    time.sleep(1.0)
for pid, start in known.items():
    s = stat(pid)
    if s and s[1] == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def start_reaper() -> object | None:
    """A small process that, if this process dies (kill -9 included), kills every process
    that descended from it (e.g. a private Ray instance's agents, which outlive their
    raylet). Linux only (reads /proc); returns the ``Popen`` or None."""
    import subprocess

    if not os.path.isdir("/proc/self"):
        return None
    return subprocess.Popen([sys.executable, "-I", "-S", "-c", _REAPER, str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop_reaper(reaper: object | None) -> None:
    """Stop a reaper after an orderly shutdown."""
    if reaper is not None:
        reaper.kill()  # type: ignore[attr-defined]
        reaper.wait()  # type: ignore[attr-defined]
