"""results/benchmarks/gpu_throughput.py: one line without CUDA; every part runs in --smoke mode."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "results" / "benchmarks" / "gpu_throughput.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without CUDA")
def test_without_cuda_it_says_so_in_one_line(tmp_path, capsys):
    out = tmp_path / "gpu.md"
    assert _script().main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [
        "gpu_throughput: no CUDA device is present; nothing measured (use --smoke for a CPU smoke "
        "run)"]
    assert not out.exists()


def _table(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table under ``heading``, as header -> cell."""
    lines = text.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    table = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        table.append([c.strip() for c in ln.strip("|").split("|")])
    head, rows = table[0], table[2:]
    return [dict(zip(head, row, strict=True)) for row in rows]


@pytest.mark.slow
def test_smoke_run_writes_every_section(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLBLOCK_LOCK_DIR", str(tmp_path / "locks"))
    out = tmp_path / "gpu.md"
    assert _script().main(["--smoke", "--out", str(out)]) == 0
    text = out.read_text()
    assert "SMOKE RUN" in text
    variants = {"local eager (before)", "packed", "packed + graphs (default)",
                "default without cudnn autotuning"}
    for setting, extra in (("npz", set()), ("digits", {"--device cpu"})):
        rows = _table(text, f"### {setting}")  # every variant searched and finished trials
        assert {r["variant"] for r in rows} == variants | extra
        for r in rows:
            assert float(r["wall s"]) > 0 and 0 < int(r["complete"]) <= int(r["trials"]), r
            assert 0 <= float(r["best acc"]) <= 1, r
    steps = _table(text, next(ln for ln in text.splitlines()
                              if ln.startswith("## One training step")))
    assert steps and all(float(r["eager ms"]) > 0 and float(r["graphed ms"]) > 0 for r in steps)
    resnet = _table(text, next(ln for ln in text.splitlines() if ln.startswith("## ResNet-18")))
    assert len(resnet) == 2 and all(float(r["images/s (median)"]) > 0 for r in resnet)
    assert "CUDA graphs need a CUDA device" in text  # the CPU fallback reason reaches the report


def test_parts_run_alone_and_the_rest_says_not_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLBLOCK_LOCK_DIR", str(tmp_path / "locks"))
    out = tmp_path / "gpu.md"
    assert _script().main(["--smoke", "--parts", "steps", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## One training step" in text and "### digits" not in text
    assert "ResNet-18: not measured in this run." in text
    assert text.count("not measured in this run") == 4  # three ratios and ResNet-18


def test_unknown_part_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        _script().main(["--smoke", "--parts", "steps,gpus", "--out", str(tmp_path / "x.md")])
    assert exc.value.code == 2
