"""Backends give the same records: the local process pool, and a worker that dies (an
attempt lost to the infrastructure, re-run) versus a candidate that raises (FAILED)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import cellblock
from cellblock.core.errors import ConfigError, RunError
from cellblock.records import COMPLETE, FAILED, RUNNING, read_events, replay_trials

SPACE = '''
import os, signal
from torch import nn

def space(s, input_shape=(1, 8, 8), num_classes=10, die=None, marks=None, fail=False):
    w = s.choice("w", [4, 8, 12, 16])
    k = s.choice("k", [1, 3])
    if not s.build:
        return None
    if fail and w == 8:
        raise ValueError("this candidate is broken")
    first = marks is not None and not os.path.exists(os.path.join(marks, f"{w}-{k}"))
    if first:
        open(os.path.join(marks, f"{w}-{k}"), "w").close()
    if w == 12 and (die == "always" or (die == "once" and first)):
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-trial (the OOM killer, say)
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


@pytest.mark.slow
def test_process_pool_same_records_as_local(space_ref, tmp_path):
    run = cellblock.search(**_opts(space_ref, tmp_path / "p"))
    assert len(run.trials) == 6 and all(t.status == COMPLETE for t in run.trials)
    local = cellblock.search(**_opts(space_ref, tmp_path / "l", backend="local", concurrency=1))
    assert {t.arch_id: t.metrics["macs"] for t in run.trials} == {
        t.arch_id: t.metrics["macs"] for t in local.trials}
    # same per-architecture seed: identical accuracy whichever backend trained it
    assert {t.arch_id: t.metrics["accuracy"] for t in run.trials} == {
        t.arch_id: t.metrics["accuracy"] for t in local.trials}


def _events(out: Path, kind: str) -> list[dict]:
    return [e for e in read_events(out / "trials.jsonl") if e["event"] == kind]


@pytest.mark.slow
def test_a_killed_worker_loses_an_attempt_and_its_trial_runs_again(space_ref, tmp_path):
    (tmp_path / "marks").mkdir()
    run = cellblock.search(**_opts(space_ref, tmp_path / "d", trials=6,
                                   space_args={"die": "once", "marks": str(tmp_path / "marks")}))
    # the lost attempt used up none of --trials and made no architecture FAILED
    assert len(run.trials) == 6 and all(t.status == COMPLETE for t in run.trials)
    assert len({t.arch_id for t in run.trials}) == 6
    killed = [t for t in run.trials if t.arch["w"] == 12]
    assert killed
    lost = _events(tmp_path / "d", "trial_lost")
    for t in killed:
        mine = [e for e in lost if e["trial"] == t.number and "SIGKILL" in e["reason"]]
        assert len(mine) == 1 and mine[0]["attempt"] == 1 and mine[0]["retry"] is True
        assert mine[0]["node"] == socket.gethostname()
        assert t.node == socket.gethostname()
    ends = {e["trial"]: e for e in _events(tmp_path / "d", "trial_end")}
    for e in lost:  # every lost attempt was followed by one that ended the trial
        assert ends[e["trial"]]["attempt"] > e["attempt"]
    # bystanders in the broken pool were re-run without using up their retries
    assert all("worker pool broke" in e["reason"] for e in lost if "SIGKILL" not in e["reason"])


@pytest.mark.slow
def test_a_worker_killed_every_attempt_is_held_not_failed_and_resume_reruns_it(space_ref, tmp_path):
    out = tmp_path / "d"
    opts = _opts(space_ref, out, trials=6, infra_retries=1, space_args={"die": "always"})
    with pytest.raises(
        RunError, match=r"lost 2 attempts to infrastructure failures \(infra_retries=1\)"
    ):
        cellblock.search(**opts)
    trials = replay_trials(read_events(out / "trials.jsonl"))
    held = [t for t in trials if t.arch["w"] == 12]
    assert held and all(t.status == RUNNING for t in held)  # never FAILED, never counted as done
    assert all(sum(e["reason"].startswith("worker process") for e in t.lost) == 2 for t in held)
    assert all("SIGKILL" in e["reason"] for t in held for e in t.lost)
    assert all(t.status == COMPLETE for t in trials if t.arch["w"] != 12)
    assert sum(t.status == COMPLETE for t in trials) == 6 - len(held)
    assert not [e for e in read_events(out / "trials.jsonl") if e["event"] == "run_end"]
    with pytest.raises(RunError, match="lost 2 attempts"):  # the resume re-runs the held trials
        cellblock.search(**opts)
    again = {t.number: t for t in replay_trials(read_events(out / "trials.jsonl"))}
    assert all(
        again[t.number].status == RUNNING and len(again[t.number].lost) > len(t.lost) for t in held
    )
    assert sum(t.status == COMPLETE for t in again.values()) == 6 - len(held)


def test_an_exception_of_the_candidate_is_failed_and_not_retried(space_ref, tmp_path):
    run = cellblock.search(**_opts(space_ref, tmp_path / "f", trials=6, space_args={"fail": True}))
    broken = [t for t in run.trials if t.arch["w"] == 8]
    assert broken and all(
        t.status == FAILED and "this candidate is broken" in t.error for t in broken
    )
    assert all(t.status == COMPLETE for t in run.trials if t.arch["w"] != 8)
    assert not _events(tmp_path / "f", "trial_lost")


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
