"""Few-shot splits: which sub-supernet a child goes to (Zhao et al. 2021, few-shot NAS).

A :class:`Split` names decisions of the space and cuts each one's values into chunks;
a child's group is the tuple of chunks its values fall in (mixed radix, group 0 first).
Every group has its own bank (sub-supernet) of the same shape, so children whose
operators differ on a split decision no longer share weights.

``auto`` finds the decisions that change *which* operator is used, from the space
function alone: changing the decision (others fixed) changes the candidate tags
(:mod:`cellblock.search_spaces.tags`) or the module types of the built child. Depth, width
and kernel size change neither, so they stay elastic inside a sub-supernet.

When every value of every split decision cannot have its own group within
``max_groups``, the values of each decision are cut into contiguous chunks: chunk counts
are raised one decision at a time, in order (operator-tag decisions first), while the
product stays within ``max_groups``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.search_spaces.api import SearchSpace
from cellblock.search_spaces.domains import Domain, Value
from cellblock.search_spaces.samplers import Sampler
from cellblock.search_spaces.tags import tag_of
from cellblock.supernet.bank import meta_build

#: Sub-supernets at most, by default (each holds a full copy of the bank).
MAX_GROUPS = 8
#: Random reference architectures probed per decision by :func:`op_decisions`.
PROBES = 2


class _Pinned(Sampler):
    """``base``'s values (``name`` forced to ``value``), random for decisions ``base`` lacks."""

    def __init__(self, base: Mapping[str, Any], name: str, value: Value,
                 rng: np.random.Generator) -> None:
        super().__init__()
        self.base, self.name, self.value, self.rng = base, name, value, rng
        self.build = True

    def _pick(self, name: str, domain: Domain) -> Value:
        if name == self.name:
            return self.value
        if name in self.base and domain.contains(self.base[name]):
            return self.base[name]
        return domain.sample(self.rng)


def _structure(space: SearchSpace, sampler: Sampler) -> frozenset[tuple[str, str]]:
    """Candidate tags (by module name) and module types of the child ``sampler`` builds."""
    with meta_build():
        model = space.run(sampler)
    out = {("type", type(m).__name__) for m in model.modules()}
    out |= {(name, tag) for name, m in model.named_modules() if (tag := tag_of(m))}
    return frozenset(out)


def decision_domains(space: SearchSpace, samples: int = 64, seed: int = 0) -> dict[str, Domain]:
    """Name -> domain of every decision met in ``samples`` random architectures (in order)."""
    rng = np.random.default_rng(seed)
    out: dict[str, Domain] = {}
    for _ in range(samples):
        for d in space.trace(space.sample(rng)):
            out.setdefault(d.name, d.domain)
    return out


def op_decisions(space: SearchSpace, probes: int = PROBES, seed: int = 0) -> list[str]:
    """Decisions whose value changes the child's candidate tags or module types.

    Operator-tag decisions come first, then those that only change module types, each
    group in decision order.
    """
    domains = decision_domains(space, seed=seed)
    rng = np.random.default_rng(seed)
    bases = [space.sample(rng) for _ in range(probes)]
    tagged, typed = [], []
    for name, domain in domains.items():
        if domain.size < 2:
            continue
        kinds: set[str] = set()
        for base in bases:
            first = _structure(space, _Pinned(base, name, domain.values()[0], rng))
            for v in domain.values()[1:]:
                diff = first ^ _structure(space, _Pinned(base, name, v, rng))
                kinds |= {"type" if k[0] == "type" else "tag" for k in diff}
                if "tag" in kinds:
                    break
            if "tag" in kinds:
                break
        if "tag" in kinds:
            tagged.append(name)
        elif "type" in kinds:
            typed.append(name)
    return tagged + typed


def _chunks(values: Sequence[Value], n: int) -> list[list[Value]]:
    """``values`` cut into ``n`` contiguous chunks of near-equal size."""
    bounds = [round(i * len(values) / n) for i in range(n + 1)]
    return [list(values[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


class Split:
    """Decisions and the chunks of their values that define the sub-supernets.

    Args:
        chunks: Decision name -> its values cut into chunks (in split order).
    """

    def __init__(self, chunks: Mapping[str, Sequence[Sequence[Value]]]) -> None:
        self.chunks = {k: [list(c) for c in v] for k, v in chunks.items()}
        self._index = {k: {_key(x): i for i, c in enumerate(v) for x in c}
                       for k, v in self.chunks.items()}

    @classmethod
    def make(cls, space: SearchSpace, decisions: Sequence[str] | str,
             max_groups: int = MAX_GROUPS) -> Split:
        """The split of ``space`` on ``decisions`` (or ``"auto"``) with at most ``max_groups``.

        Raises:
            ConfigError: for an unknown decision, ``max_groups < 2`` or nothing to split.
        """
        if max_groups < 2:
            raise ConfigError(f"--split-groups must be at least 2, got {max_groups}")
        domains = decision_domains(space)
        if isinstance(decisions, str):
            if decisions.strip() == "auto":
                names = op_decisions(space)
                if not names:
                    raise ConfigError(f"--split auto: no decision of space {space.name!r} changes "
                                      "which operator is used; train without --split")
            else:
                names = [d.strip() for d in decisions.split(",") if d.strip()]
        else:
            names = list(decisions)
        unknown = [n for n in names if n not in domains]
        if unknown or not names:
            raise ConfigError(f"--split: unknown decision {unknown[0] if unknown else '(none)'!r}; "
                              f"decisions of {space.name!r}: {', '.join(domains)}")
        sizes = {n: domains[n].size for n in names}
        counts = {n: 1 for n in names}
        grown = True
        while grown:  # one more chunk per decision, in order, while the product fits
            grown = False
            for n in names:
                product = math.prod(counts.values()) // counts[n] * (counts[n] + 1)
                if counts[n] < sizes[n] and product <= max_groups:
                    counts[n] += 1
                    grown = True
        chunks = {n: _chunks(domains[n].values(), counts[n]) for n in names if counts[n] > 1}
        if not chunks:
            raise ConfigError(f"--split {','.join(names)}: nothing to split (one value each)")
        return cls(chunks)

    @property
    def n_groups(self) -> int:
        """Number of sub-supernets."""
        return math.prod(len(c) for c in self.chunks.values())

    def group_of(self, arch: Mapping[str, Any]) -> int:
        """The sub-supernet of ``arch`` (a decision it lacks counts as its first chunk)."""
        g = 0
        for name, chunks in self.chunks.items():
            i = self._index[name].get(_key(arch[name]), 0) if name in arch else 0
            g = g * len(chunks) + i
        return g

    def label(self, group: int) -> str:
        """Readable description of ``group``, e.g. ``stage1.block=basic|bottleneck``."""
        parts = []
        for name, chunks in reversed(self.chunks.items()):
            group, i = divmod(group, len(chunks))
            parts.append(f"{name}={'|'.join(str(v) for v in chunks[i])}")
        return ", ".join(reversed(parts))

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (for checkpoints)."""
        return {"chunks": [[k, v] for k, v in self.chunks.items()]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Split:
        """Inverse of :meth:`to_json`."""
        return cls({k: v for k, v in data["chunks"]})


def _key(value: Any) -> Any:
    return (type(value).__name__, value) if isinstance(value, bool) else value
