"""Tests of the ``darts`` cell space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellblock.core.errors import ArchValidationError, ConfigError, RegistryError
from cellblock.evaluators.cost import count_params
from cellblock.search_spaces import SearchSpace
from cellblock.search_spaces.darts import (
    DARTS_CIFAR_SKELETON,
    DARTS_V2,
    Genotype,
    darts_v2_arch,
    from_genotype,
    to_genotype,
)
from cellblock.search_spaces.darts_ops import Identity


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace("darts", input_shape=(1, 8, 8), num_classes=10)


def test_random_archs_build_and_run(space: SearchSpace) -> None:
    rng = np.random.default_rng(0)
    x = torch.randn(2, 1, 8, 8)
    for _ in range(3):
        arch = space.sample(rng)
        assert len(arch) == 2 * 4 * 4  # 2 cell types x 4 nodes x (in0, op0, in1, op1)
        model = space.build(arch)
        out = model.train()(x)
        assert out.shape == (2, 10)
        assert torch.isfinite(out).all()
        out.sum().backward()


def test_decision_domains(space: SearchSpace) -> None:
    decisions = {d.name: d for d in space.trace(darts_v2_arch())}
    assert list(decisions)[:4] == ["normal.node2.in0", "normal.node2.op0", "normal.node2.in1",
                                   "normal.node2.op1"]
    assert decisions["normal.node2.in0"].domain.values() == (0, 1)
    assert decisions["reduce.node5.in1"].domain.values() == (0, 1, 2, 3, 4)
    assert decisions["normal.node3.op0"].domain.size == 8


def test_replay_rebuilds_exactly(space: SearchSpace) -> None:
    arch = space.sample(np.random.default_rng(3))
    torch.manual_seed(1)
    a = space.build(arch)
    torch.manual_seed(1)
    b = space.build(dict(reversed(list(arch.items()))))
    assert str(a) == str(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_bad_arch_names_decision_and_allowed(space: SearchSpace) -> None:
    arch = darts_v2_arch()
    with pytest.raises(ArchValidationError, match=r"normal\.node3\.op1.*conv_7x7.*sep_conv_3x3"):
        space.build({**arch, "normal.node3.op1": "conv_7x7"})
    with pytest.raises(ArchValidationError, match=r"reduce\.node2\.in0.*= 2 .*0, 1"):
        space.build({**arch, "reduce.node2.in0": 2})
    small = SearchSpace("darts", ops=("skip_connect", "max_pool_3x3", "sep_conv_3x3"))
    with pytest.raises(ArchValidationError, match="dil_conv_3x3"):  # DARTS_V2 uses it
        small.validate(arch)


def test_bad_skeleton() -> None:
    with pytest.raises(RegistryError, match="conv_9x9"):
        SearchSpace("darts", ops=("conv_9x9",)).sample(np.random.default_rng(0))
    with pytest.raises(ConfigError, match="drop_path"):
        SearchSpace("darts", drop_path=1.5).sample(np.random.default_rng(0))


def test_darts_v2_param_count() -> None:
    space = SearchSpace("darts", **DARTS_CIFAR_SKELETON)
    with torch.device("meta"):
        model = space.build(darts_v2_arch())
    n = count_params(model)
    assert n == 3_349_342  # the official DARTS code reports 3.349342 M (paper: 3.3 M)
    assert abs(n - 3.35e6) / 3.35e6 < 0.02


def test_genotype_round_trip(space: SearchSpace) -> None:
    assert to_genotype(darts_v2_arch()) == DARTS_V2
    arch = space.sample(np.random.default_rng(5))
    assert from_genotype(to_genotype(arch)) == arch
    assert space.validate(from_genotype(tuple(to_genotype(arch)))) == arch
    with pytest.raises(ArchValidationError, match="concat"):
        from_genotype(DARTS_V2._replace(normal_concat=[2, 3]))
    with pytest.raises(ArchValidationError, match="input must be in 0..2"):
        from_genotype(
            DARTS_V2._replace(normal=[("skip_connect", 0)] * 2 + [("skip_connect", 3)] * 6))
    assert isinstance(DARTS_V2, Genotype)


def test_drop_path_only_in_training_with_positive_prob() -> None:
    space = SearchSpace("darts", drop_path=0.5)
    arch = {**darts_v2_arch(), "normal.node2.op0": "sep_conv_3x3"}
    torch.manual_seed(0)
    model = space.build(arch)
    x = torch.randn(4, 1, 8, 8)

    def run(train: bool, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        model.train(train)
        with torch.no_grad():
            return model(x)

    assert model.drop_path_prob == 0.0
    assert torch.equal(run(True, 1), run(True, 2))  # prob 0: no randomness in training
    model.on_epoch_start(5, 10)
    assert model.drop_path_prob == pytest.approx(0.25)
    assert not torch.equal(run(True, 1), run(True, 2))  # drop path active
    assert torch.equal(run(True, 1), run(True, 1))
    assert torch.equal(run(False, 1), run(False, 2))  # eval: never applied
    model.on_epoch_start(0, 10)
    assert model.drop_path_prob == 0.0
    assert any(isinstance(m, Identity) for m in model.modules())


def test_trains_through_hook() -> None:
    """``train_and_evaluate`` calls ``on_epoch_start``: the schedule reaches its last value."""
    from cellblock.data import Augment, Dataset
    from cellblock.evaluators.training import TrainConfig, train_and_evaluate

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    data = Dataset("tiny", x, y, x[:4], y[:4], x[:4], y[:4], (1, 8, 8), 10,
                   Augment(pad=0, flip=False))
    torch.manual_seed(0)
    model = SearchSpace("darts", C=4, layers=3).build(darts_v2_arch())
    out = train_and_evaluate(model, data, TrainConfig(epochs=3, batch_size=8))
    assert out["steps"] == 6
    assert model.drop_path_prob == pytest.approx(0.2 * 2 / 3)
