"""Issue 28, row 6: every log event is checked against its schema when the log is read; a
wrong line is refused in one line naming its line number, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_run import copy_run, shared_run, snapshot

from cellblock.cli import main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)[0]


BAD_LINES = {
    "empty object": {},
    "unknown trial ended": {"event": "trial_end", "trial": 99, "arch_id": "x", "status": "COMPLETE",
                            "metrics": {}, "error": None, "violation": 0.0, "t": 1.0},
    "path as trial number": {"event": "trial_start", "trial": "../x", "arch_id": "x", "arch": {},
                             "t": 1.0},
    "unknown status": {"event": "trial_end", "trial": 0, "arch_id": None, "status": "DONE"},
    "run_start without config": {"event": "run_start", "t": 1.0},
    "a list": [1, 2],
}


@pytest.mark.parametrize("name", list(BAD_LINES))
@pytest.mark.parametrize("command", ["show", "search", "report", "export", "train"])
def test_a_wrong_event_is_one_line_naming_its_line(name, command, finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    log = run / "trials.jsonl"
    lines = log.read_text().splitlines()
    lines.insert(2, json.dumps(BAD_LINES[name]))
    log.write_text("\n".join(lines) + "\n")
    before = snapshot(run)
    argv = {
        "show": ["show", str(run)],
        "search": ["search", "--space", f"{finished_run.parent / 'sp.py'}:space", "--trials", "2",
                   "--epochs", "1", "--objectives", "accuracy,macs", "--device", "cpu",
                   "--strategy",
                   "random", "--no-progress", "--out", str(run)],
        "report": ["report", str(run)],
        "export": ["export", str(run), "--trial", "0", "--format", "json", "--out",
                   str(tmp_path / "e")],
        "train": ["train", str(run), "--trial", "0", "--epochs", "1", "--no-progress"],
    }[command]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("cellblock: error:"), err
    assert f"{log}:3 " in err and "Traceback" not in err
    assert snapshot(run) == before


def test_a_trial_end_must_match_its_start():
    from cellblock.records.schema import event_problem

    started = {0: "abc"}
    ok = {"event": "trial_end", "trial": 0, "arch_id": "abc", "status": "COMPLETE", "metrics": {}}
    assert event_problem(ok, started, ("COMPLETE",)) is None
    assert "'status' is not one of COMPLETE" in event_problem({**ok, "status": "DONE"}, started,
                                                              ("COMPLETE",))
    assert "began with 'abc'" in event_problem({**ok, "arch_id": "zzz"}, started)
    assert "is not an integer >= 0" in event_problem({**ok, "trial": True}, started)
    assert "'t' is not a number" in event_problem({**ok, "t": "yesterday"}, started)
    assert event_problem({"event": "run_end", "t": 2.5}, {}) is None
