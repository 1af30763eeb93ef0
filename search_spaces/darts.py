"""The ``darts`` space: NASNet/DARTS normal and reduction cells (Liu et al., ICLR 2019).

Each cell has two inputs, states 0 and 1 (the outputs of the two previous cells,
``c_{k-2}`` and ``c_{k-1}``, preprocessed to ``C`` channels), and ``nodes`` intermediate
nodes numbered 2 .. nodes+1 as in the DARTS genotypes. Node ``k`` sums two edges, each
an op applied to an earlier state. Per cell type (``normal``, then ``reduce``) and node
``k`` the decisions are, in order::

    {cell}.node{k}.in0   an earlier state index, one of 0 .. k-1
    {cell}.node{k}.op0   one of ``ops``
    {cell}.node{k}.in1   an earlier state index, one of 0 .. k-1
    {cell}.node{k}.op1   one of ``ops``

The cell output concatenates every intermediate node (``C * nodes`` channels). The
network is the DARTS CIFAR one: a 3x3 conv + BN stem with ``3 * C`` channels, ``layers``
cells with reduction cells (channels doubled, edges from the cell inputs with stride 2,
``skip_connect`` there is a FactorizedReduce) at ``layers // 3`` and ``2 * layers // 3``,
global average pool and a linear classifier (no auxiliary head).

ScheduledDropPath: the network's ``drop_path_prob`` attribute (0 when built) is the
probability of dropping each non-identity edge output, applied only in training mode
and only when it is > 0. A training loop schedules it by calling
``model.on_epoch_start(epoch, epochs)`` at the start of each epoch, which sets it to
``drop_path * epoch / epochs`` as in DARTS ``train.py``; it may also set it directly.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cellblock.core.errors import ArchValidationError, ConfigError
from cellblock.search_spaces.api import register_space
from cellblock.search_spaces.darts_ops import (
    DARTS_OPS,
    FactorizedReduce,
    Identity,
    ReLUConvBN,
    drop_path,
)
from cellblock.search_spaces.samplers import Sampler
from cellblock.search_spaces.tags import candidate

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
"""DARTS genotype: per cell type a list of ``(op, input)`` pairs, two per node, and the concat."""

DARTS_OPS_DEFAULT = (
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
    "max_pool_3x3", "avg_pool_3x3", "skip_connect", "none",
)
CELL_TYPES = ("normal", "reduce")

DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)
"""The published second-order DARTS cell (``genotypes.DARTS_V2`` of the official code)."""

DARTS_CIFAR_SKELETON: dict[str, Any] = {
    "input_shape": (3, 32, 32), "num_classes": 10, "C": 36, "layers": 20, "nodes": 4,
}
"""The DARTS CIFAR-10 evaluation network (3.3 M parameters with the DARTS_V2 cell)."""

Edge = tuple[int, str]  # (input state index, op name)


class Cell(nn.Module):
    """One DARTS cell built from ``nodes`` pairs of edges."""

    def __init__(self, edges: Sequence[tuple[Edge, Edge]], c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1,
                                                                                       1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.indices = [i for pair in edges for i, _ in pair]
        self.ops = nn.ModuleList(
            candidate(DARTS_OPS.get(op)(c, 2 if reduction and i < 2 else 1), op)
            for pair in edges for i, op in pair
        )
        self.nodes = len(edges)
        self.multiplier = self.nodes

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        apply_drop = self.training and drop_prob > 0
        for k in range(self.nodes):
            total = None
            for j in (2 * k, 2 * k + 1):
                op = self.ops[j]
                h = op(states[self.indices[j]])
                if apply_drop and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat(states[2:], dim=1)


class DartsNetwork(nn.Module):
    """DARTS CIFAR network: stem, cells, global pool, linear (see the module docstring).

    Attributes:
        drop_path_prob: Current drop-path probability (used in training mode only).
        drop_path: Maximum of the linear schedule set by :meth:`on_epoch_start`.
    """

    def __init__(self, normal: Sequence[tuple[Edge, Edge]], reduce: Sequence[tuple[Edge, Edge]],
                 in_channels: int, num_classes: int, C: int, layers: int,  # noqa: N803
                 stem_multiplier: int = 3, stem_stride: int = 1, drop_path: float = 0.0) -> None:
        super().__init__()
        self.drop_path = drop_path
        self.drop_path_prob = 0.0
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(c_curr),
        )
        c_pp, c_p, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = Cell(reduce if reduction else normal, c_pp, c_p, c_curr, reduction,
                        reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """ScheduledDropPath: ``drop_path_prob = drop_path * epoch / epochs`` (0-based epoch)."""
        self.drop_path_prob = self.drop_path * epoch / max(1, epochs)

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
        return self.classifier(self.global_pooling(s1).flatten(1))


def _skeleton(input_shape: Any, num_classes: Any, C: Any, layers: Any, nodes: Any,  # noqa: N803
              ops: Any, stem_stride: Any, drop_path: Any) -> tuple[int, ...]:
    """Check the skeleton arguments (ConfigError / RegistryError); return ``input_shape``."""
    def positive(name: str, v: Any) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"darts option {name} must be an integer >= 1, got {v!r}")

    if (isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence)
            or len(input_shape) != 3):
        raise ConfigError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    for name, v in (("num_classes", num_classes), ("C", C), ("layers", layers), ("nodes", nodes),
                    ("stem_stride", stem_stride),
                    *((f"input_shape[{i}]", d) for i, d in enumerate(input_shape))):
        positive(name, v)
    if isinstance(ops, (str, bytes)) or not isinstance(ops, Sequence) or not ops:
        raise ConfigError(f"darts option ops must be a non-empty list of op names, got {ops!r}")
    if len(set(ops)) != len(ops):
        raise ConfigError(f"darts option ops has duplicate names: {list(ops)!r}")
    for op in ops:
        DARTS_OPS.get(op)
    if not isinstance(drop_path, (int, float)) or isinstance(drop_path,
                                                             bool) or not 0 <= drop_path < 1:
        raise ConfigError(f"darts option drop_path must be a number in [0, 1), got {drop_path!r}")
    return tuple(input_shape)


def _cell_decisions(s: Sampler, cell: str, nodes: int,
                    ops: tuple[str, ...]) -> list[tuple[Edge, Edge]]:
    edges = []
    for k in range(2, nodes + 2):
        p = f"{cell}.node{k}."
        pair = []
        for e in (0, 1):
            src = s.choice(f"{p}in{e}", list(range(k)))
            op = s.choice(f"{p}op{e}", ops)
            pair.append((src, op))
        edges.append((pair[0], pair[1]))
    return edges


@register_space("darts")
def darts(
    s: Sampler,
    input_shape: Sequence[int] = (1, 8, 8),
    num_classes: int = 10,
    *,
    C: int = 8,  # noqa: N803  (the DARTS name of the initial channel count)
    layers: int = 5,
    nodes: int = 4,
    ops: Sequence[str] = DARTS_OPS_DEFAULT,
    stem_stride: int = 1,
    drop_path: float = 0.2,
) -> DartsNetwork | None:
    """DARTS cell space (see the module docstring for the decisions).

    The defaults suit 1x8x8 digits: 5 cells (reductions at cells 1 and 3: 8x8 -> 4x4 -> 2x2),
    C=8, a few hundred thousand MACs per image. :data:`DARTS_CIFAR_SKELETON` is the paper's
    CIFAR-10 network.

    Args:
        s: The sampler.
        input_shape: ``(C, H, W)`` of one input.
        num_classes: Outputs of the classifier.
        C: Channels of each node in the first cells (the stem has ``3 * C``).
        layers: Number of cells.
        nodes: Intermediate nodes per cell (DARTS: 4).
        ops: Registered op names (:data:`~cellblock.search_spaces.darts_ops.DARTS_OPS`).
        stem_stride: Stride of the stem conv (DARTS CIFAR: 1).
        drop_path: Maximum ScheduledDropPath probability (DARTS CIFAR: 0.2); see
            :meth:`DartsNetwork.on_epoch_start`.

    Returns:
        The network, or None when ``s.build`` is False.
    """
    shape = _skeleton(input_shape, num_classes, C, layers, nodes, ops, stem_stride, drop_path)
    ops = tuple(ops)
    normal = _cell_decisions(s, "normal", nodes, ops)
    reduce = _cell_decisions(s, "reduce", nodes, ops)
    if not s.build:
        return None
    return DartsNetwork(normal, reduce, shape[0], num_classes, C, layers,
                        stem_stride=stem_stride, drop_path=float(drop_path))


# ---- genotypes ---------------------------------------------------------------------------
def from_genotype(genotype: Any) -> dict[str, Any]:
    """The architecture dict of a DARTS ``Genotype(normal, normal_concat, reduce, reduce_concat)``.

    Also accepts a 4-tuple or a mapping with those keys. The number of nodes is
    ``len(normal) // 2``; build it with ``nodes`` set to that.

    Raises:
        ArchValidationError: if the lists are malformed, an input index is out of range,
            or a concat is not every intermediate node (this space concatenates them all).
    """
    if isinstance(genotype, Mapping):
        genotype = Genotype(**{k: genotype[k] for k in Genotype._fields})
    genotype = Genotype(*genotype)
    arch: dict[str, Any] = {}
    for cell in CELL_TYPES:
        pairs = list(getattr(genotype, cell))
        concat = [int(i) for i in getattr(genotype, f"{cell}_concat")]
        if not pairs or len(pairs) % 2:
            raise ArchValidationError(
                f"genotype {cell} must list two (op, input) pairs per node, got {len(pairs)} pairs"
            )
        nodes = len(pairs) // 2
        if concat != list(range(2, nodes + 2)):
            raise ArchValidationError(
                f"genotype {cell}_concat={concat} is not supported; this space concatenates "
                f"every intermediate node: {list(range(2, nodes + 2))}"
            )
        for j, pair in enumerate(pairs):
            k, e = 2 + j // 2, j % 2
            op, src = pair
            if not isinstance(src, int) or not 0 <= src < k:
                raise ArchValidationError(
                    f"genotype {cell} pair {j} {pair!r}: node {k} input must be in 0..{k - 1}"
                )
            arch[f"{cell}.node{k}.in{e}"] = src
            arch[f"{cell}.node{k}.op{e}"] = op
    return arch


def to_genotype(arch: Mapping[str, Any]) -> Genotype:
    """Inverse of :func:`from_genotype` (validate ``arch`` with the space first).

    Raises:
        ArchValidationError: if a decision of the form ``{cell}.node{k}.{in|op}{e}`` is missing.
    """
    cells: dict[str, list[tuple[str, int]]] = {}
    for cell in CELL_TYPES:
        k = 2
        pairs = []
        while f"{cell}.node{k}.in0" in arch:
            for e in (0, 1):
                for key in (f"{cell}.node{k}.in{e}", f"{cell}.node{k}.op{e}"):
                    if key not in arch:
                        raise ArchValidationError(
                            f"architecture lacks decision {key!r} of a DARTS cell")
                pairs.append((arch[f"{cell}.node{k}.op{e}"], arch[f"{cell}.node{k}.in{e}"]))
            k += 1
        if not pairs:
            raise ArchValidationError(
                f"architecture has no {cell}.node2.in0 decision; is it a darts architecture?")
        cells[cell] = pairs
    return Genotype(
        normal=cells["normal"], normal_concat=list(range(2, len(cells["normal"]) // 2 + 2)),
        reduce=cells["reduce"], reduce_concat=list(range(2, len(cells["reduce"]) // 2 + 2)),
    )


def darts_v2_arch() -> dict[str, Any]:
    """The published DARTS (second order) cell (3.35 M params in :data:`DARTS_CIFAR_SKELETON`)."""
    return from_genotype(DARTS_V2)
