"""Issue 31: local search restarts from the next best trial; the cheaper ask's parts agree."""

from __future__ import annotations

import numpy as np
import pytest

from cellblock.core.errors import ConfigError
from cellblock.core.objectives import parse_objectives
from cellblock.records import COMPLETE, Trial
from cellblock.search_spaces import SearchSpace, arch_id
from cellblock.search_spaces.samplers import categorical
from cellblock.strategies import make_strategy
from cellblock.strategies.predictive.acquisition import hamming
from cellblock.strategies.predictive.surrogate import LAMBDAS, _ridge_loo


def bits(s, n=8):
    """Eight binary decisions."""
    return [s.choice(f"b{i}", [0, 1]) for i in range(n)]


def _arch(ones):
    return {f"b{i}": int(i in ones) for i in range(8)}


def _tell(strategy, arch, acc):
    n = len(strategy.observed)
    strategy.tell(
        Trial(number=n, arch_id=arch_id(arch), arch=arch, status=COMPLETE,
              metrics={"accuracy": acc}))


def _local_optimum_state(restart):
    """The best trial (all zeros) is a tried local optimum; the second best is 3 decisions away."""
    space = SearchSpace(bits)
    s = make_strategy("predictive", space, parse_objectives("accuracy"), seed=0,
                      options={"n_init": 4, "local_restart": restart})
    best, second = _arch(set()), _arch({5, 6, 7})
    _tell(s, best, 0.9)
    _tell(s, second, 0.8)
    for i in range(8):  # every neighbour of the best is worse
        _tell(s, _arch({i}), 0.1 + 0.01 * i)
    for ones in ({0, 1, 2, 3}, {1, 3, 5}, {0, 2, 4, 6}):
        _tell(s, _arch(ones), 0.3)
    return s, best, second


def test_restart_walks_the_next_best_trials_neighbourhood():
    s, best, second = _local_optimum_state(restart=True)
    assert [t.arch_id for t in s._centres()] == [arch_id(second)]
    asks = [s.ask() for _ in range(3)]
    assert all(hamming(a, second) == 1 for a in asks)
    assert len({arch_id(a) for a in asks}) == 3 and not any(arch_id(a) in s.observed_ids
                                                            for a in asks)


def test_without_restart_the_exhausted_best_is_the_only_centre():
    s, best, _ = _local_optimum_state(restart=False)
    assert [t.arch_id for t in s._centres()] == [arch_id(best)]
    s._maybe_refit()
    assert s._local(s._scorer()) is None  # its neighbourhood is tried: the global pool decides


def test_restart_resumes_exactly():
    s, _, _ = _local_optimum_state(restart=True)
    s.ask()
    clone = make_strategy("predictive", SearchSpace(bits), parse_objectives("accuracy"), seed=5,
                          options={"n_init": 4, "local_restart": True})
    clone.load_state_dict(s.state_dict())
    for k in range(6):
        a, b = s.ask(), clone.ask()
        assert a == b
        _tell(s, a, 0.2 + 0.01 * k)
        _tell(clone, b, 0.2 + 0.01 * k)
    assert s.state_dict() == clone.state_dict()


def test_local_restart_option_is_checked():
    with pytest.raises(ConfigError, match="local_restart"):
        make_strategy("predictive", SearchSpace(bits), parse_objectives("accuracy"),
                      options={"local_restart": 1})


def test_categorical_domains_are_shared_but_keep_types():
    assert categorical((1, 2)) is categorical((1, 2))
    assert categorical((True, 2)).choices[0] is True  # not the cached (1, 2)
    assert categorical((1.0, 2)).choices[0].__class__ is float
    assert str(categorical((-0.0, 1.0)).choices[0]) == "-0.0"
    assert str(categorical((0.0, 1.0)).choices[0]) == "0.0"


def test_ridge_loo_gram_path_matches_the_svd():
    rng = np.random.default_rng(0)
    Phi = rng.normal(size=(300, 20))
    Phi -= Phi.mean(0)
    y = Phi @ rng.normal(size=20) + rng.normal(size=300)
    U, s, _ = np.linalg.svd(Phi, full_matrices=False)
    ref = []
    for lam in LAMBDAS:
        shrink = s**2 / (s**2 + lam)
        h = (U**2) @ shrink + 1.0 / len(y)
        ref.append(np.sqrt(np.mean(((y - U @ (shrink * (U.T @ y))) / (1.0 - h)) ** 2)))
    lam, err = _ridge_loo(Phi, y)
    assert lam == float(LAMBDAS[int(np.argmin(ref))])
    assert err == pytest.approx(min(ref), rel=1e-9)
