"""Issue 10, finding 11: under load, small candidates train on one torch thread (one
policy, recorded; --threads-per-trial overrides it), and a noisy latency is re-measured,
then marked unstable and kept off the Pareto front unless allowed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cellblock
from cellblock.core.config import RunConfig
from cellblock.core.objectives import parse_objectives
from cellblock.core.threads import SMALL_BATCH_MACS, threads_for, torch_default_threads
from cellblock.evaluators.latency import measure
from cellblock.evaluators.latency.measure import measure_latency
from cellblock.pareto.results import pareto_trials
from cellblock.records import COMPLETE, Trial, read_events


class FakeClock:
    """``time.perf_counter`` for the latency module: it moves only when a network runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class Jittery(nn.Module):
    """Every third forward pass is 20x slower (a busy machine), on a fake clock."""

    def __init__(self, clock: FakeClock, jitter: bool = True) -> None:
        super().__init__()
        self.clock, self.jitter, self.calls = clock, jitter, 0
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.clock.now += 0.02 if self.jitter and self.calls % 3 == 0 else 0.001
        return self.lin(x.flatten(1)[:, :4])


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The latency module's clock, faked; the reference network then takes no time (slowdown
    1.0), so only the candidate's own spread decides, whatever the machine's load."""
    fake = FakeClock()
    monkeypatch.setattr(measure, "time", fake)
    monkeypatch.setattr(measure, "_REFERENCE_BEST", {})
    return fake


def test_noisy_latency_is_remeasured_then_marked_unstable(clock: FakeClock) -> None:
    res = measure_latency(Jittery(clock), (1, 2, 2), warmup=1, repeats=10, max_spread=2.0)
    assert res["latency_spread"] == pytest.approx(20.0)
    assert res["latency_unstable"] is True and res["latency_slowdown"] == 1.0
    assert res["latency_attempts"] == 3  # measured, then re-measured twice
    steady = measure_latency(Jittery(clock, jitter=False), (1, 2, 2), warmup=1, repeats=10,
                             max_spread=2.0)
    assert steady["latency_unstable"] is False and steady["latency_attempts"] == 1
    assert steady["latency_ms"] == pytest.approx(1.0)


def test_unstable_latency_stays_off_the_front_unless_allowed() -> None:
    objs = parse_objectives(["accuracy", "latency_ms"])

    def trial(n: int, acc: float, lat: float, unstable: bool) -> Trial:
        return Trial(n, f"a{n}", {}, COMPLETE,
                     {"accuracy": acc, "latency_ms": lat, "latency_unstable": unstable})

    noisy, steady = trial(0, 0.9, 1.0, True), trial(1, 0.8, 2.0, False)
    assert pareto_trials([noisy, steady], objs) == [steady]
    assert pareto_trials([noisy, steady], objs, allow_unstable_latency=True) == [noisy]
    # no macs: none finite
    assert pareto_trials([noisy, steady], parse_objectives(["accuracy", "macs"])) == []


def test_thread_policy_one_for_small_candidates_override_wins() -> None:
    cfg = RunConfig(threads_per_trial=None, concurrency=1, batch_size=64)
    assert threads_for(cfg, 1e5) == 1
    assert threads_for(cfg, 10 * SMALL_BATCH_MACS, free=lambda: 999) == torch_default_threads()
    assert threads_for(cfg, 10 * SMALL_BATCH_MACS, free=lambda: 1) == 1  # a busy machine
    assert threads_for(cfg.replace(concurrency=2), 1e12) == 1
    assert threads_for(cfg.replace(threads_per_trial=3), 1e5) == 3


@pytest.mark.slow
def test_search_records_the_thread_choice(tmp_path) -> None:
    run = cellblock.search(space="blocks", trials=1, epochs=1, out=str(tmp_path / "run"),
                           device="cpu",
                           objectives=["accuracy", "macs", "latency_ms"], latency_repeats=5)
    t = run.trials[0]
    assert t.metrics["threads"] == 1 and t.metrics["latency_device"]["threads"] == 1
    assert "latency_unstable" in t.metrics and "latency_spread" in t.metrics
    start = read_events(tmp_path / "run" / "trials.jsonl")[0]
    assert start["threads"]["policy"] == "auto" and start["threads"]["small"] == 1
    run = cellblock.search(space="blocks", trials=1, epochs=1, out=str(tmp_path / "run2"),
                           device="cpu",
                           objectives=["accuracy", "macs"], threads_per_trial=2)
    assert run.trials[0].metrics["threads"] == 2
    torch.set_num_threads(1)


def test_importing_cellblock_raises_onednn_primitive_cache_unless_set() -> None:
    """oneDNN's default primitive cache (1024) is too small for a supernet, whose every step
    runs new convolution shapes; importing cellblock raises it, and a user's value wins."""
    import os
    import subprocess
    import sys

    from cellblock.core.threads import ONEDNN_CACHE_CAPACITY, ONEDNN_CACHE_VAR

    code = f"import os, cellblock; print(os.environ[{ONEDNN_CACHE_VAR!r}])"
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_CACHE_VAR}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(ONEDNN_CACHE_CAPACITY)
    out = subprocess.run([sys.executable, "-c", code], env={**env, ONEDNN_CACHE_VAR: "64"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "64"
