"""``cellblock export``: architectures of a run (or an arch file) as JSON, PyTorch source,
TorchScript and ONNX, each verified by a round trip.

Every export is checked right after it is written, and a mismatch is an error:

* ``json``: the arch is rebuilt from the JSON through its space (same arch_id, params,
  MACs and outputs).
* ``pytorch``: ``model.py`` (imports torch only, see :mod:`cellblock.codegen`) and
  ``weights.pt`` are loaded in a separate ``python -I -S`` interpreter whose path holds
  torch's site-packages without cellblock (it checks that ``import cellblock`` fails).
* ``torchscript``: loaded with ``torch.jit.load`` in the same kind of clean interpreter.
* ``onnx`` (opset 17): ``onnx.checker`` then onnxruntime. BatchNorm is kept as
  ``BatchNormalization`` nodes (not folded into convolutions), so the parameters are the
  initializers named like the model's parameters, and all float initializers are exactly
  the float state dict (parameters + BN running statistics). MACs are counted from the
  shape-inferred graph over Conv/Gemm/MatMul nodes, the ops torch's FlopCounter counts.

Outputs are compared on a random input in eval mode, fp32, max abs diff <= 1e-5.
Results go to ``DIR/roundtrip.json``. The reference network and the checks (clean
interpreter, comparison, ONNX MAC count) are in :mod:`cellblock.export_verify`.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellblock.cli import _key_value, command
from cellblock.codegen import ExportError, generate_source
from cellblock.errors import CellblockError, ConfigError
from cellblock.export_verify import (
    ATOL,
    Reference,
    compare,
    make_reference,
    onnx_macs,
    run_clean,
)
from cellblock.export_verify import CHECK_BATCH as CHECK_BATCH  # re-exported
from cellblock.export_verify import CHECK_SCRIPT as CHECK_SCRIPT  # re-exported
from cellblock.export_verify import fresh_weights as fresh_weights  # re-exported
from cellblock.export_verify import space_input_shape as space_input_shape  # re-exported
from cellblock.registry import Registry

ONNX_OPSET = 17


@dataclass
class ExportItem:
    """One architecture to export, with what is known about it."""

    label: str
    arch: dict[str, Any]
    space: Any  # SearchSpace
    seed: int
    trial: Any = None  # records.Trial or None
    weights: Path | None = None  # trained state_dict, if any


Exporter = Callable[[Reference, Path], dict[str, Any]]
FORMATS: Registry[Exporter] = Registry("export format")


def register_format(name: str) -> Callable[[Exporter], Exporter]:
    """Decorator registering ``fn(reference, out_dir) -> result dict`` as a format."""
    return FORMATS.register(name)  # type: ignore[return-value]


# ---- selection ---------------------------------------------------------------------------
def parse_filters(max_latency_ms: str | None, max_macs: str | None, max_params: str | None) -> list:
    """Filters as :class:`cellblock.objectives.Constraint` (``5M``-style suffixes allowed)."""
    from cellblock.objectives import Constraint

    pairs = (("latency_ms", max_latency_ms), ("macs", max_macs), ("params", max_params))
    return [Constraint.parse(f"{name}<={value}") for name, value in pairs if value is not None]


def select_trials(
    data: Any,
    *,
    trial: int | None = None,
    pareto: bool = False,
    knee: bool = False,
    filters: Sequence[Any] = (),
) -> list[Any]:
    """Trials of a run to export.

    ``trial``: that trial. ``pareto``: the Pareto front of the trials within ``filters``.
    ``knee``: the knee point of that front. Otherwise the most accurate completed,
    feasible trial within ``filters``.

    Raises:
        ExportError: if nothing is left (unknown trial, no completed trial, filters too tight).
    """
    from cellblock.pareto import knee_point
    from cellblock.results import objective_matrix, pareto_trials

    if trial is not None:
        match = [t for t in data.trials if t.number == trial]
        if not match:
            raise ExportError(f"run has no trial {trial}; trials are 0..{len(data.trials) - 1}")
        if match[0].status != "COMPLETE":
            raise ExportError(f"trial {trial} is {match[0].status}, not COMPLETE; pick a completed trial")
        return match
    pool = [t for t in data.trials if t.feasible_complete and t.value("accuracy") is not None]
    for f in filters:
        pool = [t for t in pool if (f.violation(t.metrics) is not None and f.violation(t.metrics) <= 0)]
    if not pool:
        what = ", ".join(str(f) for f in filters) or "none"
        raise ExportError(
            f"no completed, feasible trial is left after the filters ({what}); relax them "
            "or check the run with 'cellblock show'"
        )
    if not (pareto or knee):
        return [max(pool, key=lambda t: (t.value("accuracy"), -t.number))]
    front = pareto_trials(pool, data.objectives)
    if knee:
        return [front[knee_point(objective_matrix(front, data.objectives))]]
    return front


def run_space(config: Mapping[str, Any], data: Any = None) -> Any:
    """The search space of a run, as its runner built it (dataset shape added as context)."""
    from cellblock.data import load_dataset
    from cellblock.search_spaces.api import SearchSpace

    kwargs = dict(config.get("space_args") or {})
    if "input_shape" not in kwargs or "num_classes" not in kwargs:
        if data is None:
            data = load_dataset(config["dataset"], config.get("data_dir"), False, seed=0,
                                val_fraction=config.get("val_fraction"))
        kwargs.setdefault("input_shape", tuple(data.input_shape))
        kwargs.setdefault("num_classes", data.num_classes)
    return SearchSpace(config["space"], **kwargs)


def items_from_run(run_dir: str | Path, trials: Sequence[Any]) -> list[ExportItem]:
    """Export items of ``trials`` of a run (trained weights from ``cellblock train`` if present)."""
    from cellblock.evaluators.pipeline import trial_seed
    from cellblock.final_train import weights_path
    from cellblock.results import load_run

    data = load_run(run_dir)
    space = run_space(data.config)
    items = []
    for t in trials:
        w = weights_path(data.run_dir, t.number)
        items.append(ExportItem(
            f"trial_{t.number}", dict(t.arch), space, trial_seed(data.config.get("seed", 0), t.arch_id),
            t, w if w.is_file() else None,
        ))
    return items


def item_from_arch_file(path: str | Path, space: str | None, space_args: Mapping[str, Any]) -> ExportItem:
    """An export item from an arch JSON (a plain arch dict, or an ``arch.json`` of an export).

    Raises:
        ConfigError: if the file is unreadable or names no space.
    """
    from cellblock.search_spaces.api import SearchSpace, arch_id

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read arch file {str(path)!r} ({exc}); give a JSON object") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"arch file {str(path)!r} must hold a JSON object")
    arch = doc.get("arch", doc) if isinstance(doc.get("arch"), dict) else doc
    kwargs = dict(doc.get("space_kwargs") or {}) if "arch" in doc else {}
    kwargs.update(space_args)
    ref = space or doc.get("space")
    if not ref:
        raise ConfigError("the arch file names no space; pass --space NAME (and --space-arg KEY=VALUE)")
    sp = SearchSpace(ref, **kwargs)
    sp.validate(arch)
    return ExportItem(f"arch_{arch_id(arch)}", dict(arch), sp, 0)


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
    return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


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
    path = out_dir / "arch.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    back = json.loads(path.read_text(encoding="utf-8"))
    space = SearchSpace(back["space"], **back["space_kwargs"])
    model = space.build(back["arch"])
    model.load_state_dict(torch.load(write_weights(ref, out_dir), map_location="cpu", weights_only=True))
    model.eval()
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
    src = generate_source(ref.model, ref.input_shape, title=f"{item.space.name} network {item.label}", meta=meta)
    path = out_dir / "model.py"
    path.write_text(src, encoding="utf-8")
    weights = write_weights(ref, out_dir)
    info, y = run_clean("pytorch", path, ref, weights)
    imports = sorted({
        ast.unparse(node) for node in ast.parse(src).body if isinstance(node, (ast.Import, ast.ImportFrom))
    })
    result = compare(ref, info["params"], info["macs"], y)
    result.update({"files": ["model.py", "weights.pt"], "source_bytes": len(src.encode()),
                   "imports": imports, "cellblock_imported": bool(info["cellblock_modules"])})
    return result


@register_format("torchscript")
def export_torchscript(ref: Reference, out_dir: Path) -> dict[str, Any]:
    """``model.torchscript.pt`` (scripted torch.fx graph); loaded in a clean interpreter."""
    from cellblock.codegen import trace

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


@register_format("onnx")
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
    param_names = dict(ref.model.named_parameters())
    sizes = {t.name: int(np.prod(t.dims)) for t in proto.graph.initializer}
    floats = sum(s for t, s in zip(proto.graph.initializer, sizes.values())
                 if t.data_type == onnx.TensorProto.FLOAT)
    state_floats = sum(v.numel() for v in ref.model.state_dict().values() if v.is_floating_point())
    macs, macs_how = onnx_macs(proto)
    result = compare(ref, sum(s for n, s in sizes.items() if n in param_names), macs, y)
    result.update({
        "files": [path.name], "opset": opset, "macs_method": macs_how,
        "float_initializer_elements": floats, "float_state_dict_elements": state_floats,
        "initializers_ok": floats == state_floats,
        "params_method": "elements of initializers named like the model's parameters (BN not folded)",
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


def export_items(items: Sequence[ExportItem], out: str | Path, formats: Sequence[str]) -> dict[str, Any]:
    """Export and verify every item in every format; write ``out/roundtrip.json``.

    Raises:
        ExportError: if any round trip does not match (after writing roundtrip.json).
    """
    for f in formats:
        FORMATS.get(f)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"atol": ATOL, "torch": torch.__version__, "exports": []}
    problems: list[str] = []
    for item in items:
        ref = make_reference(item)
        item_dir = out / item.label
        item_dir.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {
            "label": item.label, "trial": item.trial.number if item.trial is not None else None,
            "arch_id": __import__("cellblock.search_spaces.api", fromlist=["arch_id"]).arch_id(item.arch),
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
    if problems:
        raise ExportError(f"round trip failed ({'; '.join(problems)}); details in {out / 'roundtrip.json'}")
    return report


# ---- command line ------------------------------------------------------------------------
@command("export")
def _add_export(sub: Any) -> None:

    p = sub.add_parser("export", help="export architectures (JSON, PyTorch source, TorchScript, ONNX), verified")
    p.add_argument("run", nargs="?", help="run directory (or use --arch)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--trial", type=int, help="trial number")
    pick.add_argument("--pareto", action="store_true", help="every Pareto-optimal trial")
    pick.add_argument("--knee", action="store_true", help="the knee point of the Pareto front")
    p.add_argument("--max-latency-ms", dest="max_latency_ms", help="only trials with latency_ms <= X")
    p.add_argument("--max-macs", dest="max_macs", help="only trials with macs <= X (e.g. 2M)")
    p.add_argument("--max-params", dest="max_params", help="only trials with params <= X (e.g. 100k)")
    p.add_argument("--arch", help="export this arch JSON instead of a run's trial")
    p.add_argument("--space", help="space of --arch (name, module:function or file.py:function)")
    p.add_argument("--space-arg", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="skeleton option of --space, repeatable (YAML values)")
    p.add_argument("--format", default="json,pytorch,torchscript,onnx",
                   help="comma-separated formats: " + ", ".join(FORMATS.names()))
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--supernet", help="export with weights inherited from this supernet checkpoint")
    p.set_defaults(func=_export)


def _export(args: Any) -> int:
    from cellblock.results import load_run

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if not formats:
        raise ConfigError("--format is empty; give e.g. json,pytorch,torchscript,onnx")
    for f in formats:
        FORMATS.get(f)
    filters = parse_filters(args.max_latency_ms, args.max_macs, args.max_params)
    if args.arch:
        if args.run or args.trial is not None or args.pareto or args.knee or filters:
            raise ConfigError("--arch exports one architecture; do not combine it with RUN or trial selection")
        items = [item_from_arch_file(args.arch, args.space, dict(args.space_arg or []))]
    else:
        if not args.run:
            raise ConfigError("give a run directory (or --arch FILE --space NAME)")
        data = load_run(args.run)
        trials = select_trials(data, trial=args.trial, pareto=args.pareto, knee=args.knee, filters=filters)
        items = items_from_run(args.run, trials)
    if args.supernet:
        from cellblock.supernet.inherit import attach_supernet_weights

        attach_supernet_weights(items, args.supernet, args.out)
    try:
        report = export_items(items, args.out, formats)
    finally:
        _print_report(Path(args.out) / "roundtrip.json")
    print(f"all round trips passed; written to {args.out} ({len(report['exports'])} architecture(s))")
    return 0


def _print_report(path: Path) -> None:
    if not path.is_file():
        return
    report = json.loads(path.read_text(encoding="utf-8"))
    for e in report["exports"]:
        print(f"{e['label']}: arch {e['arch_id']}  params {e['params']:,}  macs {e['macs']:,}  weights: {e['weights']}")
        for f, r in e["formats"].items():
            if "error" in r:
                print(f"  {f:<12} ERROR {r['error']}")
                continue
            ok = all(r.get(k) is not False for k in OK_KEYS)
            print(f"  {f:<12} {'ok  ' if ok else 'FAIL'} params {r['params']}  macs {r['macs']}  "
                  f"max|diff| {r['max_abs_diff']:.2e}")

