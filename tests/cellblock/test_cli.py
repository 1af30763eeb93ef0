"""CLI: bad input gives one line and exit 2 with no run directory; show and spaces work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from spaces import conv_space

from cellblock.cli import main


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv, message", [
    (["search", "--trials", "many"], "argument --trials: invalid int value: 'many'"),
    (["search", "--bogus"], "unrecognized arguments: --bogus"),
    (["search", "--trials", "0"], "'trials' must be > 0"),
    (["search", "--space", "nope"], "unknown space 'nope'; known: blocks"),
    (["search", "--strategy", "nope"], "unknown strategy 'nope'; known: evolution, nsga2, optuna:"),
    (["search", "--evaluator", "nope"], "unknown evaluator 'nope'; known:"),
    (["search", "--objectives", "accuracy,flops"], "unknown metric 'flops'"),
    (["search", "--constraint", "macs<"], "bad constraint 'macs<'"),
    (["search", "--dataset", "cifar10", "--data-dir", "NODIR"], "NODIR"),
    (["search", "--strategy-arg", "pop=3"], "strategy 'predictive' has no option 'pop'"),
    (["search", "--space-arg", "stages=0"], "stages"),
    (["search", "--device", "tpu"], "'device' must be auto, cpu"),
    (["search", "--val-fraction", "0"], "'val_fraction' must be in (0, 1)"),
    (["search", "--val-fraction", "1.5"], "'val_fraction' must be in (0, 1)"),
    (["search", "--val-fraction", "half"], "argument --val-fraction: invalid float value: 'half'"),
    (["search", "--val-fraction", "0.9"],
     "val_fraction 0.9 plus the test fraction 0.15 leaves no training data"),
    (["show", "NORUN"], "is not a cellblock run directory"),
    (["nope"], "invalid choice: 'nope'"),
])
def test_bad_input_one_line_exit_2_nothing_created(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(argv + (["--out", "run"] if argv[0] == "search" else []), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cellblock: error: "), err
    assert message in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()


def test_bad_yaml_and_unknown_key(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text("trials: [3\n")
    code, _, err = _run(["search", "bad.yaml"], capsys)
    assert code == 2 and "malformed YAML" in err and len(err.strip().splitlines()) == 1
    Path("typo.yaml").write_text("trails: 3\n")
    code, _, err = _run(["search", "typo.yaml"], capsys)
    assert code == 2 and "unknown config key 'trails'" in err
    assert not Path("results").exists()


def test_spaces_lists_spaces_and_blocks(capsys):
    code, out, _ = _run(["spaces"], capsys)
    assert code == 0
    assert "blocks" in out and "mbconv" in out and "inception" in out and "size" in out
    # the default skeleton's choices, and the block's own where they differ
    assert "mbconv       options: kernel [3, 5] (own [3, 5, 7])" in out


@pytest.mark.slow
def test_real_subprocess_search_show_and_refusal(tmp_path):
    """The installed entry point, for real: search, show, and exit 2 leaving results untouched."""
    space = tmp_path / "s.py"
    space.write_text(conv_space([4, 8]))
    env = {**os.environ, "PYTHONPATH": ""}
    cmd = [sys.executable, "-m", "cellblock", "search", "--space", f"{space}:space", "--trials",
           "2",
           "--epochs", "1", "--objectives", "accuracy,params", "--out", str(tmp_path / "run"),
           "--no-progress", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Pareto front" in done.stdout and "best validation accuracy" in done.stdout
    shown = subprocess.run([sys.executable, "-m", "cellblock", "show", str(tmp_path / "run")],
                           capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0 and "trials: 2 (2 complete" in shown.stdout
    before = (tmp_path / "run" / "trials.jsonl").read_bytes()
    bad = subprocess.run(cmd[:-3] + ["--strategy", "nsga2", "--no-progress"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "different config" in bad.stderr
    assert (tmp_path / "run" / "trials.jsonl").read_bytes() == before


def test_search_with_val_fraction_records_it_and_refuses_another(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("s.py").write_text(conv_space([4, 8]))
    argv = ["search", "--space", "s.py:space", "--trials", "2", "--epochs", "1", "--objectives",
            "accuracy,params", "--out", "run", "--no-progress", "--device", "cpu", "--val-fraction",
            "0.4"]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    import yaml

    from cellblock.pareto.results import load_run

    assert yaml.safe_load(Path("run/config.yaml").read_text())["val_fraction"] == 0.4
    accs = [t.value("accuracy") for t in load_run("run").trials]
    assert len(accs) == 2
    for acc in accs:  # scored on the 719 validation images of val_fraction 0.4 (not 269)
        assert 0 < acc < 1 and round(acc * 719) / 719 == pytest.approx(acc, abs=1e-12)
    before = Path("run/trials.jsonl").read_bytes()
    code, _, err = _run(argv[:-1] + ["0.3"], capsys)
    assert code == 2 and "different config" in err and "val_fraction" in err
    assert len(err.strip().splitlines()) == 1
    assert Path("run/trials.jsonl").read_bytes() == before
