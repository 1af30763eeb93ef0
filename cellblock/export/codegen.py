"""Standalone PyTorch source for a built network: torch.fx forward + a tree of torch.nn layers.

The network is traced with :func:`torch.fx.symbolic_trace`: custom modules (blocks,
attention...) are inlined into one plain ``forward`` calling ``torch`` functions and
the network's ``torch.nn`` leaf layers by their attribute paths. Each leaf layer is
re-created from its constructor arguments, read back from the layer's attributes and
checked by re-building it (same ``repr``, same parameter and buffer shapes). The
generated file imports only ``torch``; its state dict has the same keys as the
original network's, so the original weights load with ``strict=True``.
"""

from __future__ import annotations

import inspect
import json
import math
import pprint
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn

from cellblock.core.errors import ExportError

#: Constant tensors created inside ``forward`` are embedded in the source up to this size.
MAX_EMBEDDED_CONSTANT = 4096


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; on failure name the innermost module that cannot be traced.

    Raises:
        ExportError: naming the module path and class that torch.fx cannot trace.
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001  (any tracing failure becomes one clear error)
        path, cls, why = _untraceable(model, exc)
        raise ExportError(
            f"module {path or '<root>'!r} ({cls}) cannot be traced by torch.fx ({why}); "
            "remove data-dependent Python control flow from its forward to export it"
        ) from exc
    # drop annotations (strings under `from __future__ import annotations`)
    for node in gm.graph.nodes:
        node.type = None
    gm.recompile()
    return gm


def _untraceable(model: nn.Module, exc: BaseException) -> tuple[str, str, str]:
    """(path, class name, reason) of the deepest custom submodule that fails to trace."""
    found = ("", type(model).__name__, _one_line(exc))
    for path, sub in model.named_modules():
        if not path or type(sub).__module__.startswith("torch."):
            continue
        try:
            fx.symbolic_trace(sub)
        except Exception as sub_exc:  # noqa: BLE001
            if path.startswith(found[0]) and len(path) >= len(found[0]):
                found = (path, type(sub).__name__, _one_line(sub_exc))
    return found


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


# ---- literals ----------------------------------------------------------------------------
def literal(value: Any) -> str:
    """Python source of a JSON-like constant (ints, floats, bools, str, None, tuples, lists).

    Raises:
        ExportError: for any other value.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, torch.dtype):
        return str(value)
    raise ExportError(f"value {value!r} of type {type(value).__name__} cannot be written as source")


def _class_ref(cls: type) -> str:
    """Source reference of a torch class (``torch.nn.Conv2d``)."""
    module = cls.__module__
    if not module.startswith("torch"):
        raise ExportError(f"layer class {cls.__qualname__} from {module} is not part of torch")
    if getattr(torch.nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


def constructor_args(layer: nn.Module) -> dict[str, Any]:
    """Constructor arguments of a ``torch.nn`` layer, read from its attributes and verified.

    Raises:
        ExportError: if an argument cannot be recovered, or the re-built layer differs.
    """
    cls = type(layer)
    args: dict[str, Any] = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("device", "dtype"):
            continue
        if p.name == "bias" and isinstance(p.default, bool):
            value: Any = getattr(layer, "bias", None) is not None
        elif hasattr(layer, p.name):
            value = getattr(layer, p.name)
        elif p.default is not p.empty:
            continue
        else:
            raise ExportError(
                f"cannot recover argument {p.name!r} of {cls.__name__} from its attributes")
        literal(value)  # raises for non-literal values
        if p.default is not p.empty and _equal(value, p.default):
            continue  # defaults are left out: the source then also runs on other torch versions
        args[p.name] = value
    rebuilt = cls(**args)
    same_tensors = [(k, tuple(v.shape), v.dtype) for k, v in rebuilt.state_dict().items()] == [
        (k, tuple(v.shape), v.dtype) for k, v in layer.state_dict().items()
    ]
    if repr(rebuilt) != repr(layer) or not same_tensors:
        raise ExportError(
            f"re-building {cls.__name__} from {args} gives {rebuilt!r}, not {layer!r}; "
            "this layer type cannot be exported as source"
        )
    return args


def _equal(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _leaf_source(layer: nn.Module) -> str:
    args = ", ".join(f"{k}={literal(v)}" for k, v in constructor_args(layer).items())
    return f"{_class_ref(type(layer))}({args})"


def _tensor_source(gm: fx.GraphModule, target: str) -> str:
    """Source creating the attribute ``target`` (parameter, buffer or small constant)."""
    owner_path, _, name = target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    value = getattr(owner, name)
    if not isinstance(value, torch.Tensor):
        raise ExportError(
            f"attribute {target!r} used by forward is not a tensor ({type(value).__name__})")
    shape, dtype = literal(tuple(value.shape)), literal(value.dtype)
    if name in owner._parameters:
        grad = literal(bool(value.requires_grad))
        return f"torch.nn.Parameter(torch.empty({shape}, dtype={dtype}), requires_grad={grad})"
    if name in owner._buffers and name not in owner._non_persistent_buffers_set:
        return f"torch.empty({shape}, dtype={dtype})"
    if value.numel() > MAX_EMBEDDED_CONSTANT:  # a constant, or a buffer outside the state dict
        raise ExportError(
            f"constant tensor {target!r} used in forward has {value.numel()} elements; "
            "register it as a (persistent) buffer so that it is saved with the weights"
        )
    data = literal(value.detach().cpu().tolist())
    return f"_Constant(torch.tensor({data}, dtype={dtype}))"


# ---- the source file ---------------------------------------------------------------------
_PRELUDE = '''
def _attach(root: torch.nn.Module, path: str, obj: object) -> None:
    """Register ``obj`` (layer, parameter or buffer) under the dotted ``path`` of ``root``."""
    *parents, leaf = path.split(".")
    for name in parents:
        if name not in root._modules:
            root.add_module(name, torch.nn.Module())
        root = root._modules[name]
    if isinstance(obj, torch.nn.Module):
        root.add_module(leaf, obj)
    elif isinstance(obj, torch.nn.Parameter):
        root.register_parameter(leaf, obj)
    elif isinstance(obj, _Constant):
        root.register_buffer(leaf, obj.value, persistent=False)
    else:
        root.register_buffer(leaf, obj)


class _Constant:
    """A constant tensor of forward (a buffer outside the state dict)."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value
'''

_BUILD = '''

def build(weights: str | None = None) -> Net:
    """The network in eval mode; loads a ``state_dict`` file (``weights.pt``) if given."""
    net = Net()
    if weights is not None:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()
'''


def _global_definitions(src: str, globals_: Mapping[str, Any]) -> list[str]:
    """Definitions of the names the forward code uses besides ``torch`` (only torch objects)."""
    lines = []
    for name, obj in globals_.items():
        if name in ("__builtins__", "torch") or not re.search(rf"\b{re.escape(name)}\b", src):
            continue
        if obj is type(None):
            lines.append(f"{name} = type(None)")
        elif isinstance(obj, float):
            lines.append(f"{name} = {literal(obj)}")
        elif isinstance(obj, str):
            lines.append(f"{name} = {obj!r}")
        elif inspect.ismodule(obj) and obj.__name__.startswith("torch"):
            lines.append(f"import {obj.__name__} as {name}")
        elif getattr(obj, "__module__", "") in ("builtins", "math", "operator"):
            lines.append(f"from {obj.__module__} import {obj.__name__} as {name}")
        elif str(getattr(obj, "__module__", "")).startswith("torch"):
            lines.append(f"import {obj.__module__}\n{name} = {obj.__module__}.{obj.__qualname__}")
        else:
            raise ExportError(
                f"the traced forward calls {name!r} from {getattr(obj, '__module__', '?')}, "
                "which is not part of torch; only torch operations can be exported as source"
            )
    return lines


def generate_source(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    title: str = "network",
    meta: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
) -> str:
    """Python source defining ``Net``, ``build(weights=None)``, ``INPUT_SHAPE``, ``PREPROCESSING``
    and ``preprocess``; imports torch only.

    Args:
        model: The network (its ``torch.nn`` layers become the generated module tree).
        input_shape: ``(C, H, W)`` of one input.
        title: Words for the module docstring.
        meta: JSON-able facts stored as ``META`` (arch, arch_id, space...).
        preprocessing: The input normalisation record (:mod:`cellblock.export.preprocess`),
            stored as ``PREPROCESSING`` with a ``preprocess`` function; None records none.

    Raises:
        ExportError: if the network cannot be traced or a layer cannot be re-created.
    """
    gm = trace(model)
    code = gm.graph.python_code(root_module="self")
    src = code.src.strip("\n")
    defs = _global_definitions(src, code.globals)
    attach: list[str] = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            layer = gm.get_submodule(node.target)
            if not type(layer).__module__.startswith("torch."):
                raise ExportError(
                    f"module {node.target!r} ({type(layer).__name__}) is a leaf of the trace "
                    "but not a torch layer"
                )
            line = f"_attach(self, {node.target!r}, {_leaf_source(layer)})"
        elif node.op == "get_attr":
            line = f"_attach(self, {node.target!r}, {_tensor_source(gm, node.target)})"
        else:
            continue
        if line not in attach:
            attach.append(line)
    meta_src = pprint.pformat(json.loads(json.dumps(dict(meta or {}))), sort_dicts=True, width=96)
    body = "\n".join(f"        {line}" for line in attach) or "        pass"
    forward = "\n".join(("    " + line) if line.strip() else "" for line in src.splitlines())
    from cellblock.export.preprocess import source_lines

    prep_doc, prep_src = source_lines(preprocessing)
    parts = [
        f'"""Standalone {title}, generated by ``cellblock export``; needs only PyTorch.\n\n'
        "Usage::\n\n"
        "    import model\n"
        '    net = model.build("weights.pt")  # eval mode\n'
        "    logits = net(model.preprocess(images))  # images: e.g. uint8 (N, H, W[, C])\n\n"
        f"{prep_doc}\n"
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import torch",
        *defs,
        "",
        f"INPUT_SHAPE = {literal(tuple(int(v) for v in input_shape))}",
        f"META = {meta_src}",
        prep_src,
        _PRELUDE,
        "",
        "class Net(torch.nn.Module):",
        '    """The network: torch.nn layers under their original names, forward from torch.fx."""',
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        body,
        "",
        forward,
        _BUILD,
    ]
    return "\n".join(parts)
