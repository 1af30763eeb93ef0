"""Tests of the zero-cost proxies, their registry, the pipeline metrics and the proxy evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cellblock.core.errors import ConfigError, RegistryError
from cellblock.evaluators.proxies import PROXIES, grad_norm, jacob_cov, naswot, snip, synflow


def small_net(seed: int = 0, width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    )


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["synflow", "naswot", "jacob_cov", "grad_norm", "snip"])
def test_proxy_finite_deterministic_and_harmless(name: str, batch) -> None:
    x, y = batch
    model = small_net().eval()
    before = snapshot(model)
    proxy = PROXIES.get(name)
    a = proxy(model, x, y)
    assert isinstance(a, float) and math.isfinite(a)
    assert proxy(small_net(), x, y) == a  # same seed, same score
    assert proxy(small_net(seed=1), x, y) != a
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN stats
    assert not model.training
    assert all(p.grad is None and p.dtype == torch.float32 for p in model.parameters())


def test_synflow_needs_no_data() -> None:
    model = small_net()
    score = synflow(model, (1, 8, 8))
    assert score > 0 and math.isfinite(score)
    assert PROXIES.get("synflow")(model, input_shape=(1, 8, 8)) == score
    assert not PROXIES.get("synflow").needs_data
    # Hand check on a linear chain without BN: R = sum(|W2| |W1| 1), score = 2 R.
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    w1, w2 = lin[1].weight.detach().abs().double(), lin[2].weight.detach().abs().double()
    r = float((w2 @ w1 @ torch.ones(4, dtype=torch.float64)).sum())
    assert synflow(lin, (1, 2, 2)) == pytest.approx(2 * r)


def test_direct_functions_match_registry(batch) -> None:
    x, y = batch
    model = small_net()
    assert naswot(model, x) == PROXIES.get("naswot")(model, x, y)
    assert jacob_cov(model, x, y) == PROXIES.get("jacob_cov")(model, x, y)
    assert grad_norm(model, x, y) == PROXIES.get("grad_norm")(model, x, y)
    assert snip(model, x, y) == PROXIES.get("snip")(model, x, y)


def test_degenerate_network_gets_worst_score(batch) -> None:
    x, y = batch
    const = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU())
    nn.init.zeros_(const[1].weight)
    assert jacob_cov(const, x, y) == -math.inf
    assert naswot(const, x) == -math.inf


def test_registry_errors(batch) -> None:
    with pytest.raises(RegistryError, match="synflow"):
        PROXIES.get("zen")
    with pytest.raises(ConfigError, match="minibatch"):
        PROXIES.get("snip")(small_net())


def test_proxy_metrics_in_a_run(tmp_path) -> None:
    """Proxies as objectives are computed before training; the proxy evaluator does not train."""
    import cellblock

    run = cellblock.search(
        space="darts", evaluator="proxy", proxy="synflow",
        objectives=["synflow", "naswot", "params"],
        constraints=["snip>=0"], trials=2, strategy="random", out=str(tmp_path / "run"),
        device="cpu",
        space_args={"C": 4, "layers": 3},
    )
    done = [t for t in run.trials if t.status == "COMPLETE"]
    assert len(done) == 2
    for t in done:
        assert set(t.metrics) >= {"synflow", "naswot", "snip", "params", "macs"}
        assert "accuracy" not in t.metrics and "train_s" not in t.metrics
        assert math.isfinite(t.metrics["synflow"]) and t.metrics["synflow"] > 0


def test_proxy_evaluator_rejects_accuracy(tmp_path) -> None:
    import cellblock

    with pytest.raises(ConfigError, match="no accuracy"):
        cellblock.search(space="darts", evaluator="proxy", objectives=["accuracy", "synflow"],
                         trials=1, out=str(tmp_path / "r"), device="cpu")
    with pytest.raises(RegistryError, match="unknown proxy 'zen'"):
        cellblock.search(space="darts", evaluator="proxy", proxy="zen", objectives=["synflow"],
                         trials=1, out=str(tmp_path / "r2"), device="cpu")


def test_seeded_builds_give_same_proxy() -> None:
    from cellblock.search_spaces import SearchSpace

    space = SearchSpace("darts", C=4, layers=3)
    arch = space.sample(np.random.default_rng(0))
    scores = []
    for _ in range(2):
        torch.manual_seed(7)
        scores.append(synflow(space.build(arch), (1, 8, 8)))
    assert scores[0] == scores[1]


def test_synflow_scores_every_block_type_including_pre_activation() -> None:
    """Without BN, a pre-activation block's in-place ReLU used to overwrite its shortcut's input."""
    from cellblock.search_spaces import SearchSpace
    from cellblock.search_spaces.blocks_space import BUILTIN_BLOCKS

    for block in BUILTIN_BLOCKS:
        space = SearchSpace("blocks", block_types=[block])
        model = space.build(space.sample(np.random.default_rng(0)))
        score = synflow(model, (1, 8, 8))
        assert score > 0 and math.isfinite(score), block
