"""Candidate tags: the one hook a space gives the supernet.

A space marks a module that is one candidate among several at a searchable position
with :func:`candidate` (``candidate(make_op(op, c), op)``). In a normal build the tag is a
plain attribute and changes nothing. The supernet keys every parameter by its name in
the normally built network plus the tags of the modules around it, so candidates with
different tags never share weights, while everything else (the same block type at any
width, kernel, expansion or depth position) shares one tensor by slicing.

A module marked with :func:`shared` is the exception: its tensors are keyed without the
tags around it, so every candidate of the position uses the same tensor (the projection
shortcut that all residual block types of a stage add their branch to).

This module imports nothing from the engine so that spaces can import it freely.
"""

from __future__ import annotations

from typing import Any, TypeVar

TAG_ATTR = "_supernet_tag"
SHARED_ATTR = "_supernet_shared"

M = TypeVar("M")


def candidate(module: M, tag: Any) -> M:
    """Mark ``module`` as the candidate ``tag`` of its position; return it."""
    object.__setattr__(module, TAG_ATTR, str(tag))
    return module


def tag_of(module: Any) -> str | None:
    """The tag set by :func:`candidate`, or None."""
    # the instance dict first: on an nn.Module a missing attribute goes through
    # Module.__getattr__, which builds an AttributeError (slow on every module of a child)
    found = getattr(module, "__dict__", {}).get(TAG_ATTR)
    return found if found is not None else getattr(type(module), TAG_ATTR, None)


def shared(module: M) -> M:
    """Mark ``module`` as shared by the candidates around it (keyed without their tags)."""
    object.__setattr__(module, SHARED_ATTR, True)
    return module


def is_shared(module: Any) -> bool:
    """Whether :func:`shared` marked ``module``."""
    return bool(
        getattr(module, "__dict__", {}).get(SHARED_ATTR, getattr(type(module), SHARED_ATTR, False)))
