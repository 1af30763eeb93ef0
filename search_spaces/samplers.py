"""Samplers: what a space function receives and asks for decisions.

A space function calls ``s.choice(name, choices)`` and ``s.integer(name, low, high)``;
which value comes back depends on the sampler: random, replay of a fixed dict,
mutation or crossover of parents, an Optuna trial, or a probe that counts the space.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.core.errors import ArchValidationError, SpaceError
from cellblock.search_spaces.domains import Categorical, Domain, IntRange, Value

# validated domains by their typed choices
_DOMAINS: dict[tuple[tuple[Value, ...], tuple[type, ...]], Categorical] = {}


def categorical(choices: tuple[Value, ...]) -> Categorical:
    """``Categorical(choices)``, validated once per distinct choice tuple (a space runs for every
    sample, mutation and neighbour; validation was half the cost of sampling NB201).

    Keys carry each value's type, so ``1``, ``1.0`` and ``True`` stay apart; float choices are
    not cached (``0.0 == -0.0``).
    """
    types = tuple(map(type, choices))
    cacheable = float not in types
    try:
        key = (choices, types)
        hit = _DOMAINS.get(key) if cacheable else None
    except TypeError:  # unhashable: not a JSON scalar; the constructor says so
        return Categorical(choices)
    if hit is None:
        hit = Categorical(choices)
        if cacheable and len(_DOMAINS) < 4096:
            _DOMAINS[key] = hit
    return hit


class Sampler(ABC):
    """Base class of samplers: records every decision the space function makes.

    Attributes:
        build: False while only decisions are collected (sampling, mutation, counting).
            A space function may return early then; if it builds anyway, it runs on
            the ``meta`` device, which allocates no memory.
        decisions: name -> value of the decisions made so far, in order.
        domains: name -> domain of those decisions.
    """

    build: bool = False

    def __init__(self) -> None:
        self.decisions: dict[str, Value] = {}
        self.domains: dict[str, Domain] = {}

    def choice(self, name: str, choices: Sequence[Value]) -> Value:
        """Choose one of ``choices`` (JSON scalars) for the decision ``name``."""
        return self.decide(name, categorical(tuple(choices)))

    def integer(self, name: str, low: int, high: int, step: int = 1) -> int:
        """Choose an integer in ``[low, high]`` (inclusive) for the decision ``name``."""
        return self.decide(name, IntRange(low, high, step))  # type: ignore[return-value]

    def decide(self, name: str, domain: Domain) -> Value:
        """Make (or repeat) the decision ``name`` over ``domain``.

        Raises:
            SpaceError: if the name is empty or reused with another domain.
        """
        if not isinstance(name, str) or not name:
            raise SpaceError(f"every decision needs a non-empty string name, got {name!r}")
        if name in self.domains:
            if self.domains[name] != domain:
                raise SpaceError(
                    f"decision {name!r} is made twice with different domains: "
                    f"{self.domains[name].describe()} vs {domain.describe()}; "
                    "give each decision its own name"
                )
            return self.decisions[name]
        value = self._pick(name, domain)
        self.domains[name] = domain
        self.decisions[name] = value
        return value

    @abstractmethod
    def _pick(self, name: str, domain: Domain) -> Value:
        """Return the value for a new decision."""

    def finish(self) -> None:  # noqa: B027  (optional hook, a no-op by default)
        """Called after the space function returned (checks for replay samplers)."""


class RandomSampler(Sampler):
    """Uniformly random values."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.rng = rng

    def _pick(self, name: str, domain: Domain) -> Value:
        return domain.sample(self.rng)


class FixedSampler(Sampler):
    """Replays a given architecture dict exactly (Optuna's ``FixedTrial``).

    Raises:
        ArchValidationError: for a missing decision, a value outside its domain,
            or (in :meth:`finish`) a key the space never used.
    """

    def __init__(self, arch: Mapping[str, Any], build: bool = True, space_name: str = "") -> None:
        super().__init__()
        if not isinstance(arch, Mapping):
            raise ArchValidationError(
                "an architecture must be a dict of decision name -> value, got "
                f"{type(arch).__name__}"
            )
        self.arch = dict(arch)
        self.build = build
        self.space_name = space_name

    def _pick(self, name: str, domain: Domain) -> Value:
        where = f" of space {self.space_name!r}" if self.space_name else ""
        if name not in self.arch:
            raise ArchValidationError(
                f"decision {name!r}{where} is missing from the architecture; "
                f"allowed values: {domain.describe()}"
            )
        value = self.arch[name]
        if not domain.contains(value):
            raise ArchValidationError(
                f"decision {name!r}{where} = {value!r} is not allowed; "
                f"allowed values: {domain.describe()}"
            )
        return value

    def finish(self) -> None:
        unused = [k for k in self.arch if k not in self.decisions]
        if unused:
            where = f"space {self.space_name!r}" if self.space_name else "the space"
            used = ", ".join(self.decisions) or "(none)"
            raise ArchValidationError(
                f"unknown decision {unused[0]!r}: {where} does not use it for this architecture "
                f"(unused keys: {', '.join(map(repr, unused))}); decisions used: {used}"
            )


class GuidedSampler(Sampler):
    """Takes values from preferred sources when valid, else samples.

    Used for mutation (parent values except the mutated names) and crossover
    (each value from one parent or the other). Newly active decisions are sampled.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        sources: Sequence[Mapping[str, Any]],
        overrides: Mapping[str, Value] | None = None,
        mix: bool = False,
    ) -> None:
        super().__init__()
        self.rng = rng
        self.sources = list(sources)
        self.overrides = dict(overrides or {})
        self.mix = mix

    def _pick(self, name: str, domain: Domain) -> Value:
        if name in self.overrides and domain.contains(self.overrides[name]):
            return self.overrides[name]
        order = list(self.sources)
        if self.mix and len(order) > 1:
            order = [order[i] for i in self.rng.permutation(len(order))]
        for src in order:
            if name in src and domain.contains(src[name]):
                return src[name]
        return domain.sample(self.rng)


class Branch(Exception):
    """Raised by :class:`ProbeSampler` at the first decision not in its prefix."""

    def __init__(self, name: str, domain: Domain) -> None:
        super().__init__(name)
        self.name = name
        self.domain = domain


class ProbeSampler(Sampler):
    """Follows a prefix of decisions and stops at the first new one (for counting)."""

    def __init__(self, prefix: Mapping[str, Value]) -> None:
        super().__init__()
        self.prefix = prefix

    def _pick(self, name: str, domain: Domain) -> Value:
        if name in self.prefix:
            return self.prefix[name]
        raise Branch(name, domain)


class PathSampler(Sampler):
    """Random values, recording the product of branching factors (Knuth's estimator)."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.rng = rng
        self.weight = 1.0

    def _pick(self, name: str, domain: Domain) -> Value:
        self.weight *= domain.size
        return domain.sample(self.rng)
