"""Round-trip verification of ``cellblock export``: the reference network and the checks.

:func:`make_reference` builds an architecture with its weights (trained, or fresh with
random BN tensors) and measures its params, MACs and outputs on a fixed random input;
:func:`compare` judges an exported copy against it (max abs output diff <= :data:`ATOL`).
:mod:`cellblock.export.clean_check` loads PyTorch-source and TorchScript exports in a separate
interpreter that cannot import cellblock, and :func:`onnx_macs` counts the MACs of an ONNX
graph. The formats themselves (writing the
files) live in :mod:`cellblock.export`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellblock.core.errors import ExportError
from cellblock.export.preprocess import check_input, with_preprocessing

#: Max abs difference allowed between original and exported outputs (fp32, eval mode).
ATOL = 1e-5
CHECK_BATCH = 2


@dataclass
class ExportItem:
    """One architecture to export, with what is known about it."""

    label: str
    arch: dict[str, Any]
    space: Any  # SearchSpace
    seed: int
    trial: Any = None  # records.Trial or None
    weights: Path | None = None  # trained state_dict, if any
    #: Original label of each class index, when the run remapped its labels (--remap-labels).
    class_labels: tuple[str, ...] = ()
    #: Weights given in memory (e.g. inherited from a supernet), saved beside the export.
    state: Any = None
    #: Where :attr:`state` comes from, for the report.
    state_source: str = ""
    #: The input normalisation of training (:mod:`cellblock.export.preprocess`), or None.
    preprocessing: dict[str, Any] | None = None


@dataclass
class Reference:
    """The original network and its measured facts, shared by the format checks."""

    item: ExportItem
    model: nn.Module
    input_shape: tuple[int, ...]
    params: int
    macs: int
    x: torch.Tensor
    y: torch.Tensor
    weights_source: str


# ---- the reference network ---------------------------------------------------------------
def fresh_weights(model: nn.Module, input_shape: Sequence[int], seed: int) -> None:
    """Untrained weights with distinct, non-trivial BN tensors, so the round trip checks them.

    BN affine parameters are drawn at random and BN running statistics are estimated on
    two random batches (cumulative average), which keeps eval-mode outputs well scaled.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in bns:
            if bn.affine:
                bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=gen))
                bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=gen))
            bn.reset_running_stats()
            bn.momentum = None
        was = model.training
        model.train()
        for _ in range(2):
            model(torch.randn(8, *input_shape, generator=gen))
        model.train(was)
    for bn in bns:
        bn.momentum = 0.1


def make_reference(item: ExportItem) -> Reference:
    """Build ``item``'s network with its weights (and its input normalisation as the first
    step); measure params, MACs and outputs on an input in the recorded value range."""
    from cellblock.evaluators.cost import count_macs, count_params

    torch.manual_seed(item.seed)
    model = item.space.build(item.arch)
    input_shape = item.space.input_shape
    if item.state is not None:
        model.load_state_dict(item.state)
        source = f"{item.state_source} (saved as {item.label}/inherited.pt)"
    elif item.weights is not None:
        from cellblock.core.fileio import load_tensors

        state = load_tensors(item.weights, "weights file",
                             "train the trial again ('cellblock train') or delete it")
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as exc:
            raise ExportError(f"weights file {str(item.weights)!r} does not fit the architecture "
                              f"({str(exc).splitlines()[0]}); train the trial again or delete "
                              "it") from None
        source = f"trained ({item.weights})"
    else:
        fresh_weights(model, input_shape, item.seed)
        source = "untrained (fresh init, random BN affine, BN statistics from 16 random images)"
    model = with_preprocessing(model.cpu(), item.preprocessing).eval()
    x = check_input(item.preprocessing, tuple(input_shape), batch=CHECK_BATCH)
    with torch.no_grad():
        y = model(x)
    return Reference(item, model, input_shape, count_params(model), count_macs(model, input_shape),
                     x, y, source)


def compare(ref: Reference, params: int | None, macs: int | None,
            y: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """The round-trip comparison of one exported copy against the reference."""
    y = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
    same_shape = tuple(y.shape) == tuple(ref.y.shape)
    diff = float((y.float() - ref.y).abs().max()) if same_shape else float("inf")
    return {
        "params": params, "params_expected": ref.params, "params_ok": params == ref.params,
        "macs": macs, "macs_expected": ref.macs, "macs_ok": macs == ref.macs,
        "max_abs_diff": diff, "outputs_ok": diff <= ATOL,
    }

def onnx_macs(model_proto: Any) -> tuple[int | None, str]:
    """MACs per image of Conv/Gemm/MatMul nodes of a shape-inferred ONNX graph (batch = 1)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model_proto)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else 1
                          for d in v.type.tensor_type.shape.dim]
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    total, unknown = 0, sorted(
        {n.op_type for n in g.node
         if n.op_type in ("ConvTranspose", "Einsum", "LSTM", "GRU", "RNN")})
    for n in g.node:
        try:
            if n.op_type == "Conv":
                w, out = shapes[n.input[1]], shapes[n.output[0]]
                total += int(np.prod(out)) * int(np.prod(w[1:]))
            elif n.op_type in ("Gemm", "MatMul"):
                a, out = shapes[n.input[0]], shapes[n.output[0]]
                trans_a = any(at.name == "transA" and at.i for at in n.attribute)
                k = a[-2] if trans_a else a[-1]
                total += int(np.prod(out)) * int(k)
        except KeyError:
            return None, f"shape of {n.op_type} node {n.name!r} unknown after shape inference"
    if unknown:
        return None, f"ops not counted: {', '.join(unknown)}"
    return total, "Conv/Gemm/MatMul MACs from onnx shape inference (batch 1)"



def onnx_tensors_check(proto: Any, state: Mapping[str, torch.Tensor], param_names: Iterable[str]
                       ) -> dict[str, Any]:
    """Match a model's float tensors to an ONNX graph's initializers, by name then by value.

    The ONNX exporter merges bit-identical initializers (after training, a BN bias of a
    block and of its projection shortcut can be equal): the graph keeps one name and the
    other tensor is read through it. A tensor absent by name therefore counts when an
    initializer holds exactly its values (same dtype, shape and bytes); a merged tensor is
    counted once per name on both sides, so the counts compare like for like.

    Args:
        proto: The loaded ONNX model.
        state: The model's state dict (float tensors are checked).
        param_names: Names of the model's parameters (a subset of ``state``).

    Returns:
        ``params`` (elements of the parameters found), ``float_initializer_elements``
        (the float state-dict elements found), ``missing`` (names found nowhere) and
        ``merged`` (``name -> kept initializer`` for merged tensors) and ``extra`` (float
        initializers that are no tensor of ``state``).
    """
    import onnx
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer
             if t.data_type == onnx.TensorProto.FLOAT}
    by_value: dict[tuple, str] = {}
    for name, arr in inits.items():
        by_value.setdefault((arr.dtype.str, arr.shape, arr.tobytes()), name)
    params = set(param_names)
    found_params = found_floats = 0
    missing: list[str] = []
    merged: dict[str, str] = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        arr = tensor.detach().cpu().numpy()
        if name not in inits:
            kept = by_value.get((arr.dtype.str, arr.shape, arr.tobytes()))
            if kept is None:
                missing.append(name)
                continue
            merged[name] = kept
        found_floats += arr.size
        found_params += arr.size if name in params else 0
    extra = sorted(set(inits) - set(state))
    return {"params": found_params, "float_initializer_elements": found_floats,
            "missing": missing, "merged": merged, "extra": extra}
