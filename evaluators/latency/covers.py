"""Covers: which networks (or parts) to trace so a latency table holds every unit a space can
produce.

A cover is ``cover(space, discover) -> description``; it calls ``discover(probe)`` for each
:class:`Probe` (a builder and an input shape) and gets back the unit calls of that probe.
:func:`generic_cover` works for any space (every architecture when the space is small,
else one-decision sweeps and random samples until new ones stop adding units); spaces
whose units are known to depend on few decisions register an exact, faster cover with
:func:`register_cover` (``blocks`` does: each stage configuration on each input width).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cellblock.core.registry import Registry
from cellblock.evaluators.latency.units import UnitCall
from cellblock.search_spaces.api import SearchSpace


@dataclass(frozen=True)
class Probe:
    """Something to build and trace: ``build()`` returns a module taking ``input_shape``."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple


Discover = Callable[[Probe], list[UnitCall]]
Cover = Callable[[SearchSpace, Discover], str]
COVERS: Registry[Cover] = Registry("latency cover")


def register_cover(space_name: str) -> Callable[[Cover], Cover]:
    """Decorator registering an exact cover for the space registered as ``space_name``."""
    return COVERS.register(space_name)  # type: ignore[return-value]


@contextlib.contextmanager
def no_init() -> Iterator[None]:
    """Skip weight initialisation while building (for tracing shapes only: fast)."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda t, *a, **k: t)
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


def arch_probe(space: SearchSpace, arch: dict[str, Any]) -> Probe:
    """The whole network of ``arch``."""
    from cellblock.search_spaces.api import arch_id

    shape = tuple(space.arguments()["input_shape"])
    return Probe(f"arch {arch_id(arch)}", lambda: space.build(arch), shape)


def generic_cover(space: SearchSpace, discover: Discover, exact_limit: int = 2000,
                  patience: int = 200, max_samples: int = 5000, seed: int = 0) -> str:
    """Every architecture when there are at most ``exact_limit``; else one-decision sweeps
    from a random architecture, then random ones until ``patience`` in a row add no unit."""
    size = space.size(exact_limit=exact_limit, probes=200, seed=seed)
    if size.exact:
        for arch in space.enumerate():
            discover(arch_probe(space, arch))
        return f"exact: all {int(size.value)} architectures"
    rng = np.random.default_rng(seed)
    seen: set[str] = set()

    def new(arch: dict[str, Any]) -> bool:
        keys = {c.key for c in discover(arch_probe(space, arch))}
        fresh = bool(keys - seen)
        seen.update(keys)
        return fresh

    base = space.sample(rng)
    new(base)
    for name, value in space.moves(base):
        new(space.neighbour(base, name, value, rng))
    quiet = n = 0
    while quiet < patience and n < max_samples:
        n += 1
        quiet = 0 if new(space.sample(rng)) else quiet + 1
    return (f"sampled: one-decision sweep + {n} random architectures, the last {quiet} adding "
            "no unit (rare units may be missing; a search names any it meets)")


def _stage_configs(sk: dict[str, Any], stage: int) -> list[tuple[str, dict[str, Any], int, str]]:
    from cellblock.search_spaces.blocks_base import BLOCKS

    out = []
    for name in sk["types"]:
        opts = list(BLOCKS.get(name).options)
        for values in itertools.product(*(sk["options"][o] for o in opts)):
            for w in sk["widths"][stage]:
                for att in sk["attentions"]:
                    out.append((name, dict(zip(opts, values, strict=True)), w, att))
    return out


@register_cover("blocks")
def blocks_cover(space: SearchSpace, discover: Discover) -> str:
    """Every stage configuration (block, options, width, attention; every depth for blocks
    that build a stage as one module, else the deepest) on every input width the previous
    stage can give, plus one whole network per width the head can see."""
    from cellblock.search_spaces.blocks_base import BLOCKS, Block, block_out_channels, build_stage
    from cellblock.search_spaces.blocks_space import skeleton
    from cellblock.search_spaces.tags import candidate

    a = space.arguments()
    sk = skeleton(a)
    base = space.sample(np.random.default_rng(0))
    calls = discover(arch_probe(space, base))
    hw = {}
    for c in calls:
        parts = c.path.split(".")
        if parts[0] == "stages" and parts[2] == "0":
            hw[int(parts[1])] = c.args[0][1][2:]
    low, high = sk["depth"]
    ins = {a["stem_width"]}
    n = 1
    for i in range(a["stages"]):
        configs = _stage_configs(sk, i)
        for name, opts, w, att in configs:
            whole = BLOCKS.get(name).make_stage.__func__ is not Block.make_stage.__func__
            for cin, d in itertools.product(sorted(ins), range(low, high + 1) if whole else [high]):
                def build(name=name, cin=cin, w=w, d=d, att=att, opts=opts, i=i) -> nn.Module:
                    return candidate(
                        build_stage(name, cin, w, sk["strides"][i], d, attention=att, **opts), name)

                discover(Probe(f"stage{i + 1} {name} {opts} width {w} {att} from {cin}", build,
                               (cin, *hw[i])))
                n += 1
        ins = {block_out_channels(name, w, **opts) for name, opts, w, _ in configs}
    last = a["stages"]
    for name, opts, w, att in _stage_configs(sk, last - 1):
        out = block_out_channels(name, w, **opts)
        if out in ins:
            ins.discard(out)
            arch = dict(base)
            arch = {k: v for k, v in arch.items() if not k.startswith(f"stage{last}.")}
            arch.update({f"stage{last}.block": name, f"stage{last}.depth": low,
                         f"stage{last}.width": w, f"stage{last}.attention": att})
            arch.update({f"stage{last}.{k}": v for k, v in opts.items()})
            discover(arch_probe(space, space.validate(arch)))
            n += 1
    return f"exact: {n} probes (every stage configuration on every input width, every head width)"


@register_cover("nb201")
def nb201_cover(space: SearchSpace, discover: Discover) -> str:
    """A cell is cut into its edge operations, each of which depends on its own decision only
    (every edge of a stage maps C channels to C at one resolution): one network per
    operation, with that operation on every edge, holds every unit."""
    ops = space.arguments()["ops"]
    base = space.sample(np.random.default_rng(0))
    for op in ops:
        discover(arch_probe(space, {name: op for name in base}))
    return f"exact: {len(ops)} networks (each operation on every edge)"


def run_cover(space: SearchSpace, discover: Discover) -> str:
    """The space's registered cover, else :func:`generic_cover`."""
    cover = COVERS.get(space.ref) if space.ref in COVERS else generic_cover
    with no_init(), torch.no_grad():
        return cover(space, discover)
