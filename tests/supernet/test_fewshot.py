"""Few-shot supernets: auto split, routing, shared budget, resume, checkpoint version."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from cellblock.core.errors import ConfigError
from cellblock.data import load_dataset
from cellblock.evaluators.cost import count_params
from cellblock.evaluators.training import TrainConfig
from cellblock.search_spaces import SearchSpace
from cellblock.supernet.checkpoint import load_checkpoint
from cellblock.supernet.model import Supernet
from cellblock.supernet.split import Split, op_decisions
from cellblock.supernet.train import supernet_from_checkpoint, train_supernet

TINY = dict(stages=2, widths=[[4, 8], [8, 12]], strides=[1, 2], stem_width=4, depth=[1, 2],
            block_types=["basic", "mbconv"], kernels=[3, 5], expansions=[2, 4],
            attentions=["none", "se"])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_auto_split_finds_the_operator_decisions():
    space = SearchSpace("blocks", **TINY)
    names = op_decisions(space)
    # block types change the candidate tags: first; attention only module types: after
    assert names == ["stage1.block", "stage2.block", "stage1.attention", "stage2.attention"]
    nb201 = SearchSpace("nb201", input_shape=(1, 8, 8), C=4, N=1)
    assert op_decisions(nb201) == [f"edge_{i}_{j}" for i in range(1, 4) for j in range(i)]


def test_split_groups_fit_the_limit_and_route_by_value():
    space = SearchSpace("blocks", **TINY)
    split = Split.make(space, "auto", max_groups=4)
    assert split.n_groups == 4 and list(split.chunks) == ["stage1.block", "stage2.block"]
    nb = Split.make(SearchSpace("nb201", input_shape=(1, 8, 8), C=4, N=1), "auto", max_groups=8)
    assert nb.n_groups <= 8 and all(len(c) >= 2 for c in nb.chunks.values())
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(40):
        arch = space.sample(rng)
        g = split.group_of(arch)
        key = (arch["stage1.block"], arch["stage2.block"])
        assert seen.setdefault(key, g) == g
        assert f"stage1.block={arch['stage1.block']}" in split.label(g)
    assert sorted(seen.values()) == [0, 1, 2, 3]
    assert Split.from_json(split.to_json()).chunks == split.chunks
    with pytest.raises(ConfigError, match="unknown decision 'stage9.block'"):
        Split.make(space, "stage9.block")
    with pytest.raises(ConfigError, match="at least 2"):
        Split.make(space, "auto", max_groups=1)


def test_each_child_uses_its_own_sub_supernet():
    space = SearchSpace("blocks", **TINY)
    split = Split.make(space, "stage1.block,stage2.block")
    supernet = Supernet.create(space, seed=0, split=split).eval()
    with torch.no_grad():
        for g, bank in enumerate(supernet.banks):
            for t in bank.parameters():
                t.add_(0.01 * (g + 1))
    rng = np.random.default_rng(2)
    x = torch.randn(2, 1, 8, 8)
    groups = set()
    for _ in range(12):
        arch = space.sample(rng)
        g = split.group_of(arch)
        groups.add(g)
        child = supernet.extract(arch).eval()
        assert count_params(child) == count_params(space.build(arch))
        own = supernet.banks[g].copy_into(space.build(arch)).eval()
        with torch.no_grad():
            torch.testing.assert_close(child(x), own(x))
            torch.testing.assert_close(supernet(x, arch), child(x), rtol=1e-5, atol=1e-5)
            other = supernet.banks[(g + 1) % split.n_groups].copy_into(space.build(arch)).eval()
            assert not torch.allclose(other(x), child(x))
    assert len(groups) >= 3


def test_split_training_shares_the_budget_and_resumes_exactly(tmp_path, digits):
    space = SearchSpace("blocks", **TINY)
    split = Split.make(space, "stage1.block,stage2.block")
    cfg = TrainConfig(epochs=3, batch_size=256, lr=0.05, seed=1)  # 4 steps per epoch
    plain = train_supernet(Supernet.create(space, seed=0), digits, cfg)
    sn = Supernet.create(space, seed=0, split=split)
    ckpt, first = tmp_path / "few.pt", tmp_path / "epoch1.pt"

    def keep_first(line: str) -> None:
        if line.startswith("epoch 2/"):  # the file still holds epoch 1's checkpoint
            shutil.copy(ckpt, first)

    result = train_supernet(sn, digits, cfg, checkpoint=ckpt, log=keep_first, split_after=0.5)
    assert result["steps"] == plain["steps"] == 12  # the same budget, shared
    assert sum(result["group_children"]) == 6  # children after the split (step 6 of 12)
    assert sn.split_active
    states = [b.state_dict() for b in sn.banks]
    trained = [g for g, n in enumerate(result["group_children"]) if n]
    assert len(trained) >= 2
    a, b = states[trained[0]], states[trained[1]]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the groups went their own ways
    resume = load_checkpoint(first)
    assert resume.epoch == 1 and not resume.split_active  # split happens after the resume
    again = supernet_from_checkpoint(resume)
    train_supernet(again, digits, cfg, checkpoint=tmp_path / "b.pt", resume=resume, split_after=0.5)
    for bank, state in zip(again.banks, states, strict=True):
        for k, v in bank.state_dict().items():
            assert torch.equal(v, state[k]), k
    final = load_checkpoint(ckpt)
    assert final.done and final.optimizer is None and final.recipe.split_groups == 4
    loaded = supernet_from_checkpoint(final)
    arch = space.sample(np.random.default_rng(5))
    for (k, v), w in zip(loaded.extract(arch).state_dict().items(),
                         sn.extract(arch).state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_old_checkpoint_versions_get_a_clear_error(tmp_path):
    old = tmp_path / "v3.pt"
    torch.save({"format": "cellblock-supernet", "version": 3}, old)
    with pytest.raises(ConfigError, match=r"version 3 \(before few-shot splits.*train it again"):
        load_checkpoint(old)


def test_norm_sharing_shares_weights_across_block_types_but_not_norms():
    from cellblock.supernet.bank import tensor_keys

    space = SearchSpace("blocks",
                        **{**TINY, "block_types": ["basic", "preact"], "attentions": ["none"]})
    supernet = Supernet.create(space, seed=0, sharing="norm").eval()
    rng = np.random.default_rng(0)
    seen = {}
    while len(seen) < 2:
        arch = space.sample(rng)
        seen.setdefault(arch["stage1.block"],
                        {**arch, "stage1.depth": 1, "stage1.width": 8, "stage1.kernel": 3})
    keys = {t: tensor_keys(space.build(a), sharing="norm") for t, a in seen.items()}
    for t, ks in keys.items():
        assert ks["stages.0.0.conv1.weight"] == "stages/0/0/conv1/weight<Conv2d>"
        assert ks["stages.0.0.bn1.weight"] == f"stages/0[{t}]/0/bn1/weight"  # per-type norm
    basic, pre = (supernet.extract(seen[t]) for t in ("basic", "preact"))
    torch.testing.assert_close(basic.stages[0][0].conv1.weight, pre.stages[0][0].conv1.weight)
    x = torch.randn(2, 1, 8, 8)
    for arch in seen.values():  # extract is still the builder's module, run on the bank
        child = supernet.extract(arch).eval()
        assert count_params(child) == count_params(space.build(arch))
        with torch.no_grad():
            torch.testing.assert_close(supernet(x, arch), child(x), rtol=1e-5, atol=1e-5)


def test_split_steps_update_only_the_touched_banks_exactly_as_a_full_step(digits, monkeypatch):
    """The optimizer step over the drawn children's banks only (a speed-up: SGD scanned
    every bank) gives the very weights of a step over every parameter, and no other bank
    holds a gradient when it runs."""
    from cellblock.supernet.train import SupernetSteps

    space = SearchSpace("blocks", **TINY)
    split = Split.make(space, "stage1.block,stage2.block")
    cfg = TrainConfig(epochs=2, batch_size=128, lr=0.05, seed=3)

    def run() -> list[dict[str, torch.Tensor]]:
        sn = Supernet.create(space, seed=0, split=split)
        train_supernet(sn, digits, cfg, split_after=0.25)
        return [b.state_dict() for b in sn.banks]

    fast = run()
    steps_seen = []

    def full_step(self, banks):
        for b, bank in enumerate(self.supernet.banks):
            if b not in banks:
                assert all(p.grad is None for p in bank.parameters()), b
        steps_seen.append(sorted(banks))
        self.loop.optimizer_step()  # every parameter of every group

    monkeypatch.setattr(SupernetSteps, "_step_banks", full_step)
    full = run()
    assert any(s != [0] for s in steps_seen)  # the split was active
    for a, b in zip(fast, full, strict=True):
        for k in a:
            assert torch.equal(a[k], b[k]), k
