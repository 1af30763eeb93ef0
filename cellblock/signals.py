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
