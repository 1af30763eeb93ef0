"""MACs counting: torch's FLOP counter, without importing torch._dynamo in a fresh process."""

from __future__ import annotations

import sys

import pytest
from torch import nn
from torch.utils import flop_counter

from cellblock.evaluators.cost import count_macs, without_dynamo_import


def _raw_dispatch():
    return flop_counter._FlopCounterMode.__torch_dispatch__.__wrapped__


def test_without_dynamo_the_raw_dispatch_is_its_own_disabled_version_for_the_block(monkeypatch):
    """The cached "disabled" function torch looks for is the raw one inside the block (so
    torch._dynamo is not imported to make it) and is taken away after it."""
    raw = _raw_dispatch()  # a torch that no longer wraps it fails here: update the workaround
    monkeypatch.delattr(raw, "__dynamo_disable", raising=False)
    monkeypatch.delitem(sys.modules, "torch._dynamo", raising=False)  # a fresh process
    with without_dynamo_import():
        assert getattr(raw, "__dynamo_disable") is raw
    assert getattr(raw, "__dynamo_disable", None) is None


def test_with_dynamo_imported_nothing_is_changed(monkeypatch):
    raw = _raw_dispatch()
    monkeypatch.delattr(raw, "__dynamo_disable", raising=False)
    monkeypatch.setitem(sys.modules, "torch._dynamo", sys.modules.get("torch._dynamo", object()))
    with without_dynamo_import():
        assert getattr(raw, "__dynamo_disable", None) is None


@pytest.mark.parametrize("fresh", [True, False])
def test_count_macs_is_the_same_either_way(monkeypatch, fresh):
    """A conv and a linear layer: 6*6*8*9 + 288*10 multiply-accumulates per image."""
    raw = _raw_dispatch()
    if fresh:
        monkeypatch.delattr(raw, "__dynamo_disable", raising=False)
        monkeypatch.delitem(sys.modules, "torch._dynamo", raising=False)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False), nn.Flatten(), nn.Linear(288, 10))
    assert count_macs(net, (1, 8, 8)) == 6 * 6 * 8 * 9 + 288 * 10
    assert count_macs(net, (1, 8, 8), batch_size=3) == 3 * (6 * 6 * 8 * 9 + 288 * 10)
    assert net.training  # restored
