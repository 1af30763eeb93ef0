"""Issue 10, finding 1: one writer per run directory (a second search exits 2 naming the
holder; a stale lock is taken over; read-only commands work during a run)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slow_space import write_slow_space

from cellblock.core.errors import RunError
from cellblock.core.runlock import LOCK_NAME, RunLock, RunLockedError, run_dir_lock
from cellblock.records import read_events, replay_trials


def search_cmd(tmp: Path, trials: int, pause: float = 0.0, *extra: str) -> list[str]:
    write_slow_space(tmp)
    return [sys.executable, "-m", "cellblock", "search", "--space", f"{tmp / 'sp.py'}:space",
            "--space-arg", f"pause={pause}", "--trials", str(trials), "--epochs", "1",
            "--objectives", "accuracy,params", "--out", str(tmp / "run"), "--device", "cpu",
            "--no-progress", *extra]


def wait_for_trial(log: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and b'"trial_start"' in log.read_bytes():
            return
        time.sleep(0.05)
    raise AssertionError("the search started no trial")


def test_second_search_on_a_running_run_exits_2_naming_the_holder(tmp_path, capsys):
    """The holder is a real process; the second writer and the reader run in this one."""
    from cellblock.cli import main

    first = subprocess.Popen(search_cmd(tmp_path, 4, 0.7), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for_trial(tmp_path / "run" / "trials.jsonl", first)
        assert main(search_cmd(tmp_path, 4, 0.7)[3:]) == 2
        second = capsys.readouterr().err
        err = [line for line in second.splitlines() if line.startswith("cellblock: error")]
        assert len(err) == 1 and "in use by another cellblock process" in err[0], second
        assert "Traceback" not in second
        assert f"pid {first.pid} on host {socket.gethostname()}, started " in err[0]
        assert main(["show", str(tmp_path / "run")]) == 0, capsys.readouterr().err  # readers work
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    events = read_events(tmp_path / "run" / "trials.jsonl")
    assert sum(e["event"] == "run_start" for e in events) == 1  # the refused one wrote nothing
    trials = replay_trials(events)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert sum(e["event"] == "trial_start" for e in events) == 4  # nothing trained twice
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_stale_lock_of_a_killed_search_is_taken_over_with_a_notice(tmp_path, capsys):
    proc = subprocess.Popen(search_cmd(tmp_path, 3, 0.7), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_trial(tmp_path / "run" / "trials.jsonl", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock = tmp_path / "run" / LOCK_NAME
    assert json.loads(lock.read_text())["pid"] == proc.pid  # left behind by kill -9
    from cellblock.cli import main

    assert main(search_cmd(tmp_path, 3, 0.7)[3:]) == 0  # the next writer: in this process
    stderr = capsys.readouterr().err
    run = str(tmp_path / "run")
    taking = f"taking over the stale lock of run directory {run!r} left by pid {proc.pid}"
    assert taking in stderr
    assert len(replay_trials(read_events(tmp_path / "run" / "trials.jsonl"))) == 3
    assert not lock.exists()


def test_lock_in_process_names_holder_and_is_released(tmp_path):
    with run_dir_lock(tmp_path) as held:
        assert held.taken_over is None
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host"):
            RunLock(tmp_path / LOCK_NAME, "x").acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    assert issubclass(RunLockedError, RunError)  # one line, exit 2
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 12345,
                                                  "host": socket.gethostname(),
                                                  "started": 0}))
    with run_dir_lock(tmp_path) as held:
        assert held.taken_over["pid"] == 2**22 + 12345


def test_supernet_train_and_train_are_locked_too(tmp_path, capsys):
    from cellblock.cli import main
    from cellblock.core.runlock import file_lock
    from cellblock.export.final_train import final_train, train_dir

    ckpt = tmp_path / "sn.pt"
    with file_lock(ckpt):
        code = main(["supernet", "train", "--epochs", "1", "--out", str(ckpt), "--device", "cpu",
                     "--space-arg", "stages=1", "--space-arg", "widths=[[4]]", "--space-arg",
                     "strides=[1]"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{str(ckpt)!r} is in use by another cellblock process (pid {os.getpid()}" in err
    assert not ckpt.exists()

    import cellblock

    run = tmp_path / "run"
    write_slow_space(tmp_path)
    cellblock.search(space=f"{tmp_path / 'sp.py'}:space", trials=1, epochs=1, out=str(run),
                     device="cpu",
                     objectives=["accuracy", "params"], strategy="random")
    out = train_dir(run, 0)
    out.mkdir(parents=True)
    with RunLock(out / LOCK_NAME, "x"), pytest.raises(RunLockedError, match="training directory"):
        final_train(run, 0, 1, device="cpu", log=lambda s: None)
