"""The ``blocks`` space: stem -> S stages of registered blocks -> global pool + linear.

Per stage ``i`` (1-based) the decisions are, in order::

    stage{i}.block      one of ``block_types``
    stage{i}.depth      integer in ``depth = (low, high)``
    stage{i}.width      one of ``widths[i-1]``
    stage{i}.<option>   one per option the chosen block takes (``kernel``, ``expansion``,
                        ``growth``, ``cardinality``, ``variant``...), in the block's order
    stage{i}.attention  one of ``attentions``

An option's choices are the same whatever block is chosen (so a decision keeps one domain):
the skeleton's list (``kernels``, ``expansions``, ``growths``, ``cardinalities``,
``variants``, or ``block_options[name]``), else the union of the default choices of the
block types that take it. Downsampling is done by the first block of a stage (``strides``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from cellblock.core.errors import ConfigError
from cellblock.core.registry import Registry
from cellblock.search_spaces.api import register_space
from cellblock.search_spaces.attention import ATTENTIONS
from cellblock.search_spaces.blocks import InceptionBlock
from cellblock.search_spaces.blocks_base import (
    BLOCKS,
    block_out_channels,
    build_stage,
    check_kernel,
    check_positive_int,
    check_shortcut,
)
from cellblock.search_spaces.samplers import Sampler
from cellblock.search_spaces.tags import candidate

BUILTIN_BLOCKS = ("basic", "bottleneck", "preact", "resnext", "dense", "inception", "mbconv")

# Skeleton argument giving the choices of each built-in option, and its value check.
OPTION_ARGS = {
    "kernel": "kernels",
    "expansion": "expansions",
    "growth": "growths",
    "cardinality": "cardinalities",
    "variant": "variants",
}


def _check_variant(value: Any) -> Any:
    allowed = InceptionBlock.options["variant"]
    if value not in allowed:
        raise ConfigError(f"variant must be one of {list(allowed)}, got {value!r}")
    return value


OPTION_CHECKS: dict[str, Callable[[Any], Any]] = {
    "kernel": check_kernel,
    "expansion": lambda v: check_positive_int("expansion", v),
    "growth": lambda v: check_positive_int("growth", v),
    "cardinality": lambda v: check_positive_int("cardinality", v),
    "variant": _check_variant,
}

# ---- stems -------------------------------------------------------------------------------
StemFactory = Callable[[int, int], nn.Module]
STEMS: Registry[StemFactory] = Registry("stem")


def register_stem(name: str) -> Callable[[StemFactory], StemFactory]:
    """Decorator registering a stem factory ``factory(in_channels, width) -> nn.Module``."""
    return STEMS.register(name)  # type: ignore[return-value]


@register_stem("conv3")
def conv3_stem(in_channels: int, width: int) -> nn.Module:
    """3x3 stride-1 conv-BN-ReLU (small images such as 8x8 digits)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )


@register_stem("imagenet")
def imagenet_stem(in_channels: int, width: int) -> nn.Module:
    """torchvision ResNet stem: 7x7 stride-2 conv-BN-ReLU, 3x3 stride-2 max pool."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    )


# ---- the network ------------------------------------------------------------------------
class BlockNet(nn.Module):
    """Stem, stages, global average pool and a linear classifier."""

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], channels: int,
                 num_classes: int) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():  # torchvision ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


# ---- skeleton validation ----------------------------------------------------------------
def _int_list(what: str, values: Any, check: Callable[[Any], Any] | None = None) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"{what} must be a list, got {values!r}")
    check = check or (lambda v: check_positive_int(what, v))
    return tuple(check(v) for v in values)


def _choices(what: str, values: Any, check: Callable[[Any], Any]) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{what} must be a non-empty list of choices, got {values!r}")
    out = tuple(check(v) for v in values)
    if len(set(out)) != len(out):
        raise ConfigError(f"{what} has duplicate choices: {list(values)!r}")
    return out


def _check_context(args: Mapping[str, Any]) -> tuple[int, ...]:
    """Input shape, classes, stem: the parts of a skeleton outside the stages."""
    shape = _int_list("input_shape", args["input_shape"])
    if len(shape) != 3:
        raise ConfigError(
            f"input_shape must be (channels, height, width), got {args['input_shape']!r}")
    check_positive_int("num_classes", args["num_classes"])
    STEMS.get(args["stem"])
    check_positive_int("stem_width", args["stem_width"])
    return shape


def adapt_to_stages(stages: int, widths: Sequence[Any], strides: Sequence[Any]
                    ) -> tuple[list[Any], list[Any]]:
    """The default per-stage lists fitted to ``stages`` (used when only ``stages`` is given).

    Fewer stages keep the first ones; each extra stage doubles every width choice of the
    stage before it and halves the feature map (stride 2).
    """
    widths, strides = list(widths)[:stages], list(strides)[:stages]
    while len(widths) < stages:
        widths.append(tuple(2 * w for w in widths[-1]))
        strides.append(2)
    return widths, strides


def _stage_plan(args: Mapping[str, Any]) -> dict[str, Any]:
    """Per-stage widths and strides, and the depth bounds."""
    stages, widths, strides, depth = args["stages"], args["widths"], args["strides"], args["depth"]
    check_positive_int("stages", stages)
    if not isinstance(widths, Sequence) or isinstance(widths, str) or len(widths) != stages:
        raise ConfigError(
            f"widths must be a list of {stages} per-stage lists of width choices "
            f"(one per stage), got {widths!r}"
        )
    width_lists = tuple(
        _choices(f"widths[{i}]", [w] if isinstance(w, int) else w,
                 lambda v: check_positive_int("width", v))
        for i, w in enumerate(widths)
    )
    stride_list = _int_list("strides", strides)
    if len(stride_list) != stages:
        raise ConfigError(f"strides must have one stride per stage ({stages}), got {strides!r}")
    if isinstance(depth, int) and not isinstance(depth, bool):
        depth = (depth, depth)
    bounds = _int_list("depth", depth)
    if len(bounds) != 2 or bounds[0] > bounds[1]:
        raise ConfigError(f"depth must be (low, high) with 1 <= low <= high, got {depth!r}")
    return {"widths": width_lists, "strides": stride_list, "depth": tuple(bounds)}


def _option_choices(classes: Mapping[str, type], args: Mapping[str, Any]) -> dict[str, tuple]:
    """The choices of every option the chosen block types take (see the module docstring)."""
    extra = args.get("block_options") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"block_options must map option name -> choices, got {extra!r}")
    clash = sorted(set(extra) & set(OPTION_ARGS))
    if clash:
        raise ConfigError(
            f"give {clash[0]!r} choices with {OPTION_ARGS[clash[0]]}=, not block_options")
    choices: dict[str, tuple] = {}
    for cls in classes.values():
        for opt, defaults in cls.options.items():
            if opt in choices:
                if opt not in extra and opt not in OPTION_ARGS:  # union of defaults
                    choices[opt] += tuple(d for d in defaults if d not in choices[opt])
                continue
            if opt in OPTION_ARGS:
                arg = OPTION_ARGS[opt]
                choices[opt] = _choices(arg, args[arg], OPTION_CHECKS[opt])
            elif opt in extra:
                choices[opt] = _choices(f"block_options[{opt!r}]", extra[opt], lambda v: v)
            else:
                choices[opt] = tuple(defaults)
    return choices


def skeleton(args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``blocks`` space's arguments checked and normalised, cached per registry state.

    Args:
        args: The full arguments of :func:`blocks` (``SearchSpace.arguments()``); default
            ``widths`` and ``strides`` are fitted to ``stages`` (:func:`adapt_to_stages`).

    Returns:
        ``{"shape", "widths", "strides", "depth", "types", "attentions", "options",
        "shortcut"}``.

    Raises:
        ConfigError, RegistryError: naming the bad argument.
    """
    key = (repr(sorted(args.items())), BLOCKS.version, ATTENTIONS.version, STEMS.version)
    sk = _SKELETONS.get(key)
    if sk is None:  # validate a skeleton once, not on every sample
        if args["widths"] is _DEFAULT_WIDTHS and args["strides"] is _DEFAULT_STRIDES:
            args = {**args, **dict(zip(("widths", "strides"), adapt_to_stages(
                args["stages"], args["widths"], args["strides"]), strict=True))}
        shape = _check_context(args)
        plan = _stage_plan(args)
        types = _choices("block_types", args["block_types"], lambda v: v)
        classes = {name: BLOCKS.get(name) for name in types}
        atts = _choices("attentions", args["attentions"], lambda v: v)
        for a in atts:
            ATTENTIONS.get(a)
        for name, cls in classes.items():
            small = [w for ws in plan["widths"] for w in ws if w < cls.min_width]
            if small:
                raise ConfigError(
                    f"block {name!r} needs width >= {cls.min_width}; widths has {small[0]}")
            check_shortcut(name, cls, args["shortcut"])
        sk = _SKELETONS[key] = {"shape": shape, **plan, "types": types, "attentions": atts,
                                "options": _option_choices(classes, args),
                                "shortcut": args["shortcut"]}
    return sk


# ---- the space --------------------------------------------------------------------------
#: Validated skeletons by (arguments, registry versions): a re-registered block invalidates.
_SKELETONS: dict[tuple, dict[str, Any]] = {}
_DEFAULT_WIDTHS = ((8, 12, 16), (16, 24, 32), (32, 48, 64))
_DEFAULT_STRIDES = (1, 2, 2)


@register_space("blocks")
def blocks(
    s: Sampler,
    input_shape: Sequence[int] = (1, 8, 8),
    num_classes: int = 10,
    *,
    stem: str = "conv3",
    stem_width: int = 8,
    stages: int = 3,
    widths: Sequence[Sequence[int]] = _DEFAULT_WIDTHS,
    strides: Sequence[int] = _DEFAULT_STRIDES,
    depth: Sequence[int] = (1, 3),
    block_types: Sequence[str] = BUILTIN_BLOCKS,
    kernels: Sequence[int] = (3, 5),
    expansions: Sequence[int] = (1, 2, 4),
    attentions: Sequence[str] = ("none", "se", "eca"),
    growths: Sequence[int] = (4, 8, 12),
    cardinalities: Sequence[int] = (2, 4, 8),
    variants: Sequence[str] = ("5x5", "double3x3"),
    block_options: Mapping[str, Sequence[Any]] | None = None,
    shortcut: str = "own",
) -> BlockNet | None:
    """Macro space of stages of registered blocks (see the module docstring).

    The defaults suit scikit-learn digits (1x8x8, 10 classes): 8x8 -> 8x8 -> 4x4 -> 2x2,
    about 0.1-2 M MACs per image (median ~0.9 M), so 10 epochs on 1,257 images take
    seconds on a CPU.

    Args:
        s: The sampler.
        input_shape: ``(C, H, W)`` of one input.
        num_classes: Outputs of the linear head.
        stem: Registered stem (``conv3`` or ``imagenet``).
        stem_width: Stem output channels.
        stages: Number of stages. Given alone (no ``widths``/``strides``), the default
            per-stage lists are fitted to it by :func:`adapt_to_stages`.
        widths: Per stage, the width choices.
        strides: Per stage, the stride of its first block.
        depth: ``(low, high)`` blocks per stage (dense: dense layers per stage).
        block_types: Registered block names to choose from.
        kernels, expansions, growths, cardinalities, variants: Choices of those options.
        attentions: Registered attention names (``none``, ``se``, ``eca``).
        block_options: Choices of other options of user blocks (default: their defaults).
        shortcut: ``own`` (each block type's own shortcut) or ``shared`` (every block adds
            the stage position's projection shortcut that the ResNet types use: one residual
            stream whatever the block type; dense and inception become residual, preact and
            strided mbconv get a 1x1 conv + BN projection). ``shared`` is what a supernet
            trains well: see results/benchmarks/supernet_digits.md.

    Returns:
        The network, or None when ``s.build`` is False.
    """
    sk = skeleton({
        "input_shape": input_shape, "num_classes": num_classes, "stem": stem,
        "stem_width": stem_width, "stages": stages, "widths": widths, "strides": strides,
        "depth": depth, "block_types": block_types, "attentions": attentions, "kernels": kernels,
        "expansions": expansions, "growths": growths, "cardinalities": cardinalities,
        "variants": variants, "block_options": block_options, "shortcut": shortcut,
    })
    plan = []
    for i in range(1, stages + 1):
        p = f"stage{i}."
        name = s.choice(p + "block", sk["types"])
        d = s.integer(p + "depth", *sk["depth"])
        w = s.choice(p + "width", sk["widths"][i - 1])
        opts = {o: s.choice(p + o, sk["options"][o]) for o in BLOCKS.get(name).options}
        att = s.choice(p + "attention", sk["attentions"])
        plan.append((name, d, w, opts, att))
    if not s.build:
        return None
    channels = stem_width
    body: list[nn.Module] = []
    for (name, d, w, opts, att), stride in zip(plan, sk["strides"], strict=True):
        stage = candidate(build_stage(name, channels, w, stride, d, attention=att,
                                      shortcut=sk["shortcut"], **opts), name)
        body.append(stage)
        channels = block_out_channels(name, w, **opts)
    return BlockNet(STEMS.get(stem)(sk["shape"][0], stem_width), body, channels, num_classes)


# ---- reference skeleton and architectures -----------------------------------------------
RESNET_SKELETON: dict[str, Any] = {
    "input_shape": (3, 224, 224),
    "num_classes": 1000,
    "stem": "imagenet",
    "stem_width": 64,
    "stages": 4,
    "widths": ((32, 64, 128), (64, 128, 256), (128, 256, 512), (256, 512, 1024)),
    "strides": (1, 2, 2, 2),
    "depth": (1, 8),
    "block_types": ("basic", "bottleneck", "resnext"),
    "kernels": (3, 5),
    "expansions": (2, 4),
    "cardinalities": (32,),
    "attentions": ("none", "se", "eca"),
}
"""ImageNet ResNet-family skeleton containing ResNet-18/34/50 and ResNeXt-50 (32x4d)."""

SUPERNET_SKELETON: dict[str, Any] = {
    "block_types": ("basic", "mbconv"),
    "kernels": (3, 5),
    "attentions": ("none",),
    "shortcut": "shared",
}
"""Supernet-friendly sub-space of the default skeleton (OFA-style: two block types with
elastic width, depth, kernel and expansion, no attention, one shared residual stream:
strided mbconv blocks add the stage's projection as basic blocks do); see
results/benchmarks/supernet_digits.md for how its supernet ranks children."""
