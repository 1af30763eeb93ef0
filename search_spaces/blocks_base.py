"""The block API of the ``blocks`` space: :class:`Block`, the :data:`BLOCKS` registry, stages.

The built-in blocks are in :mod:`.blocks` (which re-exports this module's names).

Every block is an ``nn.Module`` subclass of :class:`Block` with one constructor::

    Block(in_channels, width, stride, *, attention="none", **options)

Its class attribute ``options`` maps each option it takes to that option's default choices
(e.g. ``{"kernel": (3, 5, 7)}``), ``out_channels(width, **options)`` gives its output
channels, and ``make_stage(in_channels, width, stride, depth, ...)`` builds a stage of
``depth`` blocks (the first one strided). Register your own with one decorator::

    @register_block("myblock")
    class MyBlock(Block):
        options = {"kernel": (3, 5)}

        def __init__(self, in_channels, width, stride=1, *, attention="none", kernel=3):
            ...

Attention (``none`` / ``se`` / ``eca``) is applied at the end of the residual branch,
before the addition (after the depthwise conv in MBConv).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from cellblock.core.errors import ConfigError, SpaceError
from cellblock.core.registry import Registry
from cellblock.search_spaces.domains import Value

RESERVED_OPTIONS = frozenset({"block", "depth", "width", "attention", "stride", "shortcut"})
#: Shortcut kinds of the ``blocks`` space (its ``shortcut`` skeleton argument): ``own`` (each
#: block type's own shortcut, as in its paper) and ``shared`` (every block adds the stage
#: position's projection of its input, ``downsample``, the one the ResNet types use: one
#: residual stream for every block type, which a supernet trains far better).
SHORTCUTS = ("own", "shared")


def check_positive_int(what: str, value: Any) -> int:
    """Return ``value`` if it is an int >= 1, else raise ConfigError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive int, got {value!r}")
    return value


def check_kernel(value: Any) -> int:
    """Return ``value`` if it is a positive odd int (``padding = k // 2`` keeps sizes)."""
    check_positive_int("kernel", value)
    if value % 2 == 0:
        raise ConfigError(f"kernel must be odd (1, 3, 5, 7...), got {value}")
    return value


class Block(nn.Module):
    """Base class of searchable blocks.

    Attributes:
        options: Option name -> default choices (JSON scalars), in decision order.
        min_width: Smallest width the block accepts (the space checks its widths).
        shortcuts: The :data:`SHORTCUTS` the block can build; a block listing ``shared``
            takes a ``shortcut`` keyword (``"own"`` or ``"shared"``) in its constructor.
    """

    options: ClassVar[dict[str, tuple[Value, ...]]] = {}
    min_width: ClassVar[int] = 1
    shortcuts: ClassVar[tuple[str, ...]] = ("own",)

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, *, attention: str = "none"
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("width", width)
        check_positive_int("stride", stride)

    @classmethod
    def out_channels(cls, width: int, **options: Any) -> int:
        """Output channels of the block for ``width`` and ``options`` (default: ``width``)."""
        return width

    def last_norm(self) -> nn.Module | None:
        """The normalisation closing the residual branch, or None without such a branch.

        A supernet starts this norm's scale at zero (Goyal et al. 2017), so a sampled
        block begins as its shortcut and elastic depth does not blow up activations.
        """
        return None

    @classmethod
    def make_stage(
        cls,
        in_channels: int,
        width: int,
        stride: int,
        depth: int,
        *,
        attention: str = "none",
        **options: Any,
    ) -> nn.Sequential:
        """``depth`` blocks in sequence; the first has ``stride``, the others stride 1."""
        check_positive_int("depth", depth)
        layers = []
        for i in range(depth):
            layers.append(
                cls(in_channels, width, stride if i == 0 else 1, attention=attention, **options)
            )
            in_channels = cls.out_channels(width, **options)
        return nn.Sequential(*layers)


BLOCKS: Registry[type[Block]] = Registry("block")


def register_block(name: str) -> Callable[[type[Block]], type[Block]]:
    """Decorator registering a :class:`Block` subclass under ``name``.

    Raises:
        SpaceError: if the class is not a Block or its ``options`` are malformed.
        RegistryError: if ``name`` is already registered.
    """

    def add(cls: type[Block]) -> type[Block]:
        if not (isinstance(cls, type) and issubclass(cls, Block)):
            raise SpaceError(f"block {name!r} must be a subclass of cellblock Block, got {cls!r}")
        if not isinstance(cls.options, dict):
            raise SpaceError(f"block {name!r}: options must be a dict of name -> default choices")
        for opt, choices in cls.options.items():
            if not isinstance(opt, str) or not opt.isidentifier() or opt in RESERVED_OPTIONS:
                raise SpaceError(
                    f"block {name!r}: option name {opt!r} must be an identifier and not one of "
                    f"{sorted(RESERVED_OPTIONS)}"
                )
            if not isinstance(choices, (tuple, list)) or not choices:
                raise SpaceError(
                    f"block {name!r}: option {opt!r} needs a non-empty tuple of default "
                    f"choices, got {choices!r}"
                )
            bad = [c for c in choices if not isinstance(c, (str, int, float, bool, type(None)))]
            if bad:
                raise SpaceError(
                    f"block {name!r}: option {opt!r} choices must be JSON scalars, got {bad[0]!r}"
                )
        return BLOCKS.register(name, cls)  # type: ignore[return-value]

    return add


def _check_options(name: str, cls: type[Block], options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        allowed = ", ".join(cls.options) or "(none)"
        raise ConfigError(f"block {name!r} has no option {unknown[0]!r}; its options: {allowed}")


def block_out_channels(name: str, width: int, **options: Any) -> int:
    """Output channels of the registered block ``name`` for ``width`` and ``options``."""
    cls = BLOCKS.get(name)
    _check_options(name, cls, options)
    return cls.out_channels(width, **options)


def build_stage(
    name: str,
    in_channels: int,
    width: int,
    stride: int,
    depth: int,
    *,
    attention: str = "none",
    shortcut: str = "own",
    **options: Any,
) -> nn.Sequential:
    """A stage of ``depth`` registered ``name`` blocks (see :meth:`Block.make_stage`).

    ``shortcut`` is one of :data:`SHORTCUTS`; anything but ``own`` is passed to the block.

    Raises:
        RegistryError: unknown block name (lists known ones).
        ConfigError: an option the block does not take, a shortcut it cannot build, or a
            bad value.
    """
    cls = BLOCKS.get(name)
    _check_options(name, cls, options)
    check_shortcut(name, cls, shortcut)
    if shortcut != "own":
        options = {**options, "shortcut": shortcut}
    return cls.make_stage(in_channels, width, stride, depth, attention=attention, **options)


def check_shortcut(name: str, cls: type[Block], shortcut: Any) -> str:
    """Return ``shortcut`` if block ``name`` can build it, else raise ConfigError."""
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"shortcut must be one of {list(SHORTCUTS)}, got {shortcut!r}")
    if shortcut not in cls.shortcuts:
        raise ConfigError(f"block {name!r} cannot build the {shortcut!r} shortcut (its shortcuts: "
                          f"{list(cls.shortcuts)}); use shortcut=own or other block_types")
    return shortcut
