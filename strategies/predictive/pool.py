"""The candidates of the predictive strategy, made by the space's own operators.

:class:`CandidatePool` keeps the parents' one-decision neighbourhoods and a rolling set
of explorers (mutations, mutated crossovers, random samples); :meth:`CandidatePool.refresh`
gives the candidates of one ask, never one asked before.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import numpy as np

from cellblock.records import Trial
from cellblock.search_spaces.api import SearchSpace, arch_id

Candidate = tuple[str, dict[str, Any]]  # (arch_id, arch)
#: Each ask adds one explorer per this many pool candidates (the ``candidates`` option).
EXPLORE_EVERY = 32


class CandidatePool:
    """Neighbourhoods of the parents and explorers, kept from one ask to the next.

    Args:
        space: The search space (its ``moves``, ``neighbour``, ``mutate``, ``crossover``,
            ``sample``).
        size: The strategy's ``candidates`` option (pool size per ask).

    Attributes:
        explorers: arch_id -> explorer candidate, oldest first.
        hoods: Parent arch_id -> its one-decision neighbours.
    """

    def __init__(self, space: SearchSpace, size: int) -> None:
        self.space = space
        self.size = size
        self.explorers: dict[str, dict[str, Any]] = {}
        self.hoods: dict[str, list[dict[str, Any]]] = {}
        # parent arch_id -> ids of ``hoods[parent]`` (a cache)
        self.hood_ids: dict[str, list[str]] = {}

    def refresh(self, parents: list[Trial], seen: Set[str], rng: np.random.Generator,
                pareto_local: bool) -> list[Candidate]:
        """The candidates of this ask (never asked before): parents' neighbourhoods and explorers.

        A parent's one-decision neighbours are made once (at most ``size // 4`` of them,
        a random subset) and kept while it is a parent. With ``pareto_local`` (several
        objectives) the candidates are the untried neighbours of the front member with
        the fewest tried (Pareto local search, ordered by EHVI); only when every parent's
        neighbourhood is tried do the explorers and the other neighbourhoods compete.
        Each ask adds ``size // EXPLORE_EVERY`` explorers (at least 4): a quarter mutations
        (one or two decisions) of parents, an eighth mutated crossovers of two parents, the
        rest random samples; the oldest leave when more than ``size // 2`` are kept.
        """
        pool = self.explorers

        def new(arch: dict[str, Any]) -> Candidate | None:
            aid = arch_id(arch)
            return None if aid in seen else (aid, arch)

        self._update_hoods(parents, rng)
        for item in map(new, self._explore(parents, rng)):
            if item is not None:
                pool[item[0]] = item[1]
        for aid in [aid for aid in pool if aid in seen]:
            del pool[aid]
        for aid in list(pool)[: max(len(pool) - self.size // 2, 0)]:
            del pool[aid]
        if pareto_local:  # Pareto local search: the least explored front member's neighbours
            open_ = [(sum(aid in seen for aid in self._ids(p.arch_id)), k, p)
                     for k, p in enumerate(parents)
                     if any(aid not in seen for aid in self._ids(p.arch_id))]
            if open_:
                p = min(open_, key=lambda x: (x[0], x[1]))[2]
                return [(aid, a) for aid, a in zip(self._ids(p.arch_id), self.hoods[p.arch_id])
                        if aid not in seen]
        out = dict(pool)
        for parent, hood in self.hoods.items():
            for aid, a in zip(self._ids(parent), hood):
                if aid not in seen:
                    out.setdefault(aid, a)
        return list(out.items())

    def _ids(self, parent: str) -> list[str]:
        """The arch ids of a parent's neighbourhood (computed once, not per ask)."""
        ids = self.hood_ids.get(parent)
        if ids is None or len(ids) != len(self.hoods[parent]):
            ids = self.hood_ids[parent] = [arch_id(a) for a in self.hoods[parent]]
        return ids

    def _update_hoods(self, parents: list[Trial], rng: np.random.Generator) -> None:
        """Drop the neighbourhoods of former parents; make those of new ones."""
        current = {p.arch_id for p in parents}
        for aid in [aid for aid in self.hoods if aid not in current]:
            del self.hoods[aid]
            self.hood_ids.pop(aid, None)
        for p in parents:
            if p.arch_id not in self.hoods:
                moves = self.space.moves(p.arch)
                picks = rng.permutation(len(moves))[: max(self.size // 4, 1)]
                self.hoods[p.arch_id] = [self.space.neighbour(p.arch, *moves[int(i)], rng)
                                         for i in picks]

    def _explore(self, parents: list[Trial], rng: np.random.Generator) -> list[dict[str, Any]]:
        """This ask's explorers: mutations and mutated crossovers of parents, random samples."""
        space = self.space
        fresh = max(self.size // EXPLORE_EVERY, 4)
        made = []
        for _ in range(fresh // 4):
            p = parents[int(rng.integers(len(parents)))]
            made.append(space.mutate(p.arch, rng, n=1 + int(rng.integers(2))))
        n_cross = fresh // 8 if len(parents) > 1 else 0
        for _ in range(n_cross):
            i, j = rng.choice(len(parents), size=2, replace=False)
            made.append(
                space.mutate(space.crossover(parents[int(i)].arch, parents[int(j)].arch, rng), rng))
        made += [space.sample(rng) for _ in range(fresh - fresh // 4 - n_cross)]
        return made
