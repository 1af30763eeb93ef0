"""Append-only JSON-lines records: round trip, torn writes, replay."""

from __future__ import annotations

import json

import pytest

from cellblock.core.errors import RunError
from cellblock.records import (
    COMPLETE,
    FAILED,
    RUNNING,
    RecordLog,
    Trial,
    read_events,
    replay_trials,
    trial_end_event,
    trial_start_event,
    write_csv,
)


def _trial(n, status=COMPLETE, acc=0.5):
    return Trial(number=n, arch_id=f"id{n}", arch={"a": n}, status=status,
                 metrics={"accuracy": acc, "macs": 10 * n},
                 error=None if status == COMPLETE else "boom")


def test_log_round_trip_and_replay(tmp_path):
    path = tmp_path / "trials.jsonl"
    with RecordLog(path) as log:
        for n in range(3):
            t = _trial(n)
            log.append(trial_start_event(t))
            log.append(trial_end_event(t))
        log.append(trial_start_event(_trial(3)))  # in flight
    trials = replay_trials(read_events(path))
    assert [t.status for t in trials] == [COMPLETE] * 3 + [RUNNING]
    assert trials[1].metrics == {"accuracy": 0.5, "macs": 10}
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "trials.jsonl"
    with RecordLog(path) as log:
        log.append(trial_start_event(_trial(0)))
    with open(path, "a") as fh:
        fh.write('{"event": "trial_end", "tri')  # crash mid-write
    assert len(read_events(path)) == 1
    with RecordLog(path) as log:
        log.append(trial_end_event(_trial(0)))
    events = read_events(path)
    assert [e["event"] for e in events] == ["trial_start", "trial_end"]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text('{"event":"run_start"}\nnot json\n{"event":"run_end"}\n')
    with pytest.raises(RunError, match=r"trials.jsonl:2 is not valid JSON"):
        read_events(path)


def test_rerun_of_in_flight_trial_replaces_it(tmp_path):
    path = tmp_path / "trials.jsonl"
    with RecordLog(path) as log:
        t = _trial(0)
        log.append(trial_start_event(t))
        log.append(trial_start_event(t))  # re-run after a crash
        log.append(trial_end_event(_trial(0, FAILED)))
    (trial,) = replay_trials(read_events(path))
    assert trial.status == FAILED and trial.error == "boom"


def test_csv_columns(tmp_path):
    write_csv(tmp_path / "t.csv", [_trial(0), _trial(1, FAILED)])
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "trial,arch_id,status,accuracy,macs,params,latency_ms,train_s,error,arch"
    assert len(lines) == 3 and "FAILED" in lines[2] and "boom" in lines[2]
