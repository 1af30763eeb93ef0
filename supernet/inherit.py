"""Inherited weights: a child's stand-alone network with its supernet weights, to export or
fine-tune.

``cellblock export --supernet CKPT`` and ``cellblock train --init supernet:CKPT`` use
:func:`inherited_state`: the state dict of ``Supernet.extract(arch)`` (the child's own
sub-supernet for a few-shot checkpoint), checked against the space it is used with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cellblock.core.errors import ConfigError

#: Prefix of ``cellblock train --init``'s value naming a supernet checkpoint.
INIT_PREFIX = "supernet:"


def parse_init(value: str | None) -> str | None:
    """The checkpoint path of ``--init supernet:CKPT`` (None for no ``--init``).

    Raises:
        ConfigError: for another form.
    """
    if value is None:
        return None
    if not value.startswith(INIT_PREFIX) or not value[len(INIT_PREFIX):]:
        raise ConfigError(f"--init must look like 'supernet:PATH' (a 'cellblock supernet train' "
                          f"checkpoint), got {value!r}")
    return value[len(INIT_PREFIX):]


def inherited_state(path: str | Path, space: Any, arch: Mapping[str, Any],
                    val_fraction: Any = ...) -> dict[str, torch.Tensor]:
    """``extract(arch)``'s state dict (CPU, contiguous) from the checkpoint at ``path``.

    Args:
        path: The supernet checkpoint.
        space: The space ``arch`` belongs to (must be the checkpoint's, same skeleton).
        arch: The architecture.
        val_fraction: When given, the split the weights will be validated on; it must be
            the supernet's, else validation images may be ones it trained on.

    Raises:
        ConfigError: missing/corrupt checkpoint, another space or skeleton, another split.
    """
    from cellblock.supernet.checkpoint import check_space, plain
    from cellblock.supernet.evaluator import cached_supernet

    supernet, ckpt = cached_supernet(path, torch.device("cpu"))
    # the same full arguments (defaults spelled out or not: an --arch export leaves
    # input_shape / num_classes at the space's defaults)
    if (supernet.space.ref != space.ref
            or plain(supernet.space.arguments()) != plain(space.arguments())):
        check_space(ckpt, space, path)
    if val_fraction is not ... and val_fraction != ckpt.val_fraction:
        raise ConfigError(
            f"supernet checkpoint {str(path)!r} was trained with val_fraction "
            f"{ckpt.val_fraction}, this run uses {val_fraction}: its validation images "
            "may be ones the supernet trained on; use a supernet trained on the run's split"
        )
    space.validate(arch)
    model = supernet.extract(arch)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def attach_supernet_weights(items: Sequence[Any], path: str | Path) -> None:
    """Give every export item its inherited weights (the export saves them as
    ``<label>/inherited.pt`` beside its files)."""
    for item in items:
        item.state = inherited_state(path, item.space, item.arch)
        item.state_source = f"inherited from supernet {str(path)!r}"
        item.weights = None
