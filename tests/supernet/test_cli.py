"""Supernet CLI: kill and resume, bad checkpoints, and the evaluator inside a search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import cellblock
from cellblock.cli import main
from cellblock.supernet.checkpoint import load_checkpoint

SPACE_ARGS = ["stages=2", "widths=[[4,8],[8,12]]", "strides=[1,2]", "stem_width=4",
              "depth=[1,2]", "block_types=[basic,mbconv]", "kernels=[3]", "expansions=[1,2]",
              "attentions=[none,se]"]


def train_argv(out: Path, epochs: int, *extra: str) -> list[str]:
    argv = ["supernet", "train", "--space", "blocks", "--epochs", str(epochs), "--out", str(out),
            "--batch-size", "256", "--device", "cpu", "--sampling", "fair"]
    for a in SPACE_ARGS:
        argv += ["--space-arg", a]
    return argv + list(extra)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("sn") / "sn.pt"
    assert main(train_argv(out, 1)) == 0
    return out


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    killed, clean = tmp_path / "killed.pt", tmp_path / "clean.pt"
    epochs = 6
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cellblock", *train_argv(killed, epochs)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not killed.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = load_checkpoint(killed)
    assert not partial.done and 1 <= partial.epoch < epochs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the killed process's thread count: same float reductions
    try:
        assert main(train_argv(killed, epochs)) == 0  # resumes
        assert main(train_argv(clean, epochs)) == 0
    finally:
        torch.set_num_threads(threads)
    a, b = load_checkpoint(killed), load_checkpoint(clean)
    assert a.done and a.step == b.step
    for bank_a, bank_b in zip(a.banks, b.banks, strict=True):
        for k, v in bank_b.items():
            assert torch.equal(bank_a[k], v), k


def test_corrupt_and_mismatched_checkpoints_fail_with_one_line(tmp_path, checkpoint, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(train_argv(bad, 1)) == 2
    assert main(["supernet", "rank", "--supernet", str(bad), "--epochs", "1", "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("cellblock: error:") and "corrupt" in line
                                 for line in err)
    # another skeleton, another recipe, another space: each refused before anything changes
    mtime = checkpoint.stat().st_mtime
    other = [a if not a.startswith("kernels") else "kernels=[5]" for a in SPACE_ARGS]
    argv = train_argv(checkpoint, 1)
    argv = [other[SPACE_ARGS.index(a)] if a in SPACE_ARGS else a for a in argv]
    assert main(argv) == 2
    assert main(train_argv(checkpoint, 1, "--lr", "0.5")) == 2
    assert main(["search", "--evaluator", "supernet", "--supernet", str(checkpoint), "--space",
                 "nb201", "--trials", "1", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "another skeleton" in err and "lr=" in err and "space 'blocks'" in err
    assert checkpoint.stat().st_mtime == mtime and not (tmp_path / "run").exists()
    assert main(["search", "--evaluator", "supernet", "--trials", "1"]) == 2
    assert "needs a checkpoint" in capsys.readouterr().err


def test_search_with_the_supernet_evaluator(tmp_path, checkpoint):
    space_args = {}
    for a in SPACE_ARGS:
        k, _, v = a.partition("=")
        space_args[k] = __import__("yaml").safe_load(v)
    run = cellblock.search(
        space="blocks", space_args=space_args, evaluator="supernet", supernet=str(checkpoint),
        strategy="evolution", trials=6, objectives=["accuracy", "macs"], dataset="digits",
        device="cpu", out=str(tmp_path / "run"), seed=1,
    )
    done = [t for t in run.trials if t.status == "COMPLETE"]
    assert len(done) == 6, [t.error for t in run.trials]
    for t in done:
        assert 0 <= t.metrics["accuracy"] <= 1 and t.metrics["macs"] > 0 and t.metrics["params"] > 0
    assert run.pareto
    assert (tmp_path / "run").is_dir()


def test_rank_writes_json_and_csv(tmp_path, checkpoint, capsys):
    out = tmp_path / "rank"
    assert main(["supernet", "rank", "--supernet", str(checkpoint), "--samples", "4",
                 "--epochs", "1", "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads((out / "rank.json").read_text())
    for key in ("kendall_tau", "spearman", "kendall_tau_no_recal", "n", "supernet_s",
                "standalone_s"):
        assert key in result
    assert result["n"] == 4 and result["standalone_s"] > 0
    rows = (out / "rank.csv").read_text().strip().splitlines()
    assert len(rows) == 5 and rows[0].startswith("arch_id,standalone_accuracy")
    tau = result["kendall_tau"]
    warned = "warning: Kendall tau" in capsys.readouterr().err
    assert warned == (tau is None or tau < 0.3)


def test_val_fraction_is_kept_by_rank_and_checked_by_search_and_resume(tmp_path, capsys):
    ckpt = tmp_path / "v.pt"
    assert main(train_argv(ckpt, 1, "--val-fraction", "0.4")) == 0
    assert load_checkpoint(ckpt).val_fraction == 0.4
    out = tmp_path / "rank"
    assert main(["supernet", "rank", "--supernet", str(ckpt), "--samples", "3", "--epochs", "1",
                 "--batch-size", "128", "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads((out / "rank.json").read_text())
    assert result["val_fraction"] == 0.4 and result["batch_size"] == 128
    rows = [r.split(",") for r in (out / "rank.csv").read_text().strip().splitlines()[1:]]
    for row in rows:  # accuracies are counts out of the 719 images of the 0.4 split
        assert abs(float(row[2]) * 719 - round(float(row[2]) * 719)) < 1e-6
    capsys.readouterr()
    mtime = ckpt.stat().st_mtime
    assert main(train_argv(ckpt, 2)) == 2  # resumed with another split
    assert "--val-fraction 0.4" in capsys.readouterr().err and ckpt.stat().st_mtime == mtime
    space_args = [a for s in SPACE_ARGS for a in ("--space-arg", s)]
    run = tmp_path / "run"
    assert main(["search", "--evaluator", "supernet", "--supernet", str(ckpt), "--trials", "1",
                 "--out", str(run), "--no-progress", "--device", "cpu", *space_args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "set --val-fraction 0.4" in err and not run.exists()


@pytest.mark.slow
def test_rank_with_two_stand_alone_seeds_reports_their_agreement(tmp_path, checkpoint):
    out = tmp_path / "rank"
    argv = ["supernet", "rank", "--supernet", str(checkpoint), "--samples", "4", "--epochs", "1",
            "--seeds", "2", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    result = json.loads((out / "rank.json").read_text())
    assert result["seeds"] == 2 and "standalone_seed_tau" in result and "params_tau" in result
    lines = (out / "standalone.jsonl").read_text().splitlines()
    assert len(lines) == 8 and {json.loads(x)["repeat"] for x in lines} == {0, 1}
    import csv

    rows = list(csv.DictReader(open(out / "rank.csv", encoding="utf-8")))
    for row in rows:
        runs = [float(a) for a in row["standalone_runs"].split()]
        assert len(runs) == 2 and abs(sum(runs) / 2 - float(row["standalone_accuracy"])) < 1e-6
    assert main(argv) == 0  # everything cached: no stand-alone training again
    assert len((out / "standalone.jsonl").read_text().splitlines()) == 8
    assert main(argv[:-6] + ["--seeds", "0", "--out", str(out)]) == 2


def test_rank_finds_a_custom_npz_dataset_from_another_directory(tmp_path, monkeypatch, capsys):
    from cellblock.data import load_dataset

    digits = load_dataset("digits")
    x = (digits.x_train[:300] * 16).clamp(0, 255).to(torch.uint8).numpy()
    (tmp_path / "a").mkdir()
    np.savez(tmp_path / "a" / "mine.npz", x=x, y=digits.y_train[:300].numpy())
    monkeypatch.chdir(tmp_path / "a")
    assert main(train_argv(Path("sn.pt"), 1, "--dataset", "mine.npz")) == 0
    # the checkpoint names the file by its absolute path, not by its stem ("mine")
    assert load_checkpoint("sn.pt").dataset == str((tmp_path / "a" / "mine.npz").resolve())
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    argv = ["supernet", "rank", "--supernet", str(tmp_path / "a" / "sn.pt"), "--samples", "3",
            "--epochs", "1", "--out", "rank", "--device", "cpu", "--no-baselines"]
    assert main(argv) == 0
    assert json.loads(Path("rank/rank.json").read_text())["n"] == 3
    # a checkpoint naming its data by the stem only (as before) is one line saying what to do
    import dataclasses

    from cellblock.supernet.checkpoint import save_checkpoint

    ckpt = load_checkpoint(tmp_path / "a" / "sn.pt")
    save_checkpoint(tmp_path / "old.pt", dataclasses.replace(ckpt, dataset="mine"))
    capsys.readouterr()
    assert main([*argv[:3], str(tmp_path / "old.pt"), *argv[4:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown dataset 'mine'" in err[0] and "--dataset" in err[0]
    assert main([*argv[:3], str(tmp_path / "old.pt"), *argv[4:], "--dataset",
                 str(tmp_path / "a" / "mine.npz")]) == 0
