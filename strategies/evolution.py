"""Regularized (aging) evolution (Real et al., 2019), Pareto-aware for several objectives."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cellblock.objectives import Objective
from cellblock.records import Trial
from cellblock.search_spaces.api import SearchSpace
from cellblock.strategies.base import (
    Strategy,
    check_positive_int,
    check_probability,
    register_strategy,
)
from cellblock.strategies.selection import best_index, trial_from_state, trial_to_state


@register_strategy("evolution")
class RegularizedEvolution(Strategy):
    """Aging evolution: tournament selection, mutation, the oldest member dies.

    The first ``population_size`` candidates are random. Then each ask samples
    ``sample_size`` members, takes the best (lowest non-dominated rank among them,
    then largest crowding distance: with one objective, simply the best) and mutates
    ``mutations`` of its decisions. Each finished trial joins the population and the
    oldest member leaves.

    Args:
        population_size: Members kept (the age window).
        sample_size: Tournament size.
        mutations: Decisions changed per child.
        crossover_prob: Probability of a uniform crossover with a second tournament winner
            before mutating.
    """

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        seed: int = 0,
        population_size: int = 20,
        sample_size: int = 5,
        mutations: int = 1,
        crossover_prob: float = 0.0,
    ) -> None:
        super().__init__(space, objectives, seed)
        self.population_size = check_positive_int("population_size", population_size, 2)
        self.sample_size = check_positive_int("sample_size", sample_size, 1)
        self.mutations = check_positive_int("mutations", mutations)
        self.crossover_prob = check_probability("crossover_prob", crossover_prob)
        self.population: deque[Trial] = deque(maxlen=self.population_size)
        self.n_asked = 0

    def _tournament(self) -> Trial:
        members = list(self.population)
        k = min(self.sample_size, len(members))
        picks = self.rng.choice(len(members), size=k, replace=False)
        sample = [members[int(i)] for i in picks]
        return sample[best_index(self.fitness(sample), self.rng)]

    def _child(self) -> dict[str, Any]:
        parent = self._tournament().arch
        if self.crossover_prob and self.rng.random() < self.crossover_prob:
            parent = self.space.crossover(parent, self._tournament().arch, self.rng)
        return self.space.mutate(parent, self.rng, n=self.mutations)

    def ask(self) -> dict[str, Any]:
        self.n_asked += 1
        if self.n_asked <= self.population_size or not self.population:
            return self.fresh(lambda: self.space.sample(self.rng))
        return self.fresh(self._child)

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        self.population.append(trial)

    def replay(self, trials: Iterable[Trial]) -> None:
        super().replay(trials)
        self.n_asked = max(self.n_asked, self.n_told)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["population"] = [trial_to_state(t) for t in self.population]
        state["n_asked"] = self.n_asked
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = deque(
            (trial_from_state(d) for d in state["population"]), maxlen=self.population_size
        )
        self.n_asked = int(state["n_asked"])
