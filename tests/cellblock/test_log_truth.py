"""Issue 28, rows 4 and 5: the log is the only truth, and every command that reads a run
checks its inputs.

- The config comes from the log's last ``run_start``; a ``config.yaml`` that disagrees is
  reported in one line and rewritten from the log, never used; a setting changed against
  the log is refused.
- ``train``, ``export`` and ``report`` refuse a dataset changed since the search (like
  ``search``), unless ``--allow-changed-inputs``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_run import SPACE

from cellblock.cli import main
from cellblock.records import read_events


def _npz(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.random((n, 8, 8), dtype=np.float32), y=np.arange(n) % 3)


ARGV = ["search", "--space", "sp.py:space", "--dataset", "data.npz", "--trials", "2", "--epochs",
        "1",
        "--objectives", "accuracy,macs", "--device", "cpu", "--strategy", "random", "--no-progress",
        "--out", "run"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A folder holding sp.py, data.npz (120 images) and a finished run made from there."""
    base = tmp_path_factory.mktemp("truth")
    (base / "sp.py").write_text(SPACE)
    _npz(base / "data.npz", 120, 0)
    old = os.getcwd()
    os.chdir(base)
    try:
        assert main(ARGV) == 0
    finally:
        os.chdir(old)
    return base


@pytest.fixture
def here(base, tmp_path, monkeypatch) -> Path:
    """A private copy of ``base``, the working directory of the test."""
    work = tmp_path / "w"
    shutil.copytree(base, work)
    monkeypatch.chdir(work)
    return work


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _edit_config(run: Path, **changes) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg.update(changes)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_an_edited_config_yaml_is_reported_rewritten_and_not_used(here, capsys):
    _edit_config(here / "run", lr=5.0)
    code, _, err = _run([*ARGV[:6], "3", *ARGV[7:]], capsys)  # the original command, one more trial
    assert code == 0, err
    notices = [ln for ln in err.splitlines() if "disagrees with trials.jsonl" in ln]
    assert len(notices) == 1 and "lr: 5.0 in config.yaml, 0.1 in the log" in notices[0]
    starts = [e for e in read_events(here / "run" / "trials.jsonl") if e["event"] == "run_start"]
    assert [e["config"]["lr"] for e in starts] == [0.1, 0.1]  # every trial trained at 0.1
    assert yaml.safe_load((here / "run" / "config.yaml").read_text())["lr"] == 0.1


def test_changing_a_setting_against_the_log_is_refused(here, capsys):
    _edit_config(here / "run", lr=5.0)  # even when config.yaml was edited to agree with it
    before = (here / "run" / "trials.jsonl").read_bytes()
    code, _, err = _run([*ARGV, "--lr", "5.0"], capsys)
    assert code == 2
    error = [ln for ln in err.splitlines() if ln.startswith("cellblock: error:")]
    assert len(error) == 1 and "lr: 0.1 there, 5.0 now" in error[0]
    assert (here / "run" / "trials.jsonl").read_bytes() == before


def test_train_uses_the_logs_dataset_not_config_yaml(here, capsys):
    _npz(here / "other.npz", 60, 1)
    _edit_config(here / "run", dataset="other.npz")
    code, out, err = _run(["train", "run", "--trial", "0", "--epochs", "1", "--no-progress"],
                          capsys)
    assert code == 0, err
    assert ("disagrees with trials.jsonl (dataset: 'other.npz' in config.yaml, 'data.npz' in the "
            "log)") in err
    metrics = json.loads((here / "run" / "train" / "trial_0" / "metrics.json").read_text())
    assert metrics["dataset"] == "data.npz"


@pytest.mark.parametrize("command", [
    ["train", "run", "--trial", "0", "--epochs", "1", "--no-progress"],
    ["export", "run", "--trial", "0", "--format", "json", "--out", "exp"],
    ["report", "run"],
])
def test_commands_reading_a_run_refuse_changed_inputs(command, here, capsys):
    _npz(here / "data.npz", 90, 7)  # the dataset changed after the search
    before = sorted(p.name for p in (here / "run").iterdir())
    code, _, err = _run(command, capsys)
    assert code == 2, err
    error = [ln for ln in err.splitlines() if ln.startswith("cellblock: error:")]
    assert len(error) == 1
    assert "changed since it was searched" in error[0] and "data.npz" in error[0]
    assert "--allow-changed-inputs" in error[0]
    assert sorted(
        p.name for p in (here / "run").iterdir()) == before and not (here / "exp").exists()
    code, _, err = _run([*command, "--allow-changed-inputs"], capsys)
    assert code == 0, err
    assert "uses changed inputs (--allow-changed-inputs)" in err


def test_unchanged_inputs_read_from_another_directory_pass(here, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run's relative inputs are found from its search directory
    code, _, err = _run(["report", str(here / "run"), "--out", str(tmp_path / "r.html")], capsys)
    assert code == 0, err
