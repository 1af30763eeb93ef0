"""Issue 10, findings 6 and 9: SIGTERM behaves like Ctrl-C (message, derived files
refreshed, exit 143); workers die with their driver; derived files are atomic and no
temporary file is left behind."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slow_space import write_slow_space

from cellblock.records import read_events, replay_trials


def _cmd(tmp: Path, trials: int, pause: float, *extra: str) -> list[str]:
    write_slow_space(tmp)
    return [sys.executable, "-m", "cellblock", "search", "--space", f"{tmp / 'sp.py'}:space",
            "--space-arg", f"pause={pause}", "--trials", str(trials), "--epochs", "1",
            "--objectives", "accuracy,params", "--out", str(tmp / "run"), "--device", "cpu",
            "--no-progress", "--strategy", "random", *extra]


def _wait_for(log: Path, proc: subprocess.Popen, what: bytes, count: int = 1,
              timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_bytes().count(what) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what!r} in the log")


def children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_saves_and_exits_143(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(tmp_path, 6, 0.5), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(run / "trials.jsonl", proc, b'"trial_end"', 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "cellblock: terminated (SIGTERM)" in err and "Traceback" not in err
    done = [t for t in replay_trials(read_events(run / "trials.jsonl")) if t.done]
    with open(run / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(done) >= 2 and len(rows) >= len(done)  # derived files refreshed at exit
    assert not [
        p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == ".cellblock.lock"]


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid``."""
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


@pytest.mark.parametrize("backend, sig", [("process", signal.SIGKILL), ("process", signal.SIGTERM),
                                          ("ray", signal.SIGKILL)])
def test_workers_exit_with_their_driver(tmp_path, backend, sig):
    if backend == "ray":
        pytest.importorskip("ray")
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(tmp_path, 8, 1.0, "--backend", backend, "--concurrency", "2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        _wait_for(run / "trials.jsonl", proc, b'"trial_start"', 2, timeout=300)
        workers = descendants(proc.pid)
        assert workers, f"the {backend} backend started no worker"
        proc.send_signal(sig)
        proc.wait(timeout=120)
        deadline = time.time() + 60
        while time.time() < deadline and any(alive(w) for w in workers):
            time.sleep(0.2)
        assert not [w for w in workers if alive(w)], "workers outlived the driver"
    finally:
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)


def test_a_kill_while_plotting_leaves_the_old_png_and_no_tmp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from cellblock.pareto.plots import plot_pareto

    rows = [{"arch_id": "a", "status": "COMPLETE", "accuracy": 0.5, "macs": 10, "latency_ms": 1.0}]
    out = plot_pareto(rows, tmp_path / "pareto.png")
    good = out.read_bytes()

    def killed(self, fh, **kw):
        fh.write(b"\x89PNG partial")
        raise KeyboardInterrupt  # the process is interrupted mid-write

    monkeypatch.setattr(Figure, "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        plot_pareto(rows, tmp_path / "pareto.png")
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.png"]


def test_stale_tmp_files_are_removed_at_the_next_run(tmp_path, capsys):
    """In this process (``cellblock.cli.main``): what is tested is the run directory."""
    from cellblock.cli import main

    run = tmp_path / "run"
    assert main(_cmd(tmp_path, 1, 0.0)[3:]) == 0, capsys.readouterr().err
    dead = 2**22 + 4321  # above the default pid_max: no process has it
    (run / f".trials.csv.{dead}.tmp").write_text("half")
    (run / "pareto.png.tmp").write_text("")  # name used by older versions
    assert main(_cmd(tmp_path, 2, 0.0)[3:]) == 0, capsys.readouterr().err
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
