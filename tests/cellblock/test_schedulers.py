"""The multi-objective successive-halving rule, checked against a brute-force expectation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellblock.core.errors import ConfigError
from cellblock.core.objectives import parse_objectives
from cellblock.run.schedulers import MOSuccessiveHalving, promotable, rung_epochs


def _dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def _brute_ranks(F) -> list[int]:
    """Peel fronts one by one with plain pairwise dominance."""
    left, ranks, r = set(range(len(F))), [0] * len(F), 0
    while left:
        front = {i for i in left if not any(_dominates(F[j], F[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = r
        left -= front
        r += 1
    return ranks


def _brute_crowding(F, members: list[int]) -> dict[int, float]:
    """NSGA-II crowding distance of one front (boundary rows inf; ties by row order)."""
    if len(members) <= 2:
        return {i: math.inf for i in members}
    dist = {i: 0.0 for i in members}
    for j in range(len(F[0])):
        order = sorted(members, key=lambda i: F[i][j])  # stable: ties by row order
        span = F[order[-1]][j] - F[order[0]][j]
        if span <= 0:
            continue
        dist[order[0]] = dist[order[-1]] = math.inf
        for a, b, c in zip(order, order[1:], order[2:]):
            dist[b] += (F[c][j] - F[a][j]) / span
    return dist


def _brute_promotable(F, i: int, rf: int) -> bool:
    ranks = _brute_ranks(F)
    crowd: dict[int, float] = {}
    for r in set(ranks):
        crowd.update(_brute_crowding(F, [k for k in range(len(F)) if ranks[k] == r]))
    better = sum(1 for k in range(len(F))
                 if ranks[k] < ranks[i] or (ranks[k] == ranks[i] and crowd[k] > crowd[i]))
    return better < math.ceil(len(F) / rf)


@pytest.mark.parametrize("seed", range(40))
def test_promotable_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m, rf = int(rng.integers(1, 11)), int(rng.integers(1, 4)), int(rng.integers(2, 5))
    F = rng.integers(0, 5, size=(n, m)).astype(float).tolist()  # small range: many ties
    for i in range(n):
        assert promotable(F, i, rf) == _brute_promotable(F, i, rf), (F, i, rf)


def test_rungs_below_the_full_budget():
    assert rung_epochs(1, 3, 9) == [1, 3]
    assert rung_epochs(2, 2, 20) == [2, 4, 8, 16]
    assert rung_epochs(5, 3, 5) == []
    with pytest.raises(ConfigError, match="reduction_factor"):
        rung_epochs(1, 1, 9)


def test_small_cheap_network_survives_where_accuracy_alone_stops_it():
    rule = MOSuccessiveHalving(parse_objectives("accuracy,macs"), grace_epochs=1,
                               reduction_factor=3, max_epochs=9)
    assert rule.decide("big", 1, {"accuracy": 0.90, "macs": 1e6})
    assert not rule.decide("worse", 1, {"accuracy": 0.80, "macs": 2e6})  # dominated by "big"
    # less accurate but 10x cheaper: non-dominated, so it goes on (plain ASHA would stop it:
    # 0.85 is below the 2/3 quantile of {0.90, 0.80, 0.85})
    assert rule.decide("small", 1, {"accuracy": 0.85, "macs": 1e5})
    assert rule.decide("small", 2, {"accuracy": 0.86, "macs": 1e5})  # between rungs: goes on
    assert rule.decide("small", 1, {"accuracy": 0.10, "macs": 1e5})  # judged once per rung
    assert set(rule.recorded[1]) == {"big", "worse", "small"}
    assert rule.decide("big", 3, {"accuracy": 0.95, "macs": 1e6})  # alone at rung 3
    assert set(rule.recorded[3]) == {"big"}


def test_only_accuracy_and_cheap_objectives_count():
    rule = MOSuccessiveHalving(parse_objectives("accuracy,macs,latency_ms"), 1, 3, 9)
    assert [o.name for o in rule.objectives] == ["accuracy", "macs", "latency_ms"]
    vec = rule.vector({"accuracy": 0.5, "macs": 10, "latency_ms": float("nan")})
    assert vec[0] == -0.5 and vec[1] == 10 and math.isinf(vec[2])  # missing/NaN: worst
