"""The NAS-Bench-201 space (Dong & Yang, ICLR 2020), as in the official xautodl code.

A cell is a DAG of 4 nodes; node ``i`` is the sum of one operation on each earlier
node ``j`` (6 edges ``i <- j``). The same cell is repeated in a fixed macro skeleton::

    stem: conv3x3(C) + BN
    N cells (C)  -> ResNet basic block, stride 2 (2C)
    N cells (2C) -> ResNet basic block, stride 2 (4C)
    N cells (4C) -> BN, ReLU, global average pool, linear

Convolutions are ReLU-Conv-BN (affine BN, conv without bias), as in the official
"infer" network (``TinyNetwork`` / ``InferCell``). There are 5^6 = 15,625 cells.

The official architecture string (the key of the NAS-Bench-201 tables) lists the edges
node by node: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; see :func:`to_nb201_string`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cellblock.core.errors import ArchValidationError, SpaceError
from cellblock.search_spaces.api import register_space
from cellblock.search_spaces.tags import candidate

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                              "avg_pool_3x3")
NODES = 4
# The 6 edges (i <- j) in the official order: node by node, then by source node.
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NODES) for j in range(i))


def edge_name(i: int, j: int) -> str:
    """Decision name of the edge ``i <- j`` (``edge_1_0``, ``edge_2_0``...)."""
    return f"edge_{i}_{j}"


EDGE_NAMES: tuple[str, ...] = tuple(edge_name(i, j) for i, j in EDGES)


# ---- operations (official cell_operations.py semantics) -------------------------------------
class ReLUConvBN(nn.Sequential):
    """ReLU, Conv (no bias), affine BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=True, track_running_stats=True),
        )


class Zero(nn.Module):
    """The ``none`` operation: a zero tensor of the input's shape (stride 1, same width)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    """The cell operation ``name`` on ``channels`` channels (stride 1, as in every NB201 cell).

    Raises:
        SpaceError: for an unknown operation name.
    """
    if name not in OPS:
        raise SpaceError(f"unknown NAS-Bench-201 operation {name!r}; known: {', '.join(OPS)}")
    return OPS[name](channels)


OPS: dict[str, Any] = {
    "none": lambda c: Zero(),
    "skip_connect": lambda c: nn.Identity(),
    "nor_conv_1x1": lambda c: ReLUConvBN(c, c, 1, 1, 0),
    "nor_conv_3x3": lambda c: ReLUConvBN(c, c, 3, 1, 1),
    "avg_pool_3x3": lambda c: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
}


class Cell(nn.Module):
    """One NB201 cell: node ``i`` = sum over ``j < i`` of ``op[i, j](node j)``; the last is out."""

    def __init__(self, ops: Mapping[tuple[int, int], str], channels: int) -> None:
        super().__init__()
        self.edges = list(EDGES)
        self.layers = nn.ModuleList(
            candidate(make_op(ops[e], channels), ops[e]) for e in self.edges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for i in range(1, NODES):
            total = None
            for _ in range(i):
                _, j = self.edges[k]
                out = self.layers[k](nodes[j])
                total = out if total is None else total + out
                k += 1
            nodes.append(total)
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """The official reduction block: two ReLU-Conv-BN 3x3 (first with stride 2) + a shortcut.

    The stride-2 shortcut is a 2x2 average pool followed by a 1x1 conv (no BN).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample: nn.Module | None
        if stride == 2:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
            )
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1, 0)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NB201 macro skeleton around one cell genotype (official ``TinyNetwork``)."""

    def __init__(
        self,
        ops: Mapping[tuple[int, int], str],
        in_channels: int = 3,
        num_classes: int = 10,
        C: int = 16,
        N: int = 5,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C)
        )
        cells: list[nn.Module] = []
        c_prev = C
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                cells.append(ResNetBasicBlock(c_prev, width, 2))
            cells.extend(Cell(ops, width) for _ in range(N))
            c_prev = width
        self.cells = nn.Sequential(*cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))


# ---- the space -------------------------------------------------------------------------------
def _check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(ops)
    unknown = [o for o in ops if o not in OPS]
    if not ops or unknown or len(set(ops)) != len(ops):
        raise SpaceError(
            f"nb201 option ops={list(ops)!r} must be distinct names among: {', '.join(OPS)}"
        )
    return ops


@register_space("nb201")
def nb201(
    s: Any,
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    C: int = 16,
    N: int = 5,
    ops: Sequence[str] = NB201_OPS,
) -> nn.Module | None:
    """NAS-Bench-201: one operation per cell edge ``edge_i_j`` (node i <- node j).

    Args:
        s: The sampler.
        input_shape: ``(C, H, W)`` of one input.
        num_classes: Classifier outputs.
        C: Channels of the first stage (then 2C, 4C).
        N: Cells per stage.
        ops: Candidate operations of every edge (default: the 5 official ones).
    """
    ops = _check_ops(ops)
    if C < 1 or N < 0:
        raise SpaceError(f"nb201 needs C >= 1 and N >= 0, got C={C}, N={N}")
    genotype = {(i, j): s.choice(edge_name(i, j), ops) for i, j in EDGES}
    if not s.build:
        return None
    return NB201Network(genotype, int(input_shape[0]), num_classes, C, N)


# ---- the official architecture string --------------------------------------------------------
def to_nb201_string(arch: Mapping[str, Any]) -> str:
    """The official NAS-Bench-201 string of ``arch``, e.g.
    ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.

    Raises:
        ArchValidationError: if an edge decision is missing or not an operation name.
    """
    nodes = []
    for i in range(1, NODES):
        parts = []
        for j in range(i):
            name = edge_name(i, j)
            op = arch.get(name)
            if not isinstance(op, str) or op not in OPS:
                raise ArchValidationError(
                    f"nb201 architecture needs {name!r} to be one of {', '.join(OPS)}, got {op!r}"
                )
            parts.append(f"{op}~{j}")
        nodes.append("|" + "|".join(parts) + "|")
    return "+".join(nodes)


COST_FREE_OPS = ("none", "skip_connect", "avg_pool_3x3")


def cost_representative(arch: Mapping[str, Any]) -> dict[str, str]:
    """An architecture whose network has the same MACs and parameters as ``arch``'s.

    In an NB201 cell every edge maps C channels to C channels at the same resolution,
    so an edge's MACs and parameters depend only on its operation, not on its position;
    ``none``, ``skip_connect`` and ``avg_pool_3x3`` have no parameters and no
    multiply-accumulates (pooling is not counted as MACs). So the costs depend only on
    the numbers of 3x3 and 1x1 convolutions: the representative puts the 3x3 convs
    first, then the 1x1 convs, then ``none``. There are 28 representatives.
    """
    ops = [arch.get(name) for name in EDGE_NAMES]
    n3 = sum(op == "nor_conv_3x3" for op in ops)
    n1 = sum(op == "nor_conv_1x1" for op in ops)
    canon = ["nor_conv_3x3"] * n3 + ["nor_conv_1x1"] * n1 + ["none"] * (len(ops) - n3 - n1)
    return dict(zip(EDGE_NAMES, canon))


_TOKEN = re.compile(r"^([A-Za-z0-9_]+)~(\d+)$")


def from_nb201_string(text: str, ops: Sequence[str] = NB201_OPS) -> dict[str, str]:
    """Parse an official NAS-Bench-201 string into an ``nb201`` architecture dict.

    Raises:
        ArchValidationError: naming the problem (shape, edge, operation) and the allowed ops.
    """
    allowed = ", ".join(ops)
    if not isinstance(text, str):
        raise ArchValidationError(
            f"an NB201 string must be a str like '|op~0|+|op~0|op~1|+...', got {text!r}")
    nodes = text.strip().split("+")
    if len(nodes) != NODES - 1:
        raise ArchValidationError(
            f"NB201 string {text!r} must have {NODES - 1} nodes separated by '+', got {len(nodes)}"
        )
    arch: dict[str, str] = {}
    for i, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
            raise ArchValidationError(
                f"node {i} of NB201 string {text!r} must look like '|op~0|...|'")
        tokens = node[1:-1].split("|")
        if len(tokens) != i:
            raise ArchValidationError(
                f"node {i} of NB201 string {text!r} must have {i} edges, got {len(tokens)}"
            )
        for j, token in enumerate(tokens):
            m = _TOKEN.match(token)
            if not m or int(m.group(2)) != j:
                raise ArchValidationError(
                    f"edge {j} of node {i} in NB201 string {text!r} must be 'OP~{j}', got {token!r}"
                )
            if m.group(1) not in ops:
                raise ArchValidationError(
                    f"unknown operation {m.group(1)!r} in NB201 string {text!r}; allowed: {allowed}"
                )
            arch[edge_name(i, j)] = m.group(1)
    return arch


__all__ = [
    "EDGES",
    "EDGE_NAMES",
    "NB201Network",
    "NB201_OPS",
    "OPS",
    "cost_representative",
    "edge_name",
    "from_nb201_string",
    "nb201",
    "to_nb201_string",
]
