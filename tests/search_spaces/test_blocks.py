"""Block registry, attention modules and the ``blocks`` space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cellblock.core.errors import ArchValidationError, ConfigError, RegistryError, SpaceError
from cellblock.evaluators.cost import count_macs, count_params
from cellblock.search_spaces import BLOCKS, Block, SearchSpace, register_block
from cellblock.search_spaces.attention import (
    EfficientChannelAttention,
    SqueezeExcite,
    eca_kernel_size,
)
from cellblock.search_spaces.blocks_base import block_out_channels, build_stage
from cellblock.search_spaces.blocks_space import BUILTIN_BLOCKS, RESNET_SKELETON
from cellblock.search_spaces.reference_archs import (
    resnet18_arch,
    resnet34_arch,
    resnet50_arch,
    resnext50_32x4d_arch,
)

torch.set_num_threads(1)

REFERENCES = [
    (resnet18_arch, torchvision.models.resnet18, 11_689_512, 1_814_073_344),
    (resnet34_arch, torchvision.models.resnet34, 21_797_672, 3_663_761_408),
    (resnet50_arch, torchvision.models.resnet50, 25_557_032, 4_089_184_256),
    (resnext50_32x4d_arch, torchvision.models.resnext50_32x4d, 25_028_904, 4_230_479_872),
]


@pytest.mark.parametrize(
    "arch_fn,tv_fn,params,macs", REFERENCES, ids=lambda v: getattr(v, "__name__", "")
)
def test_reference_resnets_match_torchvision(arch_fn, tv_fn, params, macs):
    space = SearchSpace("blocks", **RESNET_SKELETON)
    with torch.device("meta"):
        ours = space.build(arch_fn())
        ref = tv_fn()
    assert count_params(ref) == params
    assert count_params(ours) == params
    assert count_macs(ref, (3, 224, 224)) == macs
    assert count_macs(ours, (3, 224, 224)) == macs


def _first_options(cls: type[Block]) -> dict:
    return {name: choices[-1] for name, choices in cls.options.items()}


@pytest.mark.parametrize("attention", ["none", "se", "eca"])
@pytest.mark.parametrize("name", BUILTIN_BLOCKS)
def test_every_block_and_attention_runs(name, attention):
    torch.manual_seed(0)
    cls = BLOCKS.get(name)
    options = _first_options(cls)
    if "cardinality" in options:
        options["cardinality"] = 4
    if "expansion" in options:
        options["expansion"] = 2
    x = torch.randn(2, 6, 8, 8)
    for stride, size in [(1, 8), (2, 4)]:
        stage = build_stage(name, 6, 12, stride, 2, attention=attention, **options)
        out = stage(x)
        assert out.shape == (2, block_out_channels(name, 12, **options), size, size)
        assert torch.isfinite(out).all()
        if attention != "none":
            assert any(
                isinstance(m, (SqueezeExcite, EfficientChannelAttention)) for m in stage.modules()
            )


def test_dense_depth_counts_layers_and_transition_sets_width():
    stage = build_stage("dense", 8, 20, 2, 3, growth=4)
    assert len(stage) == 1 and len(stage[0].layers) == 3
    assert stage(torch.randn(1, 8, 7, 7)).shape == (1, 20, 4, 4)  # ceil, like a strided conv


def test_resnext_is_robust_to_indivisible_widths():
    for width, card in [(12, 8), (6, 32), (24, 16)]:
        out = block_out_channels("resnext", width, cardinality=card, expansion=2)
        y = build_stage("resnext", 5, width, 1, 1, cardinality=card, expansion=2, kernel=3)(
            torch.randn(1, 5, 4, 4)
        )
        assert y.shape[1] == out and out % 2 == 0 and out >= 2 * width


def test_mbconv_residual_only_when_shapes_match():
    same = build_stage("mbconv", 8, 8, 1, 1, kernel=3, expansion=1)[0]
    down = build_stage("mbconv", 8, 8, 2, 1, kernel=3, expansion=4)[0]
    assert same.use_residual and not down.use_residual
    assert isinstance(same.expand, nn.Identity) and not isinstance(down.expand, nn.Identity)


def test_attention_shapes_and_eca_kernel():
    assert [eca_kernel_size(c) for c in (16, 64, 256, 512)] == [3, 3, 5, 5]
    se = SqueezeExcite(64)
    assert se.fc1.out_channels == 8  # timm: make_divisible(64 / 16, 8) -> 8
    x = torch.randn(2, 64, 3, 3)
    assert se(x).shape == x.shape and EfficientChannelAttention(64)(x).shape == x.shape


def test_random_default_architectures_build_and_run():
    space = SearchSpace("blocks")
    rng = np.random.default_rng(0)
    x = torch.randn(2, 1, 8, 8)
    seen = set()
    for _ in range(12):
        arch = space.sample(rng)
        seen.add(arch["stage1.block"])
        net = space.build(arch)
        assert net(x).shape == (2, 10)
        # replay rebuilds the same network
        assert count_params(space.build(dict(arch))) == count_params(net)
    assert len(seen) >= 4


def test_decisions_are_conditional_on_the_block():
    space = SearchSpace("blocks")
    for arch in space.enumerate(limit=200):
        for i in (1, 2, 3):
            opts = set(BLOCKS.get(arch[f"stage{i}.block"]).options)
            made = {k.split(".", 1)[1] for k in arch if k.startswith(f"stage{i}.")}
            assert made == {"block", "depth", "width", "attention"} | opts


def _basic_arch() -> dict:
    space = SearchSpace("blocks", block_types=["basic"])
    return space, space.sample(np.random.default_rng(1))


def test_bad_arch_dicts_raise_naming_the_decision():
    space, arch = _basic_arch()
    with pytest.raises(ArchValidationError, match=r"unknown decision 'stage9\.width'"):
        space.build({**arch, "stage9.width": 8})
    with pytest.raises(ArchValidationError, match=r"'stage2\.width' .*allowed values: 16, 24, 32"):
        space.build({**arch, "stage2.width": 17})
    with pytest.raises(ArchValidationError, match=r"'stage1\.kernel' .*allowed values: 3, 5"):
        space.build({**arch, "stage1.kernel": 4})
    missing = {k: v for k, v in arch.items() if k != "stage3.attention"}
    pattern = r"'stage3\.attention' of space 'blocks' is missing.*'none', 'se', 'eca'"
    with pytest.raises(ArchValidationError, match=pattern):
        space.build(missing)
    with pytest.raises(ArchValidationError, match=r"'stage1\.expansion'"):  # not a basic option
        space.build({**arch, "stage1.expansion": 2})


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"widths": [[8], [16]]}, "widths must be a list of 3"),
        ({"strides": [1, 2]}, "one stride per stage"),
        ({"stages": 0}, "stages must be a positive int"),
        ({"depth": [3, 1]}, "depth must be"),
        ({"kernels": [3, 4]}, "kernel must be odd"),
        ({"input_shape": [8, 8]}, "input_shape"),
        ({"widths": [[2], [16], [32]]}, "'inception' needs width >= 4"),
        ({"block_options": {"kernel": [3]}}, "kernels="),
        ({"shortcut": "dense"}, r"shortcut must be one of \['own', 'shared'\], got 'dense'"),
    ],
)
def test_bad_skeleton_raises_config_error(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        SearchSpace("blocks", **kwargs).sample(np.random.default_rng(0))


def test_unknown_names_in_skeleton_list_known_ones():
    with pytest.raises(RegistryError, match=r"unknown block 'nope'; known: .*basic.*mbconv"):
        SearchSpace("blocks", block_types=["basic", "nope"]).sample(np.random.default_rng(0))
    with pytest.raises(RegistryError, match=r"unknown stem 'big'; known: conv3, imagenet"):
        SearchSpace("blocks", stem="big").sample(np.random.default_rng(0))
    with pytest.raises(RegistryError, match=r"unknown attention 'cbam'; known: eca, none, se"):
        SearchSpace("blocks", attentions=["se", "cbam"]).sample(np.random.default_rng(0))


def test_unknown_block_option_raises():
    pattern = r"block 'basic' has no option 'growth'; its options: kernel"
    with pytest.raises(ConfigError, match=pattern):
        build_stage("basic", 4, 4, 1, 1, growth=8)


def test_duplicate_block_name_raises():
    with pytest.raises(RegistryError, match="'basic' is already registered"):
        register_block("basic")(BLOCKS.get("basic"))
    with pytest.raises(SpaceError, match="subclass of cellblock Block"):
        register_block("not_a_block")(nn.Conv2d)
    assert "not_a_block" not in BLOCKS


@pytest.fixture
def user_block():
    @register_block("test_sepconv")
    class SepConv(Block):
        options = {"kernel": (3, 5), "mult": (1, 2)}

        def __init__(self, in_channels, width, stride=1, *, attention="none", kernel=3, mult=1):
            super().__init__(in_channels, width, stride, attention=attention)
            self.dw = nn.Conv2d(in_channels, in_channels, kernel, stride, kernel // 2,
                                groups=in_channels)
            self.pw = nn.Conv2d(in_channels, width * mult, 1)

        @classmethod
        def out_channels(cls, width, mult=1, **options):
            return width * mult

        def forward(self, x):
            return self.pw(self.dw(x))

    yield SepConv
    BLOCKS.unregister("test_sepconv")


def test_user_registered_block_is_searchable(user_block):
    space = SearchSpace(
        "blocks", block_types=["test_sepconv", "mbconv"], block_options={"mult": [2]}
    )
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(10)]
    mine = [a for a in archs if a["stage3.block"] == "test_sepconv"]
    assert mine, "the user block was never sampled"
    arch = mine[0]
    assert arch["stage3.mult"] == 2 and arch["stage3.kernel"] in (3, 5)
    net = space.build(arch)
    assert isinstance(net.stages[2][0], user_block)
    assert net.fc.in_features == 2 * arch["stage3.width"]
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_a_block_without_the_shared_shortcut_is_refused_by_name(user_block):
    space = SearchSpace("blocks", block_types=["basic", "test_sepconv"], shortcut="shared")
    with pytest.raises(ConfigError, match=r"block 'test_sepconv' cannot build the 'shared' "
                                          r"shortcut \(its shortcuts: \['own'\]\)"):
        space.sample(np.random.default_rng(0))
    with pytest.raises(SpaceError, match="option name .shortcut."):  # reserved for the space
        register_block("test_bad_option")(type("Bad", (Block,), {"options": {"shortcut": ("a",)}}))


@pytest.mark.parametrize("name", BUILTIN_BLOCKS)
def test_shared_shortcut_adds_the_stage_projection_to_every_block_type(name):
    torch.manual_seed(0)
    options = _first_options(BLOCKS.get(name))
    out_c = block_out_channels(name, 12, **options)
    own = build_stage(name, 6, 12, 2, 2, **options)
    shared = build_stage(name, 6, 12, 2, 2, shortcut="shared", **options)
    x = torch.randn(2, 6, 8, 8)
    assert shared(x).shape == own(x).shape == (2, out_c, 4, 4)
    first = shared[0]
    proj = first.downsample  # 1x1 conv + BN from 6 to out_c channels, stride 2
    assert isinstance(proj[0], nn.Conv2d) and proj[0].stride == (2, 2)
    assert (proj[0].in_channels, proj[0].out_channels) == (6, out_c)
    if name in ("basic", "bottleneck", "resnext"):  # their own shortcut is that projection
        assert list(own.state_dict()) == list(shared.state_dict())
        return
    # the block's output is its branch plus the projection: zero the projection's BN scale
    # and shift, and the output is the branch alone
    first.eval()
    with torch.no_grad():
        full = first(x)
        proj[1].weight.zero_()
        proj[1].bias.zero_()
        branch = first(x)
        proj[1].weight.fill_(1.0)
        torch.testing.assert_close(full - branch, proj(x))


def test_own_shortcut_is_the_default_and_unchanged():
    arch = SearchSpace("blocks").sample(np.random.default_rng(3))
    a, b = SearchSpace("blocks").build(arch), SearchSpace("blocks", shortcut="own").build(arch)
    assert list(a.state_dict()) == list(b.state_dict())
    shared = SearchSpace("blocks", shortcut="shared")
    for seed in range(20):  # the shared stream keeps every network buildable and runnable
        net = shared.build(shared.sample(np.random.default_rng(seed)))
        assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_inception_every_branch_has_channels_at_small_widths():
    import torch

    from cellblock.search_spaces.blocks import inception_split
    from cellblock.search_spaces.blocks_base import BLOCKS

    for width in range(4, 40):
        split = inception_split(width)
        assert sum(split) == width and min(split) >= 1, (width, split)
    block = BLOCKS.get("inception")(8, 4, 1)
    assert block(torch.zeros(2, 8, 6, 6)).shape == (2, 4, 6, 6)


def test_block_registered_in_place_of_another_is_not_served_a_stale_skeleton():
    """Issue 12: the skeleton cache was keyed by registry *lengths*, so swapping one block
    for another of the same name count kept the old block's validated options."""

    def make(options):
        class Swappable(Block):
            def __init__(self, in_channels, width, stride=1, *, attention="none", **kw):
                super().__init__(in_channels, width, stride, attention=attention)
                self.conv = nn.Conv2d(in_channels, width, 3, stride, 1)

            def forward(self, x):
                return self.conv(x)

        Swappable.options = options
        return Swappable

    register_block("test_swap")(make({"kernel": (3, 5)}))
    try:
        space = SearchSpace("blocks", block_types=["test_swap"], kernels=[3, 5])
        arch = space.sample(np.random.default_rng(0))
        assert "stage1.kernel" in arch and "stage1.mult" not in arch
        BLOCKS.unregister("test_swap")
        register_block("test_swap")(make({"mult": (1, 2)}))  # same name, same registry size
        arch = SearchSpace("blocks", block_types=["test_swap"], kernels=[3, 5]).sample(
            np.random.default_rng(0))
        assert "stage1.mult" in arch and "stage1.kernel" not in arch
    finally:
        BLOCKS.unregister("test_swap")


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_stages_alone_adapts_the_default_widths_and_strides(stages):
    """Issue 16: ``--space-arg stages=N`` alone gives a valid skeleton (documented rule)."""
    from cellblock.search_spaces.blocks_space import adapt_to_stages

    space = SearchSpace("blocks", stages=stages, depth=[1, 2])
    arch = space.sample(np.random.default_rng(0))
    assert sum(k.endswith(".block") for k in arch) == stages
    assert space.build(arch)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    widths, strides = adapt_to_stages(4, ((8, 12), (16, 24), (32, 48)), (1, 2, 2))
    assert widths[3] == (64, 96) and strides == [1, 2, 2, 2]
    assert adapt_to_stages(1, ((8,), (16,)), (1, 2)) == ([(8,)], [1])


def test_explicit_widths_of_the_wrong_length_are_still_an_error():
    with pytest.raises(ConfigError, match="widths must be a list of 2 per-stage lists"):
        SearchSpace("blocks", stages=2, widths=[[8], [16], [32]]).sample(np.random.default_rng(0))
