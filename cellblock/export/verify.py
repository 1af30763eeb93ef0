"""Round-trip verification of ``cellblock export``: the reference network and the checks.

:func:`make_reference` builds an architecture with its weights (trained, or fresh with
random BN tensors) and measures its params, MACs and outputs on a fixed random input;
:func:`compare` judges an exported copy against it (max abs output diff <= :data:`ATOL`).
:func:`run_clean` loads PyTorch-source and TorchScript exports in a separate ``python -I -S``
interpreter that cannot import cellblock (one per export, :func:`clean_interpreter`), and
:func:`onnx_macs` counts the MACs of an ONNX graph. The formats themselves (writing the
files) live in :mod:`cellblock.export`.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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

CHECK_SCRIPT = r"""
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
try:
    import cellblock  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("cellblock is importable in the clean interpreter: " + str(cellblock.__file__))
import importlib.util
import traceback
import torch
import torch.utils.flop_counter as flop_counter
from torch.utils.flop_counter import FlopCounterMode
# counting FLOPs would import torch._dynamo (seconds) to disable compiling in a process that
# compiles nothing (see without_dynamo_import in cellblock/evaluators/cost.py)
raw = getattr(getattr(getattr(flop_counter, "_FlopCounterMode", None), "__torch_dispatch__",
                      None), "__wrapped__", None)
if raw is not None and "torch._dynamo" not in sys.modules:
    setattr(raw, "__dynamo_disable", raw)


def check(cfg):
    if cfg["kind"] == "pytorch":
        spec = importlib.util.spec_from_file_location("exported_model", cfg["model"])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        net = mod.build(cfg["weights"])
        shape = tuple(mod.INPUT_SHAPE)
    else:
        net = torch.jit.load(cfg["model"], map_location="cpu").eval()
        shape = tuple(cfg["input_shape"])
    x = torch.load(cfg["input"], weights_only=True)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            net(torch.zeros(1, *shape))
        y = net(x)
    torch.save(y, cfg["output"])
    leaked = sorted(m for m in sys.modules if m == "cellblock" or m.startswith("cellblock."))
    with open(cfg["result"], "w") as f:
        json.dump({"params": sum(p.numel() for p in net.parameters()),
                   "macs": int(counter.get_total_flops()) // 2, "cellblock_modules": leaked,
                   "torch": torch.__version__}, f)


# one check per line of stdin (a check.json path); one answer line each on the real stdout
# (what the checked code prints goes to stderr)
answers, sys.stdout = sys.stdout, sys.stderr
for line in sys.stdin:
    try:
        with open(line.strip()) as f:
            check(json.load(f))
        answers.write("ok\n")
    except Exception as exc:  # noqa: BLE001 (the answer names it; the next check runs)
        traceback.print_exc()
        answers.write("error " + traceback.format_exception_only(exc)[-1].strip() + "\n")
    answers.flush()
"""


def _clean_site(tmp: Path) -> list[str]:
    """A directory of links to torch's site-packages entries, minus cellblock and .pth files."""
    site = Path(torch.__file__).resolve().parent.parent
    farm = tmp / "site"
    farm.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("cellblock", "__editable__")) or name.endswith(".pth"):
            continue
        os.symlink(entry, farm / entry.name)
    return [str(farm)]


class CleanInterpreter:
    """A ``python -I -S`` interpreter whose path holds torch's site-packages without cellblock
    (it checks that ``import cellblock`` fails), loading exported files one check at a time.

    One serves all the checks of an export (:func:`clean_interpreter`): starting one costs
    seconds (torch's import), a check a fraction of that. Use it as a context manager.
    """

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="cellblock-roundtrip-")
        self.dir = Path(self._tmp.name)
        self._checks = 0
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> CleanInterpreter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen:
        (self.dir / "check.py").write_text(CHECK_SCRIPT, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.dir), "OMP_NUM_THREADS": "1"}
        self._stderr = open(self.dir / "stderr.txt", "w+b")  # noqa: SIM115 (closed in close)
        return subprocess.Popen(
            [sys.executable, "-I", "-S", str(self.dir / "check.py"),
             json.dumps(_clean_site(self.dir))],
            cwd=self.dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr)

    def _answer(self, timeout: float) -> str | None:
        """The interpreter's next answer line, or None if it exited or did not answer."""
        assert self._proc is not None and self._proc.stdout is not None
        fd, line = self._proc.stdout.fileno(), b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                return None
            line += chunk
        return line.decode("utf-8", "replace").strip()

    def _last_error_line(self) -> str:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def check(self, kind: str, model_path: Path, ref: Reference,
              weights: Path | None = None, timeout: float = 600) -> tuple[dict, torch.Tensor]:
        """Load ``model_path`` (``kind``: ``pytorch`` with ``weights``, or ``torchscript``);
        its params, MACs and outputs on ``ref.x``, and the cellblock modules it imported.

        Raises:
            ExportError: if the file fails to load or run (with the last line of the error).
        """
        if self._proc is None:
            self._proc = self._start()
        job = self.dir / f"check{self._checks}"
        self._checks += 1
        job.mkdir()
        torch.save(ref.x, job / "input.pt")
        cfg = {
            "kind": kind, "model": str(model_path.resolve()), "input_shape": list(ref.input_shape),
            "weights": str(weights.resolve()) if weights else None, "input": str(job / "input.pt"),
            "output": str(job / "output.pt"), "result": str(job / "result.json"),
        }
        (job / "check.json").write_text(json.dumps(cfg), encoding="utf-8")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(f"{job / 'check.json'}\n".encode())
            self._proc.stdin.flush()
        except OSError:  # it exited (e.g. cellblock was importable); its error says why
            pass
        answer = self._answer(timeout)
        if answer is None or not answer.startswith(("ok", "error ")):
            why = self._last_error_line() if answer is None else answer
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None  # the next check starts another one
            self._stderr.close()
            raise ExportError(f"the {kind} export failed to load in a clean interpreter: {why}")
        if answer.startswith("error "):
            raise ExportError(
                f"the {kind} export failed to load in a clean interpreter: {answer[6:]}")
        result = json.loads((job / "result.json").read_text(encoding="utf-8"))
        y = torch.load(job / "output.pt", weights_only=True)
        return result, y

    def close(self) -> None:
        """Stop the interpreter (it exits at the end of its input) and remove its files."""
        if self._proc is not None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
            self._proc = None
            self._stderr.close()
        self._tmp.cleanup()


#: The interpreter of the export in progress (:func:`clean_interpreter`), if any.
_SHARED: list[CleanInterpreter] = []


@contextmanager
def clean_interpreter() -> Iterator[CleanInterpreter]:
    """One clean interpreter for every :func:`run_clean` inside the block (started at the
    first check, stopped at the end)."""
    with CleanInterpreter() as interp:
        _SHARED.append(interp)
        try:
            yield interp
        finally:
            _SHARED.remove(interp)


def run_clean(kind: str, model_path: Path, ref: Reference,
              weights: Path | None = None) -> tuple[dict, torch.Tensor]:
    """Load an exported file in a separate interpreter that cannot import cellblock: the one
    of the enclosing :func:`clean_interpreter` block, or a new one for this check alone.

    Raises:
        ExportError: if the file fails to load or run (with the last line of its error).
    """
    if _SHARED:
        return _SHARED[-1].check(kind, model_path, ref, weights)
    with CleanInterpreter() as interp:
        return interp.check(kind, model_path, ref, weights)


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
