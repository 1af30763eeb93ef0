"""Latency runtimes: each runs the same network, unknown ones are user errors, normalised
timing cancels a machine's speed change, and the CLI measures an exported ONNX file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cellblock.cli import main
from cellblock.core.errors import ConfigError
from cellblock.evaluators.latency import timing as latency_timing
from cellblock.evaluators.latency.runtimes import RUNTIMES, get_runtime, measure_runtime_latency
from cellblock.evaluators.latency.timing import Timing, reference_network

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("runtime", ["torch", "torchscript", "onnxruntime"])
def test_runtimes_run_the_same_network(runtime):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(1, 1, 6, 6)
    out = get_runtime(runtime)(model, (x,), torch.device("cpu"))()
    out = out.detach().numpy() if isinstance(out, torch.Tensor) else out[0]
    assert np.allclose(out, model(x).detach().numpy(), atol=1e-5)
    res = measure_runtime_latency(model, (1, 6, 6), runtime, warmup=1, repeats=3)
    assert res["latency_ms"] > 0 and res["latency_runtime"] == runtime
    assert res["latency_device"]["runtime" if runtime != "torch" else "torch"]
    assert model.training is False and set(RUNTIMES.names()) >= {"torch", "torchscript",
                                                                 "onnxruntime"}


def test_cli_measures_an_exported_onnx_file(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from cellblock.evaluators.latency.runtimes import onnx_bytes

    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()).eval()
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes(model, (torch.zeros(1, 1, 6, 6),)))
    assert main(["latency", "measure", "--onnx", str(path), "--warmup", "1", "--repeats", "5",
                 "--threads", "1",
                 "--clock", "thread"]) == 0
    assert "ms median" in capsys.readouterr().out
    assert main(["latency", "measure", "--onnx", str(tmp_path / "missing.onnx")]) == 2


def test_normalised_timing_cancels_a_machine_that_changes_speed(monkeypatch):
    """A machine at speed 1x, 2x, 1.5x... in successive rounds: raw timings follow it, the
    values relative to the reference network do not (scripted clock: speed cannot be set)."""
    speeds = iter([1.0, 1.0, 2.0, 2.0, 1.5, 1.5, 3.0, 3.0, 1.2, 1.2] * 4)
    base = {"ref": 0.5, "net": 2.0}

    def scripted(run, warmup, repeats, clock="wall"):
        return [base[run()] * next(speeds)] * repeats

    raw = Timing("torch", torch.device("cpu"), warmup=0, repeats=10)
    assert "norm_ms" not in raw.time_many([lambda: torch.zeros(1)], rounds=2)[0]
    timing = Timing("torch", torch.device("cpu"), warmup=0, repeats=10, normalise="reference",
                    input_shape=(1, 4, 4), reference_ms=0.5)
    timing._reference = lambda: "ref"
    monkeypatch.setattr(latency_timing, "time_call", scripted)
    stats = timing.time_one(lambda: "net")
    assert stats["norm_ms"] == pytest.approx(2.0) and stats["value_ms"] == stats["norm_ms"]
    # the median of the raw runs moves with the speed
    assert stats["raw_ms"] == pytest.approx(2.0 * 1.5)


def test_reference_network_is_fixed_and_leaves_the_global_seed_alone():
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    a, b = reference_network((1, 8, 8)), reference_network((1, 8, 8))
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert a(torch.zeros(1, 1, 8, 8)).shape == (1, 10) and not a.training
    with pytest.raises(ConfigError, match="unknown latency normalisation 'fast'"):
        Timing("torch", torch.device("cpu"), normalise="fast", input_shape=(1, 8, 8))
