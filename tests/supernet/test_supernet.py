"""Supernet: extract == build, forward of children, training, checkpoints, evaluator."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from cellblock.data import load_dataset
from cellblock.evaluators.cost import count_macs, count_params
from cellblock.evaluators.training import TrainConfig
from cellblock.search_spaces import SearchSpace
from cellblock.search_spaces.api import sample_distinct
from cellblock.supernet.bank import slice_view, tensor_keys
from cellblock.supernet.checkpoint import load_checkpoint
from cellblock.supernet.model import Supernet
from cellblock.supernet.sampler import ARCH_SAMPLERS
from cellblock.supernet.train import supernet_from_checkpoint, train_supernet

ALL_BLOCKS = dict(
    stages=2, widths=[[8, 12], [12, 16]], strides=[1, 2], stem_width=4, depth=[1, 2],
    block_types=["basic", "bottleneck", "preact", "resnext", "dense", "inception", "mbconv"],
    kernels=[3, 5], expansions=[1, 2], cardinalities=[2, 4], growths=[4],
)
TINY_BLOCKS = dict(stages=2, widths=[[4, 8], [8, 12]], strides=[1, 2], stem_width=4,
                   depth=[1, 2], block_types=["basic", "mbconv"], kernels=[3, 5],
                   expansions=[1, 2], attentions=["none", "se"])
TINY_NB201 = dict(input_shape=(1, 8, 8), C=4, N=1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("name,kwargs", [("blocks", ALL_BLOCKS), ("nb201", TINY_NB201)])
def test_extract_is_the_builders_module(name, kwargs):
    space = SearchSpace(name, **kwargs)
    torch.manual_seed(0)
    supernet = Supernet.create(space, seed=0).eval()
    for p in supernet.bank.buffers():  # non-trivial BN statistics to copy
        if p.dtype.is_floating_point:
            p.uniform_(0.5, 1.5)
    rng = np.random.default_rng(0)
    x = torch.randn(3, 1, 8, 8)
    for _ in range(8):
        arch = space.sample(rng)
        built, extracted = space.build(arch).eval(), supernet.extract(arch).eval()
        assert type(built) is type(extracted)
        assert count_params(built) == count_params(extracted)
        assert count_macs(built, (1, 8, 8)) == count_macs(extracted, (1, 8, 8))
        with torch.no_grad():
            out = extracted(x)
            torch.testing.assert_close(supernet(x, arch), out, rtol=1e-5, atol=1e-5)
            built.load_state_dict(extracted.state_dict())
            assert torch.equal(built(x), out)


def test_children_share_weights_by_slicing():
    space = SearchSpace("blocks", **TINY_BLOCKS)
    supernet = Supernet.create(space)
    arch = space.sample(np.random.default_rng(1))
    small = {**arch, "stage1.width": 4, "stage1.block": "basic", "stage1.kernel": 3}
    large = {**small, "stage1.width": 8, "stage1.kernel": 5}
    ws = supernet.extract(small).stages[0][0].conv1.weight
    wl = supernet.extract(large).stages[0][0].conv1.weight
    assert ws.shape == (4, 4, 3, 3) and wl.shape == (8, 4, 5, 5)
    assert torch.equal(ws, wl[:4, :, 1:4, 1:4])  # leading channels, centre of the kernel


@pytest.mark.parametrize("sampling", ["uniform", "fair", "sandwich", "sandwich-kd"])
def test_forward_backward_of_sampled_children(sampling):
    space = SearchSpace("blocks", **TINY_BLOCKS)
    supernet = Supernet.create(space).train()
    rng = np.random.default_rng(0)
    archs = ARCH_SAMPLERS.get(sampling)(space, rng)
    assert archs and all(space.validate(a) == a for a in archs)
    if sampling == "fair":  # every value of every decision once
        assert len(archs) == 2
        assert {a["stage1.attention"] for a in archs} == {"none", "se"}
        assert {a["stage1.kernel"] for a in archs} == {3, 5}
    for arch in archs:
        out = supernet(torch.randn(4, 1, 8, 8), arch)
        assert out.shape == (4, 10)
        out.sum().backward()
    assert any(p.grad is not None for p in supernet.bank.parameters())
    assert any(p.grad is None for p in supernet.bank.parameters())  # unused candidates


def test_training_changes_weights_and_resume_is_exact(tmp_path, digits):
    space = SearchSpace("blocks", **TINY_BLOCKS)
    cfg = TrainConfig(epochs=2, batch_size=512, lr=0.05, seed=3)  # 2 steps per epoch
    start = Supernet.create(space, seed=0)
    before = {k: v.clone() for k, v in start.bank.state_dict().items()}
    ckpt, first = tmp_path / "sn.pt", tmp_path / "after_epoch1.pt"

    def keep_first(line: str) -> None:
        if line.startswith("epoch 2/"):  # the file still holds epoch 1's checkpoint
            shutil.copy(ckpt, first)

    result = train_supernet(start, digits, cfg, sampling="fair", checkpoint=ckpt, log=keep_first)
    assert result["steps"] == 4 and result["epochs"] == 2
    after = start.bank.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    resume = load_checkpoint(first)
    assert resume.epoch == 1 and not resume.done
    again = supernet_from_checkpoint(resume)
    train_supernet(again, digits, cfg, sampling="fair", checkpoint=tmp_path / "b.pt", resume=resume)
    for k, v in again.bank.state_dict().items():
        assert torch.equal(v, after[k]), k
    final = load_checkpoint(ckpt)
    assert final.done and final.step == 4


def test_block_types_share_the_projection_shortcut_of_a_position():
    from cellblock.supernet.bank import tensor_keys

    space = SearchSpace("blocks", **{**TINY_BLOCKS, "block_types": ["basic", "bottleneck"],
                                     "expansions": [1, 2]})
    supernet = Supernet.create(space)
    rng = np.random.default_rng(0)
    seen = {}
    while len(seen) < 2:
        arch = space.sample(rng)
        seen.setdefault(arch["stage2.block"], arch)
    keys = {t: set(tensor_keys(space.build(a)).values()) for t, a in seen.items()}
    for t, ks in keys.items():  # the stride-2 projection is keyed without the block type
        assert "stages/1/0/downsample/0/weight" in ks
        assert any(k.startswith(f"stages/1[{t}]/0/") for k in ks)
        assert "fc/weight" in ks
    basic = supernet.extract(seen["basic"]).stages[1][0].downsample[0].weight
    neck = supernet.extract(seen["bottleneck"]).stages[1][0].downsample[0].weight
    n = min(basic.shape[0], neck.shape[0])
    c = min(basic.shape[1], neck.shape[1])
    assert torch.equal(basic[:n, :c], neck[:n, :c])


def test_shared_shortcut_gives_every_block_type_one_projection():
    from cellblock.search_spaces.blocks_space import BUILTIN_BLOCKS
    from cellblock.supernet.bank import tensor_keys

    space = SearchSpace("blocks", **{**TINY_BLOCKS, "block_types": list(BUILTIN_BLOCKS),
                                     "shortcut": "shared"})
    supernet = Supernet.create(space)
    rng = np.random.default_rng(0)
    seen = {}
    while len(seen) < len(BUILTIN_BLOCKS):
        arch = space.sample(rng)
        seen.setdefault(arch["stage2.block"], arch)
    for t, arch in seen.items():  # the stride-2 projection of stage 2 is one tensor for all
        assert "stages/1/0/downsample/0/weight" in set(tensor_keys(space.build(arch)).values()), t
        child = supernet.extract(arch)
        w = child.stages[1][0].downsample[0].weight
        shared = supernet.bank.tensor("stages/1/0/downsample/0/weight")
        assert torch.equal(w, shared[: w.shape[0], : w.shape[1]])
        x = torch.randn(2, 1, 8, 8)
        supernet.eval()
        child.eval()
        with torch.no_grad():
            torch.testing.assert_close(supernet(x, arch), child(x))


def test_residual_branches_start_as_their_shortcut():
    space = SearchSpace("blocks", **TINY_BLOCKS)
    supernet = Supernet.create(space)
    bank = supernet.bank
    # stage 1 block 0: mbconv has a residual only at width 4 (= stem width), so its
    # shared project norm keeps scale 1; later blocks and basic blocks start at zero
    assert torch.all(bank.tensor("stages/0[mbconv]/0/project/1/weight") == 1)
    assert torch.all(bank.tensor("stages/0[mbconv]/1/project/1/weight") == 0)
    assert torch.all(bank.tensor("stages/0[basic]/0/bn2/weight") == 0)
    assert torch.all(bank.tensor("stages/0[basic]/0/bn1/weight") == 1)
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    while arch["stage1.block"] != "basic":
        arch = space.sample(rng)
    arch = {**arch, "stage1.depth": 2}
    block = supernet.extract(arch).stages[0][1].eval()
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():  # the zeroed branch adds nothing: relu(x + 0)
        torch.testing.assert_close(block(x), torch.relu(x))


BASIC_ONLY = dict(stages=2, widths=[[4, 8], [8, 12]], strides=[1, 2], stem_width=4,
                  depth=[1, 2], block_types=["basic"], kernels=[3, 5], expansions=[1, 2])


def test_children_get_dense_weights_and_exact_gradients():
    """Issue 10, finding 0: strided weight views crashed conv backward on torch 2.14 CPU.

    Every parameter a child receives is dense, BN buffers still alias the bank, and the
    gradient that reaches the bank equals the extracted child's own gradient.
    """
    space = SearchSpace("blocks", **BASIC_ONLY)
    supernet = Supernet.create(space, seed=0).train()
    rng = np.random.default_rng(1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    strided = 0
    for _ in range(6):
        arch = space.sample(rng)
        child = supernet.child(arch)
        views = supernet.bank.views(child)
        keys = tensor_keys(child)
        for name, _ in child.named_parameters():
            assert views[name].is_contiguous(), name
        for name, _ in child.named_buffers():  # BN statistics are updated in the bank itself
            bank_storage = supernet.bank.tensor(keys[name]).untyped_storage().data_ptr()
            assert views[name].untyped_storage().data_ptr() == bank_storage, name
        extracted = supernet.extract(arch).train()
        supernet.bank.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(supernet(x, arch), y).backward()
        torch.nn.functional.cross_entropy(extracted(x), y).backward()
        for name, p in extracted.named_parameters():
            shared = supernet.bank.tensor(keys[name])
            strided += not slice_view(shared, tuple(p.shape)).is_contiguous()
            torch.testing.assert_close(slice_view(shared.grad, tuple(p.shape)), p.grad,
                                       rtol=1e-4, atol=1e-5)
    assert strided > 0  # the sliced, non-contiguous case was exercised


def test_tensor_keys_name_every_tensor_once_in_one_walk():
    """tensor_keys walks the module tree once (it runs for every child a step draws); it
    names exactly the tensors named_parameters/named_buffers name, a module used twice
    once, and keys a shared module's tensors without the candidate tags around it."""
    from torch import nn

    from cellblock.search_spaces.tags import candidate, shared

    proj = shared(nn.Conv2d(2, 2, 1))
    inner = candidate(nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2), proj), "basic")
    model = nn.Sequential(inner, nn.Sequential(proj), candidate(nn.Linear(2, 2), "head"))
    keys = tensor_keys(model)
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    assert sorted(keys) == sorted(names)
    assert keys["0.0.weight"] == "0[basic]/0/weight"
    assert keys["0.1.running_mean"] == "0[basic]/1/running_mean"
    assert keys["0.2.weight"] == "0/2/weight"  # shared: no tag of the candidate around it
    assert keys["2.weight"] == "2[head]/weight"
    prefixed = tensor_keys(nn.Sequential(model), "stages.1")
    assert prefixed["0.0.2.weight"] == "stages/1/0/0/2/weight"
    assert prefixed["0.0.0.weight"] == "stages/1/0/0[basic]/0/weight"
    norm = tensor_keys(model, sharing="norm")
    assert norm["0.0.weight"] == "0/0/weight<Conv2d>" and norm["0.1.weight"] == "0[basic]/1/weight"


def test_child_structures_are_cached_from_their_second_draw():
    space = SearchSpace("blocks", **TINY_BLOCKS)
    supernet = Supernet.create(space, seed=0)
    supernet.cache_size = 2
    archs = sample_distinct(space, 4, 0)
    for arch in archs:  # drawn once each: nothing kept
        supernet.child(arch)
    assert not supernet._children_cache
    again = supernet.child(archs[0])  # the second draw is kept
    assert supernet.child(archs[0]) is again
    for arch in archs[1:]:  # LRU: at most cache_size structures
        supernet.child(arch)
    assert len(supernet._children_cache) == 2 and supernet.child(archs[0]) is not again
