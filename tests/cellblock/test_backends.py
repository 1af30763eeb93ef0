"""Backends give the same records: the local process pool, and a worker that dies."""

from __future__ import annotations

from pathlib import Path

import pytest

import cellblock
from cellblock.core.errors import ConfigError
from cellblock.records import COMPLETE, FAILED

SPACE = '''
import os, signal
from torch import nn

def space(s, input_shape=(1, 8, 8), num_classes=10, die=False):
    w = s.choice("w", [4, 8, 12, 16])
    k = s.choice("k", [1, 3])
    if not s.build:
        return None
    if die and w == 12:
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-trial
    return nn.Sequential(nn.Conv2d(input_shape[0], w, k, padding=k // 2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, num_classes))
'''


@pytest.fixture
def space_ref(tmp_path: Path) -> str:
    (tmp_path / "sp.py").write_text(SPACE)
    return f"{tmp_path / 'sp.py'}:space"


def _opts(space_ref, out, **kw):
    base = dict(space=space_ref, trials=6, epochs=1, out=str(out), device="cpu", strategy="random",
                objectives=["accuracy", "macs"], backend="process", concurrency=2)
    base.update(kw)
    return base


def test_process_pool_same_records_as_local(space_ref, tmp_path):
    run = cellblock.search(**_opts(space_ref, tmp_path / "p"))
    assert len(run.trials) == 6 and all(t.status == COMPLETE for t in run.trials)
    local = cellblock.search(**_opts(space_ref, tmp_path / "l", backend="local", concurrency=1))
    assert {t.arch_id: t.metrics["macs"] for t in run.trials} == {
        t.arch_id: t.metrics["macs"] for t in local.trials}
    # same per-architecture seed: identical accuracy whichever backend trained it
    assert {t.arch_id: t.metrics["accuracy"] for t in run.trials} == {
        t.arch_id: t.metrics["accuracy"] for t in local.trials}


def test_dead_worker_fails_its_trial_and_search_goes_on(space_ref, tmp_path):
    run = cellblock.search(**_opts(space_ref, tmp_path / "d", trials=6, space_args={"die": True}))
    assert len(run.trials) == 6
    dead = [t for t in run.trials if t.arch["w"] == 12]
    assert dead and all(t.status == FAILED and "worker process died" in t.error for t in dead)
    # trials that were in the broken pool with it are re-run alone and complete
    assert all(t.status == COMPLETE for t in run.trials if t.arch["w"] != 12)


def test_local_backend_refuses_concurrency(space_ref, tmp_path):
    with pytest.raises(ConfigError, match="local backend runs one trial at a time"):
        cellblock.search(**_opts(space_ref, tmp_path / "x", backend="local", concurrency=2))
    assert not (tmp_path / "x").exists()


def test_a_local_run_continues_on_the_process_pool(space_ref, tmp_path):
    out = tmp_path / "moved"
    first = cellblock.search(**_opts(space_ref, out, trials=3, backend="local", concurrency=1))
    assert len(first.trials) == 3
    run = cellblock.search(**_opts(space_ref, out, trials=6))  # more workers, same run
    assert len(run.trials) == 6 and all(t.status == COMPLETE for t in run.trials)
    assert len({t.arch_id for t in run.trials}) == 6
    assert [t.arch_id for t in run.trials[:3]] == [t.arch_id for t in first.trials]
    assert "backend: process" in (out / "config.yaml").read_text()
    with pytest.raises(cellblock.core.errors.RunError, match="strategy"):
        cellblock.search(**_opts(space_ref, out, trials=7, strategy="evolution"))
