"""A synthetic NAS-Bench-201 CIFAR-100 table: every one of the 15,625 cells, seeded values.

Same file format as the real table (``arch,cifar100_test_acc``; the official architecture
string, the accuracy in percent with four decimals), so tests exercise the table evaluator
and ``cellblock bench`` without ``../shared`` (only the benchmarks under
``results/benchmarks/`` read the real one).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: Made-up contribution of each operation to the accuracy, in points.
EFFECT = {"none": -6.0, "skip_connect": 1.0, "nor_conv_1x1": 4.0, "nor_conv_3x3": 7.0,
          "avg_pool_3x3": 0.0}


def arch_string(ops: tuple[str, ...]) -> str:
    """The official string of the cell whose six edges (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)
    carry ``ops``."""
    a, b, c, d, e, f = ops
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


def write_nb201_table(path: Path, seed: int = 0) -> Path:
    """Write the table to ``path`` (parents created) and return it."""
    rng = np.random.default_rng(seed)
    lines = ["arch,cifar100_test_acc"]
    for ops in itertools.product(OPS, repeat=6):
        acc = 35.0 + sum(EFFECT[o] for o in ops) + rng.normal(0.0, 1.5)
        lines.append(f"{arch_string(ops)},{min(max(acc, 1.0), 75.0):.4f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
