"""Which children a supernet training step runs: ``uniform``, ``fair`` or ``sandwich``.

Each strategy is ``draw(space, rng) -> list of architectures``; the step averages the
losses of the children it gets (one optimizer step per training step).

- ``uniform``: one uniformly sampled child (single-path one-shot, Guo et al. 2020).
- ``fair``: strict fairness (FairNAS, Chu et al. 2021): ``m`` children, ``m`` the largest
  domain met, where each decision cycles through a random permutation of its values,
  so every value of every decision is trained equally often.
- ``sandwich`` (BigNAS, Yu et al. 2020): the largest child (every numeric decision at
  its maximum), the smallest (at its minimum) and two uniform ones; non-numeric
  decisions are random.
- ``sandwich-kd``: the same children with BigNAS/OFA in-place distillation: the largest
  child learns from the labels, the others from its (detached) soft predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cellblock.core.registry import Registry
from cellblock.search_spaces.api import SearchSpace
from cellblock.search_spaces.domains import Domain, Value
from cellblock.search_spaces.samplers import Sampler

DrawFn = Callable[[SearchSpace, np.random.Generator], list[dict[str, Value]]]
ARCH_SAMPLERS: Registry[DrawFn] = Registry("supernet sampling")
#: Samplings whose first child is the teacher of the others (in-place distillation).
DISTILLING = frozenset({"sandwich-kd"})


def _collect(space: SearchSpace, sampler: Sampler) -> dict[str, Value]:
    sampler.build = False
    space.run(sampler)
    return dict(sampler.decisions)


@ARCH_SAMPLERS.register("uniform")
def uniform(space: SearchSpace, rng: np.random.Generator) -> list[dict[str, Value]]:
    """One uniformly random child."""
    return [space.sample(rng)]


class _FairSampler(Sampler):
    def __init__(self, rng: np.random.Generator, perms: dict[str, tuple], k: int) -> None:
        super().__init__()
        self.rng, self.perms, self.k = rng, perms, k

    def _pick(self, name: str, domain: Domain) -> Value:
        values = domain.values()
        if name not in self.perms or len(self.perms[name]) != len(values):
            self.perms[name] = tuple(values[int(i)] for i in self.rng.permutation(len(values)))
        perm = self.perms[name]
        return perm[self.k % len(perm)]


@ARCH_SAMPLERS.register("fair")
def fair(space: SearchSpace, rng: np.random.Generator) -> list[dict[str, Value]]:
    """``m`` children covering every value of every decision once (strict fairness)."""
    perms: dict[str, tuple] = {}
    children: list[dict[str, Value]] = []
    k = 0
    while k == 0 or k < max(len(p) for p in perms.values()):
        children.append(_collect(space, _FairSampler(rng, perms, k)))
        k += 1
    return children


def _is_numeric(values: tuple) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


class _ExtremeSampler(Sampler):
    def __init__(self, rng: np.random.Generator, largest: bool) -> None:
        super().__init__()
        self.rng, self.largest = rng, largest

    def _pick(self, name: str, domain: Domain) -> Value:
        values = domain.values()
        if _is_numeric(values):
            return max(values) if self.largest else min(values)
        return domain.sample(self.rng)


@ARCH_SAMPLERS.register("sandwich")
def sandwich(space: SearchSpace, rng: np.random.Generator) -> list[dict[str, Any]]:
    """The largest, the smallest and two uniform children."""
    return [
        _collect(space, _ExtremeSampler(rng, True)),
        _collect(space, _ExtremeSampler(rng, False)),
        space.sample(rng),
        space.sample(rng),
    ]


ARCH_SAMPLERS.register("sandwich-kd", sandwich)
