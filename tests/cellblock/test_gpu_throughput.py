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


def test_smoke_run_writes_every_section(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLBLOCK_LOCK_DIR", str(tmp_path / "locks"))
    out = tmp_path / "gpu.md"
    assert _script().main(["--smoke", "--out", str(out)]) == 0
    text = out.read_text()
    assert "SMOKE RUN" in text
    for section in ("### npz", "### digits", "## One training step", "## ResNet-18"):
        assert section in text
    for variant in ("local eager (before)", "| packed |", "packed + graphs (default)",
                    "--device cpu",
                    "default without cudnn autotuning"):
        assert variant in text
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
