"""The define-by-run space API: domains, replay, errors, variation, counting."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from cellblock.core.errors import ArchValidationError, ConfigError, RegistryError, SpaceError
from cellblock.search_spaces import Categorical, Domain, IntRange, SearchSpace, arch_id
from cellblock.search_spaces.samplers import RandomSampler


def test_domains_json_round_trip_and_immutability():
    for d in (Categorical(("a", 1, 2.5, True, None)), IntRange(2, 10, 2)):
        back = Domain.from_json(json.loads(json.dumps(d.to_json())))
        assert back == d and hash(back) == hash(d)
        with pytest.raises(AttributeError):
            d.low = 3  # type: ignore[misc]
    assert IntRange(2, 10, 2).values() == (2, 4, 6, 8, 10)
    assert Categorical((True, 1)).contains(1) and not Categorical((True,)).contains(1)


@pytest.mark.parametrize("bad", [lambda: Categorical(()), lambda: Categorical(([1],)),
                                 lambda: Categorical((1, 1)), lambda: IntRange(3, 1),
                                 lambda: IntRange(0, 5, 2), lambda: IntRange(0, 4, 0)])
def test_bad_domains_raise(bad):
    with pytest.raises(SpaceError):
        bad()


def test_sample_replay_rebuilds_exactly(tiny_space, rng):
    for _ in range(20):
        arch = tiny_space.sample(rng)
        assert set(arch) == {"depth", "act"} | {f"layer{i}.width" for i in range(arch["depth"])}
        torch.manual_seed(0)
        a = tiny_space.build(arch)
        torch.manual_seed(0)
        b = tiny_space.build(json.loads(json.dumps(arch)))
        for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(pa, pb)
        assert tiny_space.validate(arch) == arch


def test_arch_id_is_a_content_hash():
    a = {"x": 1, "y": "b"}
    assert arch_id(a) == arch_id({"y": "b", "x": 1})
    assert arch_id(a) != arch_id({"x": 2, "y": "b"})
    assert len(arch_id(a)) == 16


def test_bad_arch_errors_name_decision_and_allowed_values(tiny_space):
    with pytest.raises(ArchValidationError,
                       match=r"'layer0.width' .* = 5 .*allowed values: 4, 8, 16"):
        tiny_space.build({"depth": 1, "layer0.width": 5, "act": "relu"})
    with pytest.raises(ArchValidationError, match=r"'act' .*missing.*'relu', 'gelu'"):
        tiny_space.build({"depth": 1, "layer0.width": 4})
    with pytest.raises(ArchValidationError, match=r"unknown decision 'layer1.width'"):
        tiny_space.build({"depth": 1, "layer0.width": 4, "layer1.width": 4, "act": "relu"})
    with pytest.raises(ArchValidationError, match="integers 1..3"):
        tiny_space.build({"depth": 7, "act": "relu"})
    with pytest.raises(ArchValidationError, match="must be a dict"):
        tiny_space.build([1, 2])  # type: ignore[arg-type]


def test_same_name_same_value_and_conflicting_domain():
    def space(s):
        a = s.choice("a", [1, 2, 3])
        assert s.choice("a", [1, 2, 3]) == a
        return a

    sampler = RandomSampler(np.random.default_rng(1))
    SearchSpace(space).run(sampler)
    assert list(sampler.decisions) == ["a"]

    def bad(s):
        s.choice("a", [1, 2])
        s.choice("a", [1, 2, 3])

    with pytest.raises(SpaceError, match="different domains"):
        SearchSpace(bad).sample(np.random.default_rng(0))

    def unnamed(s):
        s.choice("", [1])

    with pytest.raises(SpaceError, match="non-empty string name"):
        SearchSpace(unnamed).sample(np.random.default_rng(0))


def test_mutation_changes_used_decisions_and_samples_new_ones(tiny_space, rng):
    parent = {"depth": 1, "layer0.width": 4, "act": "relu"}
    changed_depth = 0
    for _ in range(200):
        child = tiny_space.mutate(parent, rng, n=1)
        tiny_space.validate(child)
        assert child != parent
        diff = [k for k in parent if child.get(k) != parent[k]]
        assert len(diff) == 1
        if diff == ["depth"]:
            changed_depth += 1
            assert all(f"layer{i}.width" in child for i in range(child["depth"]))
    assert changed_depth > 20


def test_crossover_takes_values_from_parents(tiny_space, rng):
    a = {"depth": 3, "layer0.width": 4, "layer1.width": 4, "layer2.width": 4, "act": "relu"}
    b = {"depth": 3, "layer0.width": 16, "layer1.width": 16, "layer2.width": 16, "act": "gelu"}
    seen = set()
    for _ in range(50):
        child = tiny_space.crossover(a, b, rng)
        tiny_space.validate(child)
        for k, v in child.items():
            assert v in (a[k], b[k])
        seen.add(arch_id(child))
    assert len(seen) > 5


def test_size_and_enumeration_match_brute_force(tiny_space):
    all_archs = list(tiny_space.enumerate())
    expected = sum(3**d * 2 for d in (1, 2, 3))
    assert len(all_archs) == expected == len({arch_id(a) for a in all_archs})
    size = tiny_space.size()
    assert size.exact and size.value == expected
    # Knuth's estimator is unbiased: close to the truth when enumeration is cut short
    est = tiny_space.size(exact_limit=10, probes=4000)
    assert not est.exact and abs(est.value - expected) / expected < 0.1


def test_counting_builds_no_network(tiny_space):
    built = []

    def space(s):
        d = s.integer("d", 1, 2)
        if s.build:
            built.append(d)
        return d

    sp = SearchSpace(space)
    assert sp.size().value == 2 and list(sp.enumerate()) == [{"d": 1}, {"d": 2}]
    sp.sample(np.random.default_rng(0))
    assert built == []
    sp.build({"d": 2})
    assert built == [2]


def test_space_options_are_checked():
    def space(s, input_shape, num_classes, width=8):
        return s.choice("w", [width])

    SearchSpace(space, input_shape=(1, 8, 8), num_classes=10, width=4)
    with pytest.raises(ConfigError, match="no option 'depth'.*width"):
        SearchSpace(space, depth=3)


def test_custom_space_from_file_and_module(tmp_path):
    f = tmp_path / "myspace.py"
    f.write_text("def space(s, num_classes=10):\n    return s.choice('k', [1, 2])\n")
    sp = SearchSpace(f"{f}:space")
    assert sp.size().value == 2
    sp2 = SearchSpace.from_spec(sp.spec())
    assert list(sp2.enumerate()) == [{"k": 1}, {"k": 2}]
    with pytest.raises(RegistryError, match="not found"):
        SearchSpace(f"{tmp_path}/nope.py:space")
    with pytest.raises(RegistryError, match="has no function 'nope'"):
        SearchSpace(f"{f}:nope")
    with pytest.raises(RegistryError, match="unknown space 'nope'; known: .*blocks"):
        SearchSpace("nope")
    assert SearchSpace("json:dumps").fn is json.dumps


def test_every_value_reachable_by_sampling(tiny_space):
    rng = np.random.default_rng(3)
    seen = {(a["depth"], a["act"]) for a in (tiny_space.sample(rng) for _ in range(300))}
    assert seen == set(itertools.product((1, 2, 3), ("relu", "gelu")))


def test_space_file_is_imported_once(tmp_path):
    f = tmp_path / "registering.py"
    f.write_text(
        "from cellblock.strategies import STRATEGIES\n"
        "from cellblock.strategies.random_search import RandomSearch\n"
        "STRATEGIES.register('file_once_random', RandomSearch)\n"
        "def space(s):\n    return s.choice('k', [1, 2])\n"
    )
    from cellblock.strategies import STRATEGIES

    try:
        assert SearchSpace(f"{f}:space").size().value == 2
        assert SearchSpace(f"{f}:space").size().value == 2  # no 'already registered'
    finally:
        STRATEGIES.unregister("file_once_random")
