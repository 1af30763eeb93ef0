"""A custom space file for tests that run real searches in subprocesses and interrupt them
(kill and resume, run locks, signals): ``pause`` slows each build so a test can act mid-run."""

from __future__ import annotations

from pathlib import Path

SLOW_SPACE = '''
import time
from torch import nn

def space(s, input_shape=(1, 8, 8), num_classes=10, pause=0.0):
    depth = s.integer("depth", 1, 3)
    widths = [s.choice(f"w{i}", [4, 6, 8, 12]) for i in range(depth)]
    if not s.build:
        return None
    time.sleep(pause)
    layers, c = [], input_shape[0]
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
'''


def write_slow_space(folder: Path) -> str:
    """Write the space to ``folder/sp.py``; returns its ``--space`` reference."""
    (folder / "sp.py").write_text(SLOW_SPACE)
    return f"{folder / 'sp.py'}:space"
