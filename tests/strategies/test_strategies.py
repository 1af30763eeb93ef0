"""Ask/tell strategies: dedupe, state round trip, improvement over random, registry."""

from __future__ import annotations

import numpy as np
import pytest

from cellblock.errors import ConfigError, RegistryError
from cellblock.objectives import parse_objectives
from cellblock.records import COMPLETE, FAILED, Trial
from cellblock.search_spaces import SearchSpace, arch_id
from cellblock.strategies import STRATEGIES, make_strategy


def onemax(s, n=12):
    """Bits; 'accuracy' = fraction of ones, 'macs' = number of ones (a real trade-off)."""
    return [s.choice(f"b{i}", [0, 1]) for i in range(n)]


def _evaluate(arch, n, fail_every=0):
    ones = sum(arch.values())
    status = FAILED if fail_every and n % fail_every == 0 else COMPLETE
    return Trial(number=n, arch_id=arch_id(arch), arch=arch, status=status,
                 metrics={} if status == FAILED else {"accuracy": ones / len(arch), "macs": ones + 1},
                 error="boom" if status == FAILED else None)


def _run(strategy, budget, fail_every=0):
    trials = []
    for n in range(budget):
        t = _evaluate(strategy.ask(), n, fail_every)
        strategy.tell(t)
        trials.append(t)
    return trials


@pytest.mark.parametrize("name", ["random", "evolution", "nsga2"])
def test_no_duplicates_and_state_round_trip(name):
    space = SearchSpace(onemax)
    objectives = parse_objectives("accuracy,macs")
    s = make_strategy(name, space, objectives, seed=1)
    trials = _run(s, 60, fail_every=7)
    assert len({t.arch_id for t in trials}) == 60
    clone = make_strategy(name, space, objectives, seed=99)
    clone.load_state_dict(s.state_dict())
    assert [s.ask() for _ in range(5)] == [clone.ask() for _ in range(5)]


@pytest.mark.parametrize("name", ["evolution", "nsga2"])
def test_evolution_beats_random_single_objective(name):
    space = SearchSpace(onemax, n=30)
    objectives = parse_objectives("accuracy")
    best = {}
    for strat in ("random", name):
        vals = []
        for seed in range(5):
            trials = _run(make_strategy(strat, space, objectives, seed=seed), 150)
            vals.append(max(t.metrics["accuracy"] for t in trials))
        best[strat] = np.mean(vals)
    assert best[name] > best["random"] + 0.05


def test_replay_rebuilds_population_and_avoids_repeats():
    space = SearchSpace(onemax)
    objectives = parse_objectives("accuracy,macs")
    s = make_strategy("evolution", space, objectives, seed=0)
    trials = _run(s, 30)
    resumed = make_strategy("evolution", space, objectives, seed=0)
    resumed.replay(trials)
    assert [t.arch_id for t in resumed.population] == [t.arch_id for t in s.population]
    new = [arch_id(resumed.ask()) for _ in range(10)]
    assert not set(new) & {t.arch_id for t in trials}


def test_registry_and_options():
    assert {"random", "evolution", "nsga2"} <= set(STRATEGIES.names())
    space = SearchSpace(onemax)
    objectives = parse_objectives("accuracy")
    with pytest.raises(RegistryError, match="unknown strategy 'genetic'; known: .*evolution"):
        make_strategy("genetic", space, objectives)
    with pytest.raises(ConfigError, match="no option 'pop'; its options: population_size"):
        make_strategy("evolution", space, objectives, options={"pop": 3})
    with pytest.raises(ConfigError, match="population_size must be an integer >= 2"):
        make_strategy("nsga2", space, objectives, options={"population_size": 1})
    with pytest.raises(RegistryError, match="already registered"):
        STRATEGIES.register("random", object)
