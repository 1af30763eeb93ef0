"""Supernet covers: the probe modules whose tensor shapes size a supernet's bank.

A cover of a space yields ``(name prefix, module)`` pairs such that every parameter of
every architecture's network has a probe tensor with the same key that is at least as
large in every dimension; a probe is read before the next one is drawn (a cover may
re-tag and yield the same module again). Covers are registered per space name in :data:`COVERS`;
a space without one gets :func:`generic_cover` (its enumeration when small, else a
seeded sample, with a clear error later if a child needs more than the cover saw).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch import nn

from cellblock.core.registry import Registry
from cellblock.search_spaces.api import SearchSpace

Probe = tuple[str, nn.Module]
CoverFn = Callable[[SearchSpace], Iterator[Probe]]
COVERS: Registry[CoverFn] = Registry("supernet cover")


def register_cover(name: str) -> Callable[[CoverFn], CoverFn]:
    """Decorator registering the cover of the space registered as ``name``."""
    return COVERS.register(name)  # type: ignore[return-value]


def generic_cover(space: SearchSpace, limit: int = 256, seed: int = 0) -> Iterator[Probe]:
    """Every architecture when there are at most ``limit``, else ``limit`` random ones."""
    archs = list(space.enumerate(limit=limit + 1))
    if len(archs) > limit:
        rng = np.random.default_rng(seed)
        archs = [space.sample(rng) for _ in range(limit)]
    for arch in archs:
        yield "", space.build(arch)


def cover(space: SearchSpace) -> Iterator[Probe]:
    """The registered cover of ``space``, else :func:`generic_cover`."""
    if space.ref in COVERS:
        return COVERS.get(space.ref)(space)
    return generic_cover(space)


def _uniform_arch(space: SearchSpace, value_for: Callable[[str, Any], Any]) -> dict[str, Any]:
    """The architecture whose every decision ``name`` takes ``value_for(name, domain)``."""
    from cellblock.search_spaces.samplers import Sampler

    class _Pick(Sampler):
        def _pick(self, name: str, domain: Any) -> Any:
            return value_for(name, domain)

    sampler = _Pick()
    sampler.build = False
    space.run(sampler)
    return dict(sampler.decisions)


@register_cover("nb201")
def nb201_cover(space: SearchSpace) -> Iterator[Probe]:
    """One network per operation, with that operation on every edge."""
    for op in space.arguments()["ops"]:
        yield "", space.build(_uniform_arch(space, lambda name, domain, op=op: op))


@register_cover("darts")
def darts_cover(space: SearchSpace) -> Iterator[Probe]:
    """Per operation, every edge using it, fed from the first and from the last inputs."""
    for op in space.arguments()["ops"]:
        for last in (False, True):
            def pick(name: str, domain: Any, op: str = op, last: bool = last) -> Any:
                if ".op" in name:
                    return op
                values = domain.values()
                return values[-1] if last else values[0]

            yield "", space.build(_uniform_arch(space, pick))


@register_cover("blocks")
def blocks_cover(space: SearchSpace) -> Iterator[Probe]:
    """Stem and head at their largest, then per stage every block type with every option
    and attention combination at the largest width and input channels, plus the other
    width/input corners once per (block type, attention) so projection shortcuts appear.

    Names follow :class:`~cellblock.search_spaces.blocks_space.BlockNet`
    (``stem``, ``stages.{i}``, ``fc``); the tag of a stage is its block type (projection
    shortcuts are shared across types, see :func:`~cellblock.search_spaces.tags.shared`).
    """
    from cellblock.search_spaces import blocks_space as bs
    from cellblock.search_spaces.blocks_base import BLOCKS, block_out_channels, build_stage
    from cellblock.search_spaces.tags import candidate

    a = space.arguments()
    sk = bs.skeleton(a)

    def combos(name: str) -> list[dict[str, Any]]:
        opts = list(BLOCKS.get(name).options)
        return [dict(zip(opts, vals, strict=True))
                for vals in itertools.product(*(sk["options"][o] for o in opts))]

    def out_range(i: int) -> tuple[int, int]:
        outs = [block_out_channels(t, w, **c) for t in sk["types"] for c in combos(t)
                for w in sk["widths"][i]]
        return min(outs), max(outs)

    yield "stem", bs.STEMS.get(a["stem"])(sk["shape"][0], a["stem_width"])
    yield "fc", nn.Linear(out_range(a["stages"] - 1)[1], a["num_classes"])
    depth = sk["depth"][1]
    cins = (a["stem_width"], a["stem_width"])
    for i, stride in enumerate(sk["strides"]):
        prefix = f"stages.{i}"
        w_lo, w_hi = min(sk["widths"][i]), max(sk["widths"][i])
        for name in sk["types"]:
            for att in sk["attentions"]:
                for k, opts in enumerate(combos(name)):
                    corners = [(w_hi, cins[1])]
                    if k == 0:
                        corners += [(w_lo, cins[0]), (w_lo, cins[1]), (w_hi, cins[0])]
                    for w, cin in corners:
                        yield prefix, candidate(build_stage(name, cin, w, stride, depth,
                                                            attention=att, shortcut=sk["shortcut"],
                                                            **opts), name)
        cins = out_range(i)

