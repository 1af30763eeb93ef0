"""Shared fixtures: a tiny define-by-run space and helpers."""

from __future__ import annotations

import os

# Tiny networks train fastest on one thread, and a 2-core CI machine must not be
# oversubscribed by subprocesses (CLI, kill/resume, workers): they inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)

from cellblock.search_spaces import SearchSpace  # noqa: E402


def tiny_space_fn(s, input_shape=(1, 8, 8), num_classes=10):
    """A small conditional space: depth decides how many width decisions exist."""
    depth = s.integer("depth", 1, 3)
    widths = [s.choice(f"layer{i}.width", [4, 8, 16]) for i in range(depth)]
    act = s.choice("act", ["relu", "gelu"])
    if not s.build:
        return None
    layers: list[nn.Module] = []
    c = input_shape[0]
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU() if act == "relu" else nn.GELU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


@pytest.fixture
def tiny_space() -> SearchSpace:
    return SearchSpace(tiny_space_fn, input_shape=(1, 8, 8), num_classes=10)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
