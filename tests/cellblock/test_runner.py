"""The run loop end to end on digits with a tiny space: records, outputs, resume, failures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import cellblock
import cellblock.search_spaces
from cellblock.core.errors import RunError
from cellblock.records import COMPLETE, FAILED, INFEASIBLE, read_events, replay_trials

SPACE_FILE = '''
import torch
from torch import nn

class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom in forward")

class NaNs(nn.Module):
    def forward(self, x):
        return x * float("nan")

def space(s, input_shape=(1, 8, 8), num_classes=10, with_bad=False):
    depth = s.integer("depth", 1, 2)
    widths = [s.choice(f"layer{i}.width", [4, 8]) for i in range(depth)]
    extra = s.choice("extra", ["none", "boom", "nan"] if with_bad else ["none"])
    if not s.build:
        return None
    layers, c = [], input_shape[0]
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    if extra == "boom":
        layers.append(Boom())
    if extra == "nan":
        layers.append(NaNs())
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
'''


@pytest.fixture
def space_ref(tmp_path: Path) -> str:
    f = tmp_path / "tiny_space.py"
    f.write_text(SPACE_FILE)
    return f"{f}:space"


def _opts(space_ref, out, **kw):
    base = dict(space=space_ref, trials=4, epochs=1, out=str(out), device="cpu",
                objectives=["accuracy", "macs"], strategy="evolution", latency_repeats=3)
    base.update(kw)
    return base


def test_search_writes_records_and_derived_outputs(space_ref, tmp_path):
    out = tmp_path / "run"
    run = cellblock.search(**_opts(space_ref, out, objectives=["accuracy", "macs", "latency_ms"]))
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml", "trials.jsonl", "trials.csv", "pareto.csv", "pareto.png"}
    assert len(run.trials) == 4 and all(t.status == COMPLETE for t in run.trials)
    for t in run.trials:
        assert 0 <= t.metrics["accuracy"] <= 1 and t.metrics["macs"] > 0 and t.metrics["params"] > 0
        assert t.metrics["latency_ms"] > 0 and "latency_device" in t.metrics
        assert t.metrics["train_s"] > 0
    assert run.pareto and {t.arch_id for t in run.pareto} <= {t.arch_id for t in run.trials}
    header = (out / "pareto.csv").read_text().splitlines()[0]
    assert header.startswith("trial,arch_id,status,accuracy,macs,params,latency_ms")
    assert len({t.arch_id for t in run.trials}) == 4


def test_continue_keeps_completed_trials_and_reruns_in_flight(space_ref, tmp_path):
    out = tmp_path / "run"
    cellblock.search(**_opts(space_ref, out, trials=3))
    log = out / "trials.jsonl"
    first = replay_trials(read_events(log))
    # simulate a crash in the middle of a 4th trial
    with open(log, "a") as fh:
        arch = {"depth": 1, "layer0.width": 8, "extra": "none"}
        if any(t.arch == arch for t in first):
            arch = {"depth": 2, "layer0.width": 8, "layer1.width": 8, "extra": "none"}
        fh.write(json.dumps({"event": "trial_start", "trial": 3,
                             "arch_id": cellblock.search_spaces.arch_id(arch),
                             "arch": arch, "t": 0}) + "\n")
    run = cellblock.search(**_opts(space_ref, out, trials=5))
    assert len(run.trials) == 5 and all(t.done for t in run.trials)
    assert run.trials[3].arch == arch and run.trials[3].status == COMPLETE
    for old in first:
        assert run.trials[old.number].metrics == old.metrics  # kept, not retrained
    starts = [e for e in read_events(log) if e["event"] == "trial_start"]
    assert len(starts) == 6  # 3 + the interrupted one twice + 1 new
    assert len({t.arch_id for t in run.trials}) == 5
    # nothing left to do: a rerun trains nothing
    cellblock.search(**_opts(space_ref, out, trials=5))
    assert len([e for e in read_events(log) if e["event"] == "trial_start"]) == 6


def test_failures_are_recorded_and_search_goes_on(space_ref, tmp_path):
    out = tmp_path / "run"
    run = cellblock.search(**_opts(space_ref, out, trials=10, strategy="random",
                                   space_args={"with_bad": True}))
    failed = [t for t in run.trials if t.status == FAILED]
    assert failed, "the space has failing candidates; some must have been drawn"
    assert len(run.trials) == 10
    for t in failed:
        assert t.arch["extra"] in ("boom", "nan")
        assert ("boom in forward" in t.error) or ("NaN" in t.error)
    assert all(t.status == COMPLETE for t in run.trials if t.arch["extra"] == "none")
    assert all(t.arch["extra"] == "none" for t in run.pareto)


def test_cheap_constraint_rejects_before_training(space_ref, tmp_path):
    run = cellblock.search(**_opts(space_ref, tmp_path / "run", trials=6, strategy="random",
                                   constraints=["macs<=5000"]))
    infeasible = [t for t in run.trials if t.status == INFEASIBLE]
    assert infeasible
    for t in infeasible:
        assert t.metrics["macs"] > 5000 and "train_s" not in t.metrics and t.violation > 0
    assert all(t.metrics["macs"] <= 5000 for t in run.pareto)


def test_small_space_is_exhausted_without_repeats(space_ref, tmp_path):
    run = cellblock.search(**_opts(space_ref, tmp_path / "run", trials=50, strategy="random"))
    assert len(run.trials) == 6  # 2 + 4 architectures


def test_different_config_on_existing_run_is_refused_untouched(space_ref, tmp_path):
    out = tmp_path / "run"
    cellblock.search(**_opts(space_ref, out, trials=2))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RunError, match="different config .*strategy"):
        cellblock.search(**_opts(space_ref, out, trials=2, strategy="nsga2"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_pareto_front_is_nondominated(space_ref, tmp_path):
    run = cellblock.search(**_opts(space_ref, tmp_path / "run", trials=6, strategy="random"))
    ok = [t for t in run.trials if t.status == COMPLETE]
    for p in run.pareto:
        for q in ok:
            better = q.metrics[
                "accuracy"] >= p.metrics["accuracy"] and q.metrics["macs"] <= p.metrics["macs"]
            strictly = q.metrics[
                "accuracy"] > p.metrics["accuracy"] or q.metrics["macs"] < p.metrics["macs"]
            assert not (better and strictly)
    assert all(math.isfinite(t.metrics["accuracy"]) for t in run.pareto)
