"""NSGA-II (Deb et al., 2002): non-dominated sorting, crowding distance, elitist survival."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.core.objectives import Objective
from cellblock.records import Trial
from cellblock.search_spaces.api import SearchSpace
from cellblock.strategies.base import (
    Strategy,
    check_positive_int,
    check_probability,
    register_strategy,
)
from cellblock.strategies.selection import survivors, trial_from_state, trial_to_state


@register_strategy("nsga2")
class NSGA2(Strategy):
    """Generational multi-objective evolution, asynchronous-friendly.

    The first ``population_size`` candidates are random. Children come from binary
    tournaments on (rank, crowding) among the parents, uniform crossover with
    probability ``crossover_prob`` and mutation of each decision with probability
    1 / (number of decisions), at least one. When ``population_size`` children have
    finished, parents and children compete and the best ``population_size`` survive.

    Args:
        population_size: Parents kept per generation.
        crossover_prob: Probability of crossover per child.
    """

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        seed: int = 0,
        population_size: int = 20,
        crossover_prob: float = 0.9,
    ) -> None:
        super().__init__(space, objectives, seed)
        self.population_size = check_positive_int("population_size", population_size, 2)
        self.crossover_prob = check_probability("crossover_prob", crossover_prob)
        self.parents: list[Trial] = []
        self.ranks = np.zeros(0, dtype=int)
        self.crowding = np.zeros(0)
        self.offspring: list[Trial] = []
        self.n_asked = 0

    def _tournament(self) -> Trial:
        i, j = self.rng.integers(len(self.parents), size=2)
        better = i if (self.ranks[i], -self.crowding[i]) <= (self.ranks[j],
                                                             -self.crowding[j]) else j
        return self.parents[int(better)]

    def _child(self) -> dict[str, Any]:
        a = self._tournament().arch
        if self.rng.random() < self.crossover_prob:
            a = self.space.crossover(a, self._tournament().arch, self.rng)
        n_dec = max(1, len(a))
        n_mut = max(1, int(self.rng.binomial(n_dec, 1.0 / n_dec)))
        return self.space.mutate(a, self.rng, n=n_mut)

    def ask(self) -> dict[str, Any]:
        self.n_asked += 1
        if not self.parents:
            return self.fresh(lambda: self.space.sample(self.rng))
        return self.fresh(self._child)

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        self.offspring.append(trial)
        if len(self.offspring) >= self.population_size:
            pool = self.parents + self.offspring
            idx, self.ranks, self.crowding = survivors(self.fitness(pool), self.population_size)
            self.parents = [pool[int(i)] for i in idx]
            self.offspring = []

    def replay(self, trials: Iterable[Trial]) -> None:
        super().replay(trials)
        self.n_asked = max(self.n_asked, self.n_told)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            parents=[trial_to_state(t) for t in self.parents],
            ranks=self.ranks.tolist(),
            crowding=[float(c) if np.isfinite(c) else None for c in self.crowding],
            offspring=[trial_to_state(t) for t in self.offspring],
            n_asked=self.n_asked,
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.parents = [trial_from_state(d) for d in state["parents"]]
        self.ranks = np.asarray(state["ranks"], dtype=int)
        self.crowding = np.asarray(
            [np.inf if c is None else c for c in state["crowding"]], dtype=float
        )
        self.offspring = [trial_from_state(d) for d in state["offspring"]]
        self.n_asked = int(state["n_asked"])
