"""Latency units: the building units a network is cut into for a latency table.

The cut is derived from the built network, so custom spaces need nothing extra:

* the positions where the space chooses (modules marked with ``candidate``, as the
  supernet uses) are units; a chosen plain ``nn.Sequential``/``nn.ModuleList`` of
  non-``torch.nn`` modules (a stage of blocks) gives one unit per block;
* a module holding no choice (stem, reduction block, pooling, classifier) is one unit;
* a module holding choices deeper (a cell, the network) is cut through;
* in a network with no ``candidate`` marks at all, the children of ``nn.Sequential`` /
  ``nn.ModuleList`` / ``nn.ModuleDict`` containers (from the root down) are the units.

A unit call is keyed by the module's structure (classes, scalar attributes, parameter and
buffer shapes) and its inputs (shapes, non-tensor values): equal keys run the same work.
What runs outside every unit (residual adds of a cell, ``flatten``) is left to the
table's fitted per-network constant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cellblock.search_spaces.tags import tag_of

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_SCALARS = (int, float, str, bool, type(None))


@dataclass(frozen=True)
class UnitCall:
    """One call of a unit during a forward pass.

    Attributes:
        key: 16 hex digits identifying the work (structure + inputs).
        label: Human-readable name, e.g. ``MBConv 1x16x8x8 -> 1x24x4x4 (1,234 params)``.
        path: Where the module sits in the network (``stages.1.0``).
        args: Input spec: ``("tensor", shape, dtype)`` or ``("value", v)`` per argument.
    """

    key: str
    label: str
    path: str
    args: tuple


def _builtin(m: nn.Module) -> bool:
    return type(m).__module__.startswith("torch.")


def _has_choice(m: nn.Module) -> bool:
    return any(tag_of(x) is not None for x in m.modules())


def unit_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of the units of ``model`` (see the module docstring)."""
    out: list[tuple[str, nn.Module]] = []
    tagged = _has_choice(model)

    def walk(path: str, m: nn.Module) -> None:
        kids = list(m.named_children())
        if tagged:
            if tag_of(m) is not None:
                if type(m) in (nn.Sequential,
                               nn.ModuleList) and not all(_builtin(c) for _, c in kids):
                    for name, c in kids:
                        walk(f"{path}.{name}" if path else name, c)
                    return
                out.append((path, m))
                return
            if not _has_choice(m) or not kids:
                out.append((path, m))
                return
        elif (path and type(m) not in _CONTAINERS) or not kids:
            out.append((path, m))
            return
        for name, c in kids:
            walk(f"{path}.{name}" if path else name, c)

    walk("", model)
    return out


def _describe_value(v: Any) -> Any:
    if isinstance(v, _SCALARS):
        return v
    if isinstance(v, (tuple, list)) and all(isinstance(x, _SCALARS) for x in v):
        return list(v)
    return None


def structure(module: nn.Module) -> str:
    """Text of everything that decides a module's work except its inputs."""
    parts = []
    for name, m in module.named_modules():
        attrs = sorted((k, _describe_value(v)) for k, v in vars(m).items()
                       if not k.startswith("_") and k != "training"
                       and _describe_value(v) is not None)
        params = [(n, tuple(p.shape)) for n, p in m.named_parameters(recurse=False)]
        bufs = [(n, tuple(b.shape)) for n, b in m.named_buffers(recurse=False) if b is not None]
        cls = type(m)
        parts.append(repr((name, f"{cls.__module__}.{cls.__qualname__}", attrs, params, bufs)))
    return "\n".join(parts)


def _arg_spec(a: Any) -> tuple:
    if isinstance(a, torch.Tensor):
        return ("tensor", tuple(int(s) for s in a.shape), str(a.dtype).replace("torch.", ""))
    return ("value", _describe_value(a) if _describe_value(a) is not None else repr(a))


def _shape_text(shape: tuple) -> str:
    return "x".join(map(str, shape))


def _out_shape(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return _shape_text(tuple(out.shape))
    if isinstance(out, (tuple, list)):
        return ",".join(_out_shape(o) for o in out)
    return type(out).__name__


def trace_units(model: nn.Module, input_shape: tuple, batch_size: int = 1) -> list[UnitCall]:
    """The unit calls of one forward pass of ``model`` (on its own device, meta included).

    The model runs in eval mode under ``torch.no_grad``; its training flag is restored.
    """
    units = unit_modules(model)
    calls: list[UnitCall] = []
    pending: dict[int, list[tuple]] = {}
    handles = []
    memo: dict[int, str] = {}

    def pre(mod: nn.Module, args: tuple, path: str = "") -> None:
        pending.setdefault(id(mod), []).append((path, tuple(_arg_spec(a) for a in args)))

    def post(mod: nn.Module, args: tuple, out: Any) -> None:
        path, spec = pending[id(mod)].pop()
        if id(mod) not in memo:
            memo[id(mod)] = structure(mod)
        key = hashlib.sha256(f"{memo[id(mod)]}\n{spec!r}".encode()).hexdigest()[:16]
        tag = tag_of(mod)
        ins = ",".join(_shape_text(s[1]) if s[0] == "tensor" else repr(s[1]) for s in spec)
        params = sum(p.numel() for p in mod.parameters())
        name = f"{type(mod).__name__}{f'[{tag}]' if tag else ''}"
        label = f"{name} {ins} -> {_out_shape(out)} ({params:,} params)"
        calls.append(UnitCall(key, label, path, spec))

    for path, m in units:
        handles.append(m.register_forward_pre_hook(lambda mod, a, _p=path: pre(mod, a, _p)))
        handles.append(m.register_forward_hook(post))
    was_training = model.training
    dev = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(batch_size, *map(int, input_shape), device=dev))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls


def make_inputs(args: tuple, device: torch.device, seed: int = 0) -> tuple:
    """Random inputs matching a unit call's ``args`` spec."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for a in args:
        if a[0] == "tensor":
            dtype = getattr(torch, a[2])
            t = torch.randn(*a[1], generator=gen) if dtype.is_floating_point else torch.zeros(*a[1])
            out.append(t.to(device=device, dtype=dtype))
        else:
            out.append(a[1])
    return tuple(out)
