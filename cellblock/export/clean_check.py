"""A clean interpreter for round-trip checks: exported PyTorch source and TorchScript files
are loaded by a separate ``python -I -S`` that cannot import cellblock (it checks that
``import cellblock`` fails), one check at a time, one interpreter per export
(:func:`clean_interpreter`)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from cellblock.core.errors import ExportError
from cellblock.export.verify import Reference

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
