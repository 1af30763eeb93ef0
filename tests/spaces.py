"""The tiny spaces the tests search: one module instead of a copy in every test file.

:func:`tiny_space_fn` is a space function (for ``SearchSpace(tiny_space_fn)``);
:func:`conv_space` is the source of a space *file*, for tests that search through the CLI
or in subprocesses (``--space FILE:space``); :func:`write_space` writes one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn


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
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w),
                   nn.ReLU() if act == "relu" else nn.GELU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def conv_space(widths: Sequence[int], depth: tuple[int, int] | None = None, num_classes: int = 10,
               width_name: str = "w{i}", pause: bool = False) -> str:
    """Source of a space file of 3x3 conv + ReLU layers, global pooling and a linear head.

    Args:
        widths: The choices of each layer's width.
        depth: ``None``: one layer, its width decision named ``w``; ``(lo, hi)``: an integer
            decision ``depth`` in ``lo..hi``, then one width decision per layer, named
            ``width_name.format(i=i)``.
        num_classes: The default of the space's ``num_classes`` argument.
        pause: Add a ``pause`` argument (seconds each build sleeps), for tests that act
            while a search runs.
    """
    choices = list(widths)
    head = [
        "import time" if pause else "",
        "from torch import nn",
        "",
        f"def space(s, input_shape=(1, 8, 8), num_classes={num_classes}"
        f"{', pause=0.0' if pause else ''}):",
    ]
    if depth is None:
        body = [f'    w = s.choice("w", {choices})', "    widths = [w]"]
    else:
        lo, hi = depth
        body = [f'    depth = s.integer("depth", {lo}, {hi})',
                f"    widths = [s.choice(f{width_name!r}, {choices}) for i in range(depth)]"]
    build = [
        "    if not s.build:",
        "        return None",
        *(["    time.sleep(pause)"] if pause else []),
        "    layers, c = [], input_shape[0]",
        "    for w in widths:",
        "        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]",
        "        c = w",
        "    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),",
        "                         nn.Linear(c, num_classes))",
    ]
    return "\n".join([*head, *body, *build]) + "\n"


def write_space(folder: Path, source: str, name: str = "sp.py") -> str:
    """Write ``source`` to ``folder/name``; returns its ``--space`` reference."""
    path = Path(folder) / name
    path.write_text(source, encoding="utf-8")
    return f"{path}:space"
