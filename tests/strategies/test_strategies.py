"""Ask/tell strategies: dedupe, state round trip, improvement over random, registry."""

from __future__ import annotations

import numpy as np
import pytest

from cellblock.core.errors import ConfigError, RegistryError
from cellblock.core.objectives import parse_objectives
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
                 metrics={} if status == FAILED
                 else {"accuracy": ones / len(arch), "macs": ones + 1},
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


def mixed(s):
    """A categorical, an ordered integer and a conditional decision."""
    kind = s.choice("kind", ["a", "b", "c"])
    depth = s.integer("depth", 1, 9, step=2)
    if kind == "c":
        s.choice("extra", [True, 1, "x"])
    return kind, depth


def test_moves_are_one_decision_changes():
    space = SearchSpace(mixed)
    arch = {"kind": "a", "depth": 5}
    assert sorted(space.moves(arch), key=str) == sorted(
        [("kind", "b"), ("kind", "c"), ("depth", 3), ("depth", 7)], key=str)
    assert ("depth", 1) in space.moves({"kind": "b", "depth": 3})
    assert space.moves({"kind": "b", "depth": 1}).count(("depth", 3)) == 1  # ends of the range
    c = {"kind": "c", "depth": 9, "extra": True}
    extra = [v for n, v in space.moves(c) if n == "extra"]
    assert extra == [1, "x"] and ("depth", 11) not in space.moves(c)  # True kept apart from 1
    rng = np.random.default_rng(0)
    assert space.neighbour(arch, "depth", 7, rng) == {"kind": "a", "depth": 7}
    to_c = space.neighbour(arch, "kind", "c", rng)  # the newly active decision is sampled
    assert to_c["kind"] == "c" and to_c["depth"] == 5 and space.validate(to_c) == to_c


def test_local_search_climbs_and_plain_evolution_stays_available():
    space = SearchSpace(onemax, n=30)
    objectives = parse_objectives("accuracy")
    reached = {True: [], False: []}
    for ls in (True, False):
        for seed in range(3):
            s = make_strategy("evolution", space, objectives, seed=seed,
                              options={"local_search": ls})
            trials = _run(s, 120)
            reached[ls].append(max(t.metrics["accuracy"] for t in trials))
    assert reached[True] == [1.0, 1.0, 1.0]  # 20 random, then at most one move per missing bit
    assert np.mean(reached[False]) < 1.0
    with pytest.raises(ConfigError, match="local_search must be true or false"):
        make_strategy("evolution", space, objectives, options={"local_search": "yes"})


def test_elite_is_the_front_and_single_objective_state_round_trips():
    space = SearchSpace(onemax)
    for spec in ("accuracy", "accuracy,macs"):
        objectives = parse_objectives(spec)
        s = make_strategy("evolution", space, objectives, seed=3)
        trials = _run(s, 50, fail_every=9)
        F = s.fitness(trials)
        ok = np.isfinite(F).all(axis=1)
        from cellblock.pareto import nondominated_mask

        front = {trials[i].arch_id for i in np.flatnonzero(ok)[nondominated_mask(F[ok])]}
        assert {t.arch_id for t in s.elite.trials} == front
        clone = make_strategy("evolution", space, objectives, seed=42)
        clone.load_state_dict(s.state_dict())
        assert [s.ask() for _ in range(8)] == [clone.ask() for _ in range(8)]


@pytest.mark.parametrize("name", ["evolution", "nsga2"])
def test_asynchronous_asks_before_tells(name):
    space = SearchSpace(onemax, n=16)
    s = make_strategy(name, space, parse_objectives("accuracy"), seed=0)
    seen, n = set(), 0
    for _ in range(12):  # 4 workers: 4 asks, then the tells in reverse order
        batch = [s.ask() for _ in range(4)]
        ids = {arch_id(a) for a in batch}
        assert len(ids) == 4 and not ids & seen
        seen |= ids
        for arch in reversed(batch):
            s.tell(_evaluate(arch, n))
            n += 1
    assert len(seen) == 48
