"""Issue 28, rows 1 and 7: no command unpickles what a user hands over.

Every ``.pt`` a command reads (search --supernet, train's checkpoint, train --init,
export's weights and --supernet, supernet rank and train) is loaded with
``weights_only=True``: a crafted pickle gets one line, exit 2, and runs nothing.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import copy_run, shared_run

from cellblock.cli import main

ROOT = Path(__file__).resolve().parents[2]

class _Payload:
    """Unpickling this runs ``exec`` (writes the marker file): what an attacker would hand over."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def craft(path: Path, marker: Path, wrap: str = "dict") -> Path:
    """Write a ``.pt`` that runs code when unpickled without ``weights_only``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _Payload(marker)
    obj = {"identity": payload, "state": {"epoch": 1}} if wrap == "dict" else payload
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-trial run of a tiny space (copied by each test)."""
    return shared_run(tmp_path_factory)[0]


def _one_line_exit_2(argv: list[str], capsys, marker: Path) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("cellblock: error:"), err
    assert not marker.exists(), "code in the pickle ran"
    assert "weights_only=False" not in err
    return err


@pytest.mark.slow
def test_the_crafted_file_is_armed(tmp_path):
    """The payload does run code when unpickled the old way (so the tests below can fail)."""
    marker = tmp_path / "marker"
    path = craft(tmp_path / "x.pt", marker)
    code = f"import torch; torch.load({str(path)!r}, weights_only={'False'})"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                   cwd=ROOT / "tests")
    assert marker.exists()


def _run_copy(finished_run: Path, tmp_path: Path) -> Path:
    return copy_run(finished_run, tmp_path)


def test_train_refuses_a_crafted_checkpoint(finished_run, tmp_path, capsys):
    run = _run_copy(finished_run, tmp_path)
    marker = tmp_path / "marker"
    ckpt = craft(run / "train" / "trial_0" / "checkpoint.pt", marker)
    err = _one_line_exit_2(["train", str(run), "--trial", "0", "--epochs", "1", "--no-progress"],
                           capsys, marker)
    assert str(ckpt) in err and "nothing in it was run" in err


def test_train_refuses_a_checkpoint_that_is_not_a_dict(finished_run, tmp_path, capsys):
    run = _run_copy(finished_run, tmp_path)
    (run / "train" / "trial_0").mkdir(parents=True)
    torch.save([1, 2], run / "train" / "trial_0" / "checkpoint.pt")
    err = _one_line_exit_2(["train", str(run), "--trial", "0", "--epochs", "1", "--no-progress"],
                           capsys, tmp_path / "marker")
    assert "checkpoint.pt" in err


def test_export_refuses_crafted_trained_weights(finished_run, tmp_path, capsys):
    run = _run_copy(finished_run, tmp_path)
    marker = tmp_path / "marker"
    weights = craft(run / "train" / "trial_0" / "weights.pt", marker, wrap="bare")
    err = _one_line_exit_2(["export", str(run), "--trial", "0", "--format", "json",
                            "--out", str(tmp_path / "exp")], capsys, marker)
    assert str(weights) in err
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("how", ["search", "train-init", "export", "rank", "supernet-train"])
def test_supernet_checkpoints_are_refused(how, finished_run, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = craft(tmp_path / "supernet.pt", marker)
    run = _run_copy(finished_run, tmp_path)
    space = f"{finished_run.parent / 'sp.py'}:space"
    argv = {
        "search": ["search", "--space", space, "--evaluator", "supernet", "--supernet", str(evil),
                   "--trials", "1", "--device", "cpu", "--out", str(tmp_path / "new"),
                   "--no-progress"],
        "train-init": ["train", str(run), "--trial", "0", "--epochs", "1", "--init",
                       f"supernet:{evil}",
                       "--no-progress"],
        "export": ["export", str(run), "--trial", "0", "--format", "json", "--supernet", str(evil),
                   "--out", str(tmp_path / "exp")],
        "rank": ["supernet", "rank", "--supernet", str(evil), "--epochs", "1", "--out",
                 str(tmp_path / "rank")],
        "supernet-train": ["supernet", "train", "--space", space, "--epochs", "1", "--out",
                           str(evil),
                           "--device", "cpu"],
    }[how]
    err = _one_line_exit_2(argv, capsys, marker)
    assert str(evil) in err
    assert not (tmp_path / "new").exists() and not (tmp_path / "exp").exists()


def _torch_load_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr == "load" and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "torch"]


def _safe(call: ast.Call) -> bool:
    return any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
               and k.value.value is True
               for k in call.keywords)


def unsafe_torch_loads(source: str, name: str) -> list[str]:
    """``file:line`` of every ``torch.load`` without ``weights_only=True`` in ``source``,
    in code and in code held in string literals (scripts run in another interpreter)."""
    tree = ast.parse(source)
    bad = [f"{name}:{c.lineno}" for c in _torch_load_calls(tree) if not _safe(c)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value,
                                                         str) and "torch.load(" in node.value:
            for m in re.finditer(r"torch\.load\(", node.value):
                call = node.value[m.start():node.value.find("\n", m.start())]
                if "weights_only=True" not in call:
                    bad.append(f"{name}:{node.lineno} (in a string)")
    return bad


def test_every_torch_load_in_the_source_is_weights_only():
    files = [p for p in ROOT.rglob("*.py")
             if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
             and p != Path(__file__).resolve()]  # this file holds unsafe examples on purpose
    assert len(files) > 100
    bad = [b for p in files
           for b in unsafe_torch_loads(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_the_source_walk_finds_an_unsafe_load():
    src = 'import torch\nx = torch.load("a.pt")\ny = torch.load("b.pt", weights_only=False)\n' \
          'z = torch.load("c.pt", weights_only=True)\nS = """torch.load(p)\\n"""\n'
    assert unsafe_torch_loads(src, "m.py") == ["m.py:2", "m.py:3", "m.py:5 (in a string)"]
