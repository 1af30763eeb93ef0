"""The default strategy: local search around the best trials first, then regularized (aging)
evolution (Real et al., 2019) once their neighbourhoods are exhausted; Pareto-aware."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cellblock.core.objectives import Objective
from cellblock.records import Trial
from cellblock.search_spaces.api import SearchSpace
from cellblock.strategies.base import (
    Strategy,
    check_positive_int,
    check_probability,
    register_strategy,
)
from cellblock.strategies.local_search import (
    Elite,
    Marginals,
    Neighbourhood,
    check_bool,
    load_elite,
    pick_centre,
)
from cellblock.strategies.selection import best_index, trial_from_state, trial_to_state


@register_strategy("evolution")
class RegularizedEvolution(Strategy):
    """Aging evolution with local search around the best trials.

    The first ``population_size`` candidates are random. Then, with ``local_search``
    (the default), each ask proposes an untried one-decision neighbour
    (:meth:`SearchSpace.moves`) of an *elite* trial: the best trial seen so far with one
    objective (first-improvement hill climbing, moves tried in order of the mean fitness
    of the evaluated trials sharing the new value), every non-dominated trial with
    several (Pareto local search, the least explored and least crowded members first).
    When every elite trial's neighbourhood is exhausted (a local optimum), the
    population's best non-exhausted member is searched around instead, and when those
    are exhausted too, aging evolution proper takes over: sample ``sample_size``
    members, take the best (lowest non-dominated rank among them, then largest crowding
    distance: with one objective, simply the best) and mutate ``mutations`` of its
    decisions. Each finished trial joins the population and the oldest member leaves.
    Without ``local_search`` this is plain regularized evolution.

    Args:
        population_size: Members kept (the age window).
        sample_size: Tournament size.
        mutations: Decisions changed per child.
        crossover_prob: Probability of a uniform crossover with a second tournament winner
            before mutating.
        local_search: Search the neighbourhoods of the best trials before mutating.
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
        local_search: bool = True,
    ) -> None:
        super().__init__(space, objectives, seed)
        self.population_size = check_positive_int("population_size", population_size, 2)
        self.sample_size = check_positive_int("sample_size", sample_size, 1)
        self.mutations = check_positive_int("mutations", mutations)
        self.crossover_prob = check_probability("crossover_prob", crossover_prob)
        self.local_search = check_bool("local_search", local_search)
        self.population: deque[Trial] = deque(maxlen=self.population_size)
        self.elite = Elite(len(self.objectives))
        self.hood = Neighbourhood(space)
        self.marginals = Marginals()
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
        if self.local_search:
            arch = self._local()
            if arch is not None:
                return arch
        return self.fresh(self._child)

    def _local(self) -> dict[str, Any] | None:
        for pool in ("elite", "population"):
            if pool == "elite":
                trials, F = self.elite.trials, self.elite.F
            else:
                trials = list(self.population)
                F = self.fitness(trials)
            centre = pick_centre(trials, F, self.hood, self.rng)
            while centre is not None:
                score = self.marginals.score if len(self.objectives) == 1 else None
                arch = self.hood.propose(centre, self.rng, self.seen, score)
                if arch is not None:
                    return arch
                centre = pick_centre(trials, F, self.hood, self.rng)
        return None

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        self.population.append(trial)
        f = self.fitness([trial])[0]
        self.elite.add(trial, f)
        self.marginals.add(trial.arch, float(f[0]))

    def replay(self, trials: Iterable[Trial]) -> None:
        super().replay(trials)
        self.n_asked = max(self.n_asked, self.n_told)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["population"] = [trial_to_state(t) for t in self.population]
        state["n_asked"] = self.n_asked
        state["elite"] = self.elite.state_dict()
        state["neighbourhood"] = self.hood.state_dict()
        state["marginals"] = self.marginals.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = deque(
            (trial_from_state(d) for d in state["population"]), maxlen=self.population_size
        )
        self.n_asked = int(state["n_asked"])
        self.elite = load_elite(state["elite"], self.fitness, len(self.objectives))
        self.hood.load_state_dict(state["neighbourhood"])
        self.marginals.load_state_dict(state["marginals"])
