"""The predictive strategy: contracts, encoding, surrogate calibration, any space, the run loop."""

from __future__ import annotations

import numpy as np
import pytest

import cellblock
from cellblock.core.errors import ConfigError
from cellblock.core.objectives import parse_objectives
from cellblock.records import COMPLETE, FAILED, INFEASIBLE, Trial
from cellblock.search_spaces import SearchSpace, arch_id
from cellblock.strategies import make_strategy
from cellblock.strategies.predictive.acquisition import hamming as _hamming
from cellblock.strategies.predictive.surrogate import Encoder, RidgeEnsemble


def bits(s, n=12):
    """'accuracy' rewards ones at even positions and equal neighbour pairs; 'macs' counts ones."""
    return [s.choice(f"b{i}", [0, 1]) for i in range(n)]


def conditional(s):
    """A conditional space: 'depth' decides how many 'w{i}' decisions exist; an integer range."""
    depth = s.integer("depth", 1, 3)
    return [s.choice(f"w{i}", [8, 16, 32]) for i in range(depth)] + [s.integer("k", 1, 7, step=2)]


def _score(arch):
    v = [int(x) for x in arch.values()]
    even = sum(v[0::2])
    pairs = sum(1 for a, b in zip(v, v[1:]) if a == b)
    return (even + 0.5 * pairs) / len(v), sum(v) + 1


def _trial(arch, n, fail_every=0, macs_max=None):
    acc, macs = _score(arch)
    if fail_every and n % fail_every == 0:
        return Trial(number=n, arch_id=arch_id(arch), arch=arch, status=FAILED, metrics={},
                     error="boom")
    if macs_max is not None and macs > macs_max:
        return Trial(number=n, arch_id=arch_id(arch), arch=arch, status=INFEASIBLE,
                     metrics={"macs": macs}, violation=macs - macs_max)
    return Trial(number=n, arch_id=arch_id(arch), arch=arch, status=COMPLETE,
                 metrics={"accuracy": acc, "macs": macs})


def _run(strategy, budget, fail_every=0, macs_max=None):
    trials = []
    for n in range(budget):
        t = _trial(strategy.ask(), n, fail_every, macs_max)
        strategy.tell(t)
        trials.append(t)
    return trials


@pytest.mark.parametrize("objectives", ["accuracy", "accuracy,macs"])
def test_state_round_trip_gives_identical_asks(objectives):
    space = SearchSpace(bits)
    objs = parse_objectives(objectives)
    s = make_strategy("predictive", space, objs, seed=3, options={"n_init": 6})
    trials = _run(s, 25, fail_every=7)
    assert len({t.arch_id for t in trials}) == 25
    s.ask()  # one in flight: pending asks are part of the state
    clone = make_strategy("predictive", space, objs, seed=99, options={"n_init": 6})
    clone.load_state_dict(s.state_dict())
    seq_a, seq_b = [], []
    for n in range(25, 31):
        a, b = s.ask(), clone.ask()
        seq_a.append(a)
        seq_b.append(b)
        s.tell(_trial(a, n))
        clone.tell(_trial(b, n))
    assert seq_a == seq_b
    assert s.state_dict() == clone.state_dict()


def test_replay_resumes_without_repeats():
    space = SearchSpace(bits)
    objs = parse_objectives("accuracy")
    s = make_strategy("predictive", space, objs, seed=0, options={"n_init": 5})
    trials = _run(s, 20)
    resumed = make_strategy("predictive", space, objs, seed=0, options={"n_init": 5})
    resumed.replay(trials)
    more = [resumed.ask() for _ in range(10)]
    ids = {t.arch_id for t in trials}
    assert all(arch_id(a) not in ids for a in more) and len({arch_id(a) for a in more}) == 10


def test_beats_random_single_objective():
    space = SearchSpace(bits, n=24)
    objs = parse_objectives("accuracy")
    best = {}
    for name in ("random", "predictive"):
        best[name] = np.mean([max(t.metrics["accuracy"]
                                  for t in _run(make_strategy(name, space, objs, seed), 40))
                              for seed in range(3)])
    assert best["predictive"] > best["random"] + 0.05


def test_batch_asks_are_distinct_and_spread():
    """Several asks before any tell (concurrency > 1): no repeats, not all one-decision apart."""
    space = SearchSpace(bits, n=16)
    objs = parse_objectives("accuracy,macs")
    s = make_strategy("predictive", space, objs, seed=1, options={"n_init": 8})
    _run(s, 20)
    batch = [s.ask() for _ in range(6)]
    assert len({arch_id(a) for a in batch}) == 6
    distances = [_hamming(a, b) for i, a in enumerate(batch) for b in batch[i + 1:]]
    assert np.mean(distances) >= 2
    assert len(s.pending) == 6
    for n, a in enumerate(batch):
        s.tell(_trial(a, 20 + n))
    assert not s.pending


def test_constraints_steer_away_from_infeasible():
    space = SearchSpace(bits, n=16)
    objs = parse_objectives("accuracy,macs")
    infeasible = {}
    for name, options in (("random", {}),
                          ("predictive", {"constraints": ["macs<=6"], "n_init": 10})):
        counts = []
        for seed in range(2):
            trials = _run(make_strategy(name, space, objs, seed, options), 40, macs_max=6)
            counts.append(sum(t.status == INFEASIBLE for t in trials[10:]))
        infeasible[name] = np.mean(counts)
    assert infeasible["predictive"] < 0.5 * infeasible["random"]


@pytest.mark.parametrize("space_name", ["blocks", "darts"])
def test_runs_on_blocks_and_darts(space_name):
    space = SearchSpace(space_name)
    for objectives in ("accuracy", "accuracy,macs"):
        s = make_strategy("predictive", space, parse_objectives(objectives), seed=0,
                          options={"n_init": 4})
        seen = set()
        for n in range(12):
            arch = s.ask()
            space.validate(arch)  # a valid architecture of the space
            aid = arch_id(arch)
            assert aid not in seen
            seen.add(aid)
            h = int(aid, 16)
            s.tell(Trial(number=n, arch_id=aid, arch=arch, status=COMPLETE,
                         metrics={"accuracy": (h % 1000) / 1000, "macs": float(len(arch) + h % 7)}))
        assert s._models and "accuracy" in s._models


def test_encoder_one_hot_scaled_ints_and_absent_marker():
    space = SearchSpace(conditional)
    enc = Encoder(space)
    short = {"depth": 1, "w0": 16, "k": 7}
    long = {"depth": 3, "w0": 8, "w1": 32, "w2": 8, "k": 1}
    X = enc.encode([short, long])
    names = list(enc.blocks)
    assert names[:3] == ["depth", "w0", "k"]  # met in this order when tracing `short`
    col = {n: enc.blocks[n][1] for n in names}
    assert X[0, col["depth"] + 1] == 0.0 and X[1, col["depth"] + 1] == 1.0  # (3 - 1) / (3 - 1)
    assert X[0, col["k"] + 1] == 1.0 and X[1, col["k"] + 1] == 0.0
    assert list(X[0, col["w0"] + 1: col["w0"] + 4]) == [0.0, 1.0, 0.0]
    assert X[0, col["w1"]] == 1.0 and X[1, col["w1"]] == 0.0  # absent / present marker
    assert X[1, col["w1"] + 3] == 1.0
    clone = Encoder(space)
    clone.load_state_dict(enc.state_dict())
    assert np.array_equal(clone.encode([short, long]), X)
    assert np.array_equal(enc.encode([short], width=col["w1"]), X[:1, : col["w1"]])


def test_ensemble_fits_and_is_calibrated():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(400, 12)).astype(float)
    y = X[:, 0] * X[:, 1] + 0.5 * X[:, 2] - X[:, 3] + rng.normal(0, 0.1, 400)
    model = RidgeEnsemble(members=8, hidden=32).fit(X[:200], y[:200], np.random.default_rng(1))
    mu, sd = model.predict(X[200:])
    assert np.corrcoef(mu, y[200:])[0, 1] > 0.9
    z = np.abs(mu - y[200:]) / sd
    assert 0.8 <= np.mean(z < 2) <= 1.0  # roughly calibrated: most errors within two std
    cheap = RidgeEnsemble(members=1, hidden=0).fit(X[:50], X[:50] @ np.arange(12.0),
                                                   np.random.default_rng(1))
    assert np.allclose(cheap.predict(X[50:60])[0], X[50:60] @ np.arange(12.0), atol=0.1)


def test_options_are_checked():
    space = SearchSpace(bits)
    objs = parse_objectives("accuracy")
    for bad in ({"n_init": 0}, {"candidates": 1}, {"members": 1}, {"constraints": "macs<=5"},
                {"nope": 1}):
        with pytest.raises(ConfigError):
            make_strategy("predictive", space, objs, 0, bad)


@pytest.mark.slow
def test_search_with_process_backend_concurrency_and_constraint(tmp_path):
    space = tmp_path / "sp.py"
    space.write_text(
        "from torch import nn\n"
        "def space(s, input_shape=(1, 8, 8), num_classes=10):\n"
        "    w = s.choice('w', [4, 8, 12, 16])\n"
        "    k = s.choice('k', [1, 3])\n"
        "    d = s.integer('d', 1, 2)\n"
        "    if not s.build:\n"
        "        return None\n"
        "    layers = [nn.Conv2d(input_shape[0], w, k, padding=k // 2), nn.ReLU()]\n"
        "    layers += [nn.Conv2d(w, w, 1), nn.ReLU()] * (d - 1)\n"
        "    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, "
        "num_classes))\n")
    run = cellblock.search(space=f"{space}:space", trials=10, epochs=1, out=str(tmp_path / "r"),
                           device="cpu",
                           strategy="predictive", strategy_args={"n_init": 3},
                           objectives=["accuracy", "macs"],
                           constraints=["params<=600"], backend="process", concurrency=2)
    assert len(run.trials) == 10 and len({t.arch_id for t in run.trials}) == 10
    assert all(t.status in (COMPLETE, INFEASIBLE) for t in run.trials)
    assert any(t.status == COMPLETE for t in run.trials)


def test_p_nondominated_matches_monte_carlo():
    from cellblock.strategies.predictive.acquisition import p_nondominated

    rng = np.random.default_rng(0)
    front = np.array([[0.0, 3.0], [1.0, 1.0], [3.0, 0.0]])
    M = np.array([[0.5, 2.0], [2.0, 2.0], [-1.0, 5.0], [1.0, 1.0]])
    S = np.array([[0.3, 0.3], [0.5, 0.2], [0.1, 0.1], [0.4, 0.4]])
    p = p_nondominated(M, S, front)
    Y = M[:, None, :] + S[:, None, :] * rng.standard_normal((4, 20000, 2))
    dom = np.all(front[None, None, :, :] <= Y[:, :, None, :], axis=3)  # (cand, draw, front point)
    # the most likely single dominator, as the function bounds it
    worst = dom.mean(axis=1).max(axis=1)
    assert np.allclose(p, 1.0 - worst, atol=0.02)
    assert p[2] > 0.99 and p[1] < 0.1  # beyond the front's cheap end / dominated by (1, 1)


def test_neighbourhood_untried_and_take():
    from cellblock.strategies.local_search import Neighbourhood

    space = SearchSpace(bits, n=4)
    centre = _trial({f"b{i}": 0 for i in range(4)}, 0)
    hood = Neighbourhood(space)
    seen = {centre.arch_id}
    moves = hood.untried(centre, seen)
    assert len(moves) == 4 and all(_hamming(a, centre.arch) == 1 for _, (_, a) in moves)
    key, (aid, _) = moves[2]
    hood.take(centre, key, aid, seen)
    assert aid in seen and len(hood.untried(centre, seen)) == 3
    # the rest asked elsewhere: counts as tried, centre exhausted
    seen |= {a for _, (a, _) in moves}
    assert hood.untried(centre, seen) == [] and centre.arch_id in hood.exhausted


@pytest.mark.parametrize("pls_share", [0.0, 0.5, 1.0])
def test_multi_objective_asks_are_moves_of_the_front(pls_share):
    """After the initial design, multi-objective asks are one-decision moves of front members."""
    from cellblock.pareto import nondominated_mask

    space = SearchSpace(bits, n=12)
    objs = parse_objectives("accuracy,macs")
    options = {"n_init": 8, "pls_share": pls_share, "extreme_share": 0.0}
    s = make_strategy("predictive", space, objs, seed=2, options=options)
    trials = _run(s, 20)
    for n in range(20, 30):
        F = s.fitness(trials)
        front = [t.arch for t, keep in zip(trials, nondominated_mask(F)) if keep]
        arch = s.ask()
        assert min(_hamming(arch, a) for a in front) == 1
        trials.append(_trial(arch, n))
        s.tell(trials[-1])


def test_new_options_are_checked():
    space = SearchSpace(bits)
    objs = parse_objectives("accuracy,macs")
    for bad in ({"mo_acquisition": "hv"}, {"pls_share": 1.5}, {"extreme_share": -0.1},
                {"local_search": "yes"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            make_strategy("predictive", space, objs, 0, bad)
    s = make_strategy("predictive", space, objs, 0,
                      {"mo_acquisition": "ehvi", "local_search": False})
    assert len({arch_id(a) for a in (_run(s, 16)[i].arch for i in range(16))}) == 16


def test_extreme_asks_climb_from_the_most_accurate_trial():
    """extreme_share=1: each multi-objective ask moves the most accurate trial (while it can)."""
    space = SearchSpace(bits, n=12)
    objs = parse_objectives("accuracy,macs")
    s = make_strategy("predictive", space, objs, seed=4,
                      options={"n_init": 8, "extreme_share": 1.0})
    trials = _run(s, 12)
    for n in range(12, 20):
        top = max((t for t in trials), key=lambda t: t.metrics["accuracy"])
        arch = s.ask()
        assert _hamming(arch, top.arch) == 1
        trials.append(_trial(arch, n))
        s.tell(trials[-1])
    best = max(t.metrics["accuracy"] for t in trials)
    assert best > max(t.metrics["accuracy"] for t in trials[:12])  # the climb improved the top end
