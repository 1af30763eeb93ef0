"""Issue 31, ask cost: the cheaper parts of the predictive ask agree with what they replace,
and a long run (bounded fits, cached predictions and climbing moves) still resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest

from cellblock.core.objectives import parse_objectives
from cellblock.records import COMPLETE, Trial
from cellblock.search_spaces import SearchSpace, arch_id
from cellblock.strategies import make_strategy
from cellblock.strategies.predictive import moves, told
from cellblock.strategies.predictive.models import objective_predictions
from cellblock.strategies.predictive.surrogate import RidgeEnsemble
from cellblock.strategies.selection import Contenders, best_rows, survivors


def bits(s, n=12):
    """Twelve binary decisions."""
    return [s.choice(f"b{i}", [0, 1]) for i in range(n)]


def _trial(arch, n):
    v = [int(x) for x in arch.values()]
    acc = (sum(v[0::2]) + 0.5 * sum(a == b for a, b in zip(v, v[1:]))) / len(v)
    return Trial(number=n, arch_id=arch_id(arch), arch=arch, status=COMPLETE,
                 metrics={"accuracy": acc + 0.01 * ((n * 7) % 5), "macs": sum(v) + 1})


def _run(strategy, start, stop):
    asked = []
    for n in range(start, stop):
        arch = strategy.ask()
        asked.append(arch)
        strategy.tell(_trial(arch, n))
    return asked


def _matrices(seed, count):
    rng = np.random.default_rng(seed)
    for k in range(count):
        n, m = int(rng.integers(1, 90)), int(rng.integers(1, 4))
        F = rng.integers(0, 6, size=(n, m)).astype(float) if k % 2 else rng.normal(size=(n, m))
        if k % 5 == 0:
            F[rng.random(n) < 0.2, 0] = np.inf
        yield F


def test_best_rows_keeps_what_survivors_keeps():
    for F in _matrices(0, 150):
        for k in (1, 3, 7, len(F)):
            kk = min(k, len(F))
            assert best_rows(F, k).tolist() == survivors(F, kk)[0].tolist()


def test_contenders_hold_the_best_rows_row_by_row_and_at_once():
    for F in _matrices(1, 120):
        finite = np.flatnonzero(np.isfinite(F).all(axis=1))
        grown, at_once = Contenders(6), Contenders(6)
        for r in range(1, len(F) + 1):
            grown.update(F[:r])
        rows = at_once.update(F)
        assert rows.tolist() == grown.rows.tolist()
        assert at_once.dominators.tolist() == grown.dominators.tolist()
        for k in range(1, min(6, len(finite)) + 1):
            assert (rows[best_rows(F[rows], k)].tolist()
                    == finite[best_rows(F[finite], k)].tolist())


def test_training_rows_are_bounded_keep_the_best_and_are_reproducible(monkeypatch):
    monkeypatch.setattr(told, "FIT_ROWS", 16)
    s = make_strategy("predictive", SearchSpace(bits), parse_objectives("accuracy"), seed=2,
                      options={"n_init": 5})
    _run(s, 0, 60)
    s.n_fit = 60
    rows = s._training_rows(list(range(60)))
    assert len(rows) == 16 and rows == sorted(rows)
    F = s._observed_F()[:60, 0]
    assert set(np.argsort(F, kind="stable")[:8].tolist()) <= set(rows)
    assert s._training_rows(list(range(60))) == rows
    s.n_fit = 61  # another refit draws another random half
    assert s._training_rows(list(range(60))) != rows
    assert s._training_rows(list(range(10))) == list(range(10))


@pytest.mark.parametrize("objectives", ["accuracy", "accuracy,macs"])
def test_long_run_with_bounded_fits_resumes_exactly(monkeypatch, objectives):
    monkeypatch.setattr(told, "FIT_ROWS", 24)
    space, objs = SearchSpace(bits), parse_objectives(objectives)
    options = {"n_init": 6, "candidates": 32, "members": 4, "hidden": 8}
    s = make_strategy("predictive", space, objs, seed=4, options=options)
    _run(s, 0, 205)
    assert s.n_fit < len(s.observed)  # between two amortised refits
    s.ask()  # one in flight
    clone = make_strategy("predictive", space, objs, seed=77, options=options)
    clone.load_state_dict(s.state_dict())
    assert _run(s, 206, 230) == _run(clone, 206, 230)
    assert s.state_dict() == clone.state_dict()
    assert s._climb and clone._climb  # both climbed; the clone made its moves afresh


def test_climbing_moves_depend_on_the_architecture_alone(monkeypatch):
    monkeypatch.setattr(moves, "CLIMB_CACHE", 2)
    space, objs = SearchSpace(bits), parse_objectives("accuracy")
    a = make_strategy("predictive", space, objs, seed=0)
    b = make_strategy("predictive", space, objs, seed=9)
    arch = space.sample(np.random.default_rng(5))
    first = a._untried_moves(arch)
    assert len(first) == 12 and all(sum(x != y for x, y in zip(near.values(), arch.values())) == 1
                                    for _, near in first)
    for k in range(3):  # evicted from the cache and made again
        a._untried_moves(space.sample(np.random.default_rng(k)))
    assert len(a._climb) == 2
    b.seen.add(first[0][0])
    assert b._untried_moves(arch) == first[1:]
    assert a._untried_moves(arch) == first


def test_cached_predictions_equal_fresh_ones_until_the_refit():
    space, objs = SearchSpace(bits), parse_objectives("accuracy,macs")
    s = make_strategy("predictive", space, objs, seed=1, options={"n_init": 5})
    _run(s, 0, 30)
    s._maybe_refit()
    rng = np.random.default_rng(3)
    items = [(arch_id(a), a) for a in (space.sample(rng) for _ in range(20))]
    M0, S0, _ = s._predicted(items[:12], s.objectives, None)
    M, S, p = s._predicted(items, s.objectives, None)  # 12 cached, 8 new
    X = s.encoder.encode([a for _, a in items])
    ref_M, ref_S = objective_predictions(s._models, s.objectives, X)
    np.testing.assert_allclose(M, ref_M, rtol=1e-12)
    np.testing.assert_allclose(S, ref_S, rtol=1e-12)
    np.testing.assert_array_equal(M[:12], M0)
    assert (p == 1.0).all()
    s._fit()
    assert s._predictions == {}


@pytest.mark.parametrize("members,hidden", [(8, 16), (1, 16), (4, 0)])
def test_stacked_members_predict_as_each_member(members, hidden):
    rng = np.random.default_rng(0)
    X = (rng.random((80, 10)) < 0.3).astype(float)
    y = X @ rng.normal(size=10) + 0.1 * rng.normal(size=80)
    e = RidgeEnsemble(members, hidden).fit(X, y, np.random.default_rng(1))
    each = np.stack([(e._features(X, W, b) - mu_P) @ w + mu_t for W, b, w, mu_P, mu_t in e.params])
    mean, spread = e._predict_std(X)
    np.testing.assert_allclose(mean, each.mean(0), atol=1e-12)
    np.testing.assert_allclose(spread, each.std(0), atol=1e-12)


def test_canonical_json_is_json_dumps_with_sorted_keys():
    import json

    from cellblock.search_spaces.api import canonical_json

    for arch in ({"b": 1, "a": "x"}, {"z": True, "y": None, "x": 1.5, "w": -0.0}, {}):
        assert canonical_json(arch) == json.dumps(arch, sort_keys=True, separators=(",", ":"))
    with pytest.raises(ValueError):
        canonical_json({"a": float("nan")})


def test_quartiles_are_numpys_percentiles():
    from cellblock.strategies.predictive.acquisition import quartiles

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 5, 7, 100, 1001):
        for x in (rng.normal(size=n), rng.integers(0, 4, size=n).astype(float)):
            assert quartiles(x).tolist() == np.percentile(x, [25, 75]).tolist()
