"""A custom space file for tests that run real searches in subprocesses and interrupt them
(kill and resume, run locks, signals): ``pause`` slows each build so a test can act mid-run."""

from __future__ import annotations

from pathlib import Path

from spaces import conv_space, write_space

SLOW_SPACE = conv_space([4, 6, 8, 12], depth=(1, 3), pause=True)


def write_slow_space(folder: Path) -> str:
    """Write the space to ``folder/sp.py``; returns its ``--space`` reference."""
    return write_space(folder, SLOW_SPACE)
