"""Latency measurement and device fingerprint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cellblock.core.errors import ConfigError
from cellblock.evaluators.latency.measure import device_fingerprint, measure_latency


def test_latency_median_spread_and_fingerprint() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 16 * 16, 10))
    model.train()
    res = measure_latency(model, (3, 16, 16), batch_size=2, warmup=2, repeats=9)
    assert res["latency_ms"] > 0
    assert res["latency_p10_ms"] <= res["latency_ms"] <= res["latency_p90_ms"]
    assert res["latency_batch_size"] == 2 and res["latency_repeats"] == 9
    fp = res["latency_device"]
    assert fp["type"] == "cpu" and fp["torch"] == torch.__version__
    assert fp["threads"] == torch.get_num_threads() and fp["name"]
    assert model.training  # training flag restored
    assert not torch.is_inference_mode_enabled()


def test_latency_restores_eval_mode_and_grows_with_work() -> None:
    small = nn.Linear(16, 16).eval()
    big = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(4)]).eval()
    wrapped_small = nn.Sequential(nn.Flatten(), small).eval()
    t_small = measure_latency(wrapped_small, (1, 4, 4), repeats=15)["latency_ms"]
    t_big = measure_latency(nn.Sequential(nn.Flatten(), big), (1, 32, 32), batch_size=32,
                            repeats=15)["latency_ms"]
    assert not wrapped_small.training and not small.training
    assert t_big > t_small


def test_fingerprint_has_no_hostname() -> None:
    import socket

    fp = device_fingerprint()
    assert socket.gethostname() not in str(fp.values())
    assert set(fp) >= {"type", "name", "torch", "threads", "cuda"}


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"repeats": 0}, {"warmup": -1}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        measure_latency(nn.Identity(), (1, 2, 2), **kwargs)


def test_bad_shape() -> None:
    with pytest.raises(ConfigError, match="input_shape"):
        measure_latency(nn.Identity(), (2, 2))
