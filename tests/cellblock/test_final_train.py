"""`cellblock train`: checkpoints, resume after SIGKILL, test accuracy, weights found by export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spaces import conv_space

import cellblock
from cellblock.core.config import RunConfig
from cellblock.export.final_train import final_train, weights_path

TINY = {"stages": 1, "widths": [[8]], "strides": [1], "depth": [1, 1], "block_types": ["basic"],
        "attentions": ["none", "se"], "kernels": [3], "stem_width": 8}
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_kill_then_resume_to_completion(tmp_path):
    run = tmp_path / "run"
    cellblock.search(space="blocks", space_args=TINY, trials=1, epochs=1,
                     objectives="accuracy,macs",
                     device="cpu", out=str(run), seed=0, strategy="random")
    epochs = 6
    cmd = [sys.executable, "-m", "cellblock", "train", str(run), "--trial", "0", "--epochs",
           str(epochs),
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True,
                            env=dict(os.environ))
    first = ""
    for line in proc.stdout:  # kill right after the first checkpoint is reported
        if line.startswith("checkpoint: epoch"):
            first = line
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert first and proc.returncode == -signal.SIGKILL
    ckpt = torch.load(run / "train" / "trial_0" / "checkpoint.pt", weights_only=True)
    killed_at = ckpt["state"]["epoch"]
    assert 1 <= killed_at < epochs
    assert not (run / "train" / "trial_0" / "metrics.json").exists()

    logs: list[str] = []
    m = final_train(run, 0, epochs, device="cpu", log=logs.append)
    assert any("resuming" in line for line in logs)
    assert m["resumed_from_epoch"] == killed_at and m["epochs"] == epochs
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["test_size"] > 0
    assert weights_path(run, 0).is_file()
    saved = json.loads((run / "train" / "trial_0" / "metrics.json").read_text())
    assert saved["test_accuracy"] == m["test_accuracy"]

    # the resumed training ends exactly where an uninterrupted one does
    fresh = final_train(run, 0, epochs, out=tmp_path / "straight", device="cpu", log=lambda s: None)
    a = torch.load(weights_path(run, 0), weights_only=True)
    b = torch.load(tmp_path / "straight" / "weights.pt", weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert fresh["val_accuracy"] == m["val_accuracy"]

    # export picks up the trained weights
    from cellblock.export import export_items, items_from_run, select_trials

    items = items_from_run(run, select_trials(cellblock.load_run(str(run)), trial=0))
    report = export_items(items, tmp_path / "exp", ["pytorch"])
    assert report["exports"][0]["weights"].startswith("trained")


def test_final_training_uses_the_runs_val_fraction(tmp_path):
    run = tmp_path / "run"
    cellblock.search(space="blocks", space_args=TINY, trials=1, epochs=1,
                     objectives="accuracy,macs",
                     device="cpu", out=str(run), seed=0, strategy="random", val_fraction=0.4)
    m = final_train(run, 0, 1, device="cpu", log=lambda s: None)
    assert m["identity"]["val_fraction"] == 0.4 and m["test_size"] == 269
    # validation accuracy is a count out of the 719 images of val_fraction 0.4 (not 269)
    assert 0 < m["val_accuracy"] < 1
    assert round(m["val_accuracy"] * 719) / 719 == pytest.approx(m["val_accuracy"], abs=1e-12)
    # runs without the key keep their old identity (no val_fraction entry)
    from cellblock.export.final_train import _identity

    assert "val_fraction" not in _identity(RunConfig(dataset="digits"), "a", 0, 1)


def test_train_and_export_of_a_run_with_relative_inputs_work_from_another_directory(tmp_path,
                                                                                    monkeypatch):
    """A search run with ``--dataset mine.npz --space s.py:space`` from its project directory;
    ``cellblock train`` and ``export`` of it from elsewhere find both (the run records where
    the search ran)."""
    import numpy as np

    from cellblock.cli import main
    from cellblock.data import load_dataset

    digits = load_dataset("digits")
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    x = (digits.x_train[:300] * 16).clamp(0, 255).to(torch.uint8).numpy()
    np.savez(project / "mine.npz", x=x, y=digits.y_train[:300].numpy())
    (project / "s.py").write_text(conv_space([4, 8]))
    monkeypatch.chdir(project)
    assert main(["search", "--space", "s.py:space", "--dataset", "mine.npz", "--trials", "2",
                 "--epochs", "1", "--objectives", "accuracy,params", "--out", "run",
                 "--no-progress", "--device", "cpu"]) == 0
    monkeypatch.chdir(elsewhere)
    run = str(project / "run")
    assert main(["train", run, "--trial", "0", "--epochs", "1", "--device", "cpu"]) == 0
    metrics = json.loads((project / "run" / "train" / "trial_0" / "metrics.json").read_text())
    assert metrics["dataset"] == str(project / "mine.npz")
    assert main(["export", run, "--trial", "0", "--format", "pytorch", "--out", "exp"]) == 0
    assert (elsewhere / "exp").is_dir()
    from cellblock.export.final_train import run_inputs
    from cellblock.pareto.results import load_run

    cfg = run_inputs(load_run(run))
    assert cfg.dataset == str(project / "mine.npz")
    assert cfg.space == f"{project / 's.py'}:space"
    # from the project directory the recorded relative paths are used as they are
    monkeypatch.chdir(project)
    cfg = run_inputs(load_run("run"))
    assert (cfg.dataset, cfg.space) == ("mine.npz", "s.py:space")
