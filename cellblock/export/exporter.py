"""``cellblock export``: architectures of a run (or an arch file) as JSON, PyTorch source,
TorchScript and ONNX, each verified by a round trip.

Every export is checked right after it is written, and a mismatch is an error:

* ``json``: the arch is rebuilt from the JSON through its space (same arch_id, params,
  MACs and outputs).
* ``pytorch``: ``model.py`` (imports torch only, see :mod:`cellblock.export.codegen`) and
  ``weights.pt`` are loaded in a separate ``python -I -S`` interpreter whose path holds
  torch's site-packages without cellblock (it checks that ``import cellblock`` fails).
* ``torchscript``: loaded with ``torch.jit.load`` in the same clean interpreter (one serves
  all the checks of an export, one file after the other).
* ``onnx`` (opset 17): ``onnx.checker`` then onnxruntime. BatchNorm is kept as
  ``BatchNormalization`` nodes (not folded into convolutions), so the parameters are the
  initializers named like the model's parameters, and all float initializers are exactly
  the float state dict (parameters + BN running statistics). MACs are counted from the
  shape-inferred graph over Conv/Gemm/MatMul nodes, the ops torch's FlopCounter counts.
  The exporter merges bit-identical initializers (a trained BN bias can equal its
  shortcut's); a tensor missing by name counts when an initializer holds its exact values.

Outputs are compared on a random input in eval mode, fp32, max abs diff <= 1e-5.
Results go to ``DIR/roundtrip.json``. The reference network and the checks (clean
interpreter, comparison, ONNX MAC count) are in :mod:`cellblock.export.verify`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cellblock.core.errors import CellblockError, ExportError
from cellblock.core.fileio import make_temp_dir
from cellblock.evaluators.latency.runtimes import ONNX_OPSET
from cellblock.export.clean_check import clean_interpreter, run_clean
from cellblock.export.codegen import generate_source
from cellblock.export.formats import FORMATS, check_formats, register_format
from cellblock.export.outdir import check_export_out, write_marker
from cellblock.export.preprocess import with_preprocessing
from cellblock.export.verify import (
    ATOL,
    ExportItem,
    Reference,
    compare,
    make_reference,
    onnx_macs,
    onnx_tensors_check,
)


# ---- weights -----------------------------------------------------------------------------
def _state_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def write_weights(ref: Reference, out_dir: Path) -> Path:
    """``weights.pt``: the reference's state dict (CPU, contiguous)."""
    path = out_dir / "weights.pt"
    if not path.exists():
        torch.save(_state_to_save(ref.model), path)
    return path


# ---- formats -----------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


@register_format("json")
def export_json(ref: Reference, out_dir: Path) -> dict[str, Any]:
    """``arch.json`` (arch, space, skeleton, arch_id, metrics); rebuilt through the space."""
    from cellblock.evaluators.cost import count_macs, count_params
    from cellblock.search_spaces.api import SearchSpace, arch_id

    item = ref.item
    doc = {
        "arch": item.arch, "arch_id": arch_id(item.arch), "space": item.space.ref,
        "space_name": item.space.name, "space_kwargs": _json_safe(item.space.kwargs),
        "trial": item.trial.number if item.trial is not None else None,
        "metrics": _json_safe(item.trial.metrics) if item.trial is not None else {},
    }
    if item.class_labels:  # class index -> the dataset's original label
        doc["class_labels"] = list(item.class_labels)
    doc["preprocessing"] = item.preprocessing  # applied by the exported networks (None: unknown)
    path = out_dir / "arch.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    back = json.loads(path.read_text(encoding="utf-8"))
    space = SearchSpace(back["space"], **back["space_kwargs"])
    model = space.build(back["arch"])
    model.load_state_dict(
        torch.load(write_weights(ref, out_dir), map_location="cpu", weights_only=True))
    model = with_preprocessing(model, back["preprocessing"]).eval()
    with torch.no_grad():
        y = model(ref.x)
    result = compare(ref, count_params(model), count_macs(model, ref.input_shape), y)
    result["arch_id_ok"] = arch_id(back["arch"]) == doc["arch_id"]
    result["files"] = ["arch.json", "weights.pt"]
    return result


@register_format("pytorch")
def export_pytorch(ref: Reference, out_dir: Path) -> dict[str, Any]:
    """``model.py`` (torch-only source) + ``weights.pt``; checked in a clean interpreter."""
    import ast

    from cellblock.search_spaces.api import arch_id

    item = ref.item
    meta = {"arch": item.arch, "arch_id": arch_id(item.arch), "space": item.space.ref,
            "space_kwargs": _json_safe(item.space.kwargs), "weights": ref.weights_source}
    src = generate_source(ref.model, ref.input_shape,
                          title=f"{item.space.name} network {item.label}",
                          meta=meta, preprocessing=item.preprocessing)
    path = out_dir / "model.py"
    path.write_text(src, encoding="utf-8")
    weights = write_weights(ref, out_dir)
    info, y = run_clean("pytorch", path, ref, weights)
    imports = sorted({
        ast.unparse(
            node) for node in ast.parse(src).body if isinstance(node, (ast.Import, ast.ImportFrom))
    })
    result = compare(ref, info["params"], info["macs"], y)
    result.update({"files": ["model.py", "weights.pt"], "source_bytes": len(src.encode()),
                   "imports": imports, "cellblock_imported": bool(info["cellblock_modules"])})
    return result


@register_format("torchscript")
def export_torchscript(ref: Reference, out_dir: Path) -> dict[str, Any]:
    """``model.torchscript.pt`` (scripted torch.fx graph); loaded in a clean interpreter."""
    from cellblock.export.codegen import trace

    gm = trace(copy.deepcopy(ref.model)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted = torch.jit.script(gm)
            how = "script"
        except Exception:  # noqa: BLE001  (fall back to tracing, recorded in the result)
            scripted = torch.jit.trace(gm, ref.x)
            how = "trace"
    path = out_dir / "model.torchscript.pt"
    scripted.save(str(path))
    info, y = run_clean("torchscript", path, ref)
    result = compare(ref, info["params"], info["macs"], y)
    result.update({"files": [path.name], "method": f"torch.jit.{how}"})
    return result


@register_format("onnx", requires=("onnx", "onnxruntime"), extra="onnx")
def export_onnx(ref: Reference, out_dir: Path) -> dict[str, Any]:
    """``model.onnx`` (opset 17, dynamic batch, BN not folded); onnx.checker + onnxruntime."""
    import onnx
    import onnxruntime as ort

    path = out_dir / "model.onnx"
    model = copy.deepcopy(ref.model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ref.x,), str(path), opset_version=ONNX_OPSET, dynamo=False,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: ref.x.numpy()})[0]
    state = ref.model.state_dict()  # the input normalisation's buffers are Constant nodes
    tensors = onnx_tensors_check(proto, state, dict(ref.model.named_parameters()))
    state_floats = sum(v.numel() for v in state.values() if v.is_floating_point())
    macs, macs_how = onnx_macs(proto)
    result = compare(ref, tensors["params"], macs, y)
    result.update({
        "files": [path.name], "opset": opset, "macs_method": macs_how,
        "float_initializer_elements": tensors["float_initializer_elements"],
        "float_state_dict_elements": state_floats,
        "initializers_ok": tensors[
            "float_initializer_elements"] == state_floats and not tensors["extra"],
        "merged_initializers": tensors["merged"], "missing_initializers": tensors["missing"],
        "params_method": "elements of the model's parameters found among the initializers, by "
                         "name, or by value where the exporter merged bit-identical tensors (BN "
                         "not folded)",
    })
    if macs is None:
        result["macs_ok"] = None
    return result


# ---- driver ------------------------------------------------------------------------------
OK_KEYS = ("params_ok", "macs_ok", "outputs_ok", "arch_id_ok", "initializers_ok")


def _failures(fmt: str, result: Mapping[str, Any]) -> list[str]:
    bad = [k for k in OK_KEYS if result.get(k) is False]
    if result.get("cellblock_imported"):
        bad.append("cellblock imported")
    return [f"{fmt}: {k}" for k in bad]


def export_items(items: Sequence[ExportItem], out: str | Path, formats: Sequence[str],
                 force: bool = False, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Export and verify every item in every format; write ``out/roundtrip.json``.

    The export is built in a temporary sibling directory and renamed to ``out`` at the end,
    so ``out`` never mixes the files of two exports (nor holds a half-written one).

    Args:
        items: What to export.
        out: The output directory: absent or empty, or replaced as a whole with ``force``.
        formats: Format names (checked, with their packages, before anything is written).
        force: Replace a non-empty ``out`` that holds an earlier export, and only that
            (see :func:`check_export_out`).
        run_dir: The run exported from (``out`` must not be it or hold it).

    Raises:
        ConfigError: for an unknown format, a missing package, or an ``out`` that may not
            be replaced (nothing is written).
        ExportError: if any round trip does not match (after writing the export and
            ``roundtrip.json``).
    """
    check_formats(formats)
    final = Path(out)
    check_export_out(final, force, run_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    out = make_temp_dir(final.parent, f".{final.name}.")  # mode of a plain mkdir, not 0700
    try:
        report, problems = _export_into(items, out, formats)
        _replace_dir(out, final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if problems:
        raise ExportError(
            f"round trip failed ({'; '.join(problems)}); details in {final / 'roundtrip.json'}")
    return report


def _replace_dir(new: Path, final: Path) -> None:
    """Put directory ``new`` at ``final`` (an old ``final`` is moved aside, then removed)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _export_into(items: Sequence[ExportItem], out: Path, formats: Sequence[str]
                 ) -> tuple[dict[str, Any], list[str]]:
    """Write every item in every format under ``out``; the report and the problems found."""
    with clean_interpreter():  # one for the whole export: starting one takes seconds
        return _export_all(items, out, formats)


def _export_all(items: Sequence[ExportItem], out: Path, formats: Sequence[str]
                ) -> tuple[dict[str, Any], list[str]]:
    report: dict[str, Any] = {"atol": ATOL, "torch": torch.__version__, "exports": []}
    problems: list[str] = []
    for item in items:
        ref = make_reference(item)
        item_dir = out / item.label
        item_dir.mkdir(parents=True, exist_ok=True)
        if item.state is not None:  # in-memory weights (a supernet's) travel with the export
            torch.save(item.state, item_dir / "inherited.pt")
        entry: dict[str, Any] = {
            "label": item.label, "trial": item.trial.number if item.trial is not None else None,
            "arch_id": __import__("cellblock.search_spaces.api",
                                  fromlist=["arch_id"]).arch_id(item.arch),
            "space": item.space.ref, "weights": ref.weights_source, "params": ref.params,
            "macs": ref.macs, "input_shape": list(ref.input_shape), "formats": {},
        }
        for f in formats:
            try:
                result = FORMATS.get(f)(ref, item_dir)
            except CellblockError as exc:
                result = {"error": str(exc)}
                problems.append(f"{item.label} {f}: {exc}")
            entry["formats"][f] = result
            problems += [f"{item.label} {p}" for p in _failures(f, result)]
        report["exports"].append(entry)
    report["ok"] = not problems
    (out / "roundtrip.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_marker(out)
    return report, problems
