"""The HTML report: self-contained, and rendered by a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import cellblock
from cellblock.pareto.report import hypervolume_curve, write_report

TINY = {"stages": 1, "widths": [[8, 12]], "strides": [1], "depth": [1, 1],
        "block_types": ["basic", "mbconv"],
        "attentions": ["none", "se"], "kernels": [3], "expansions": [1, 2], "stem_width": 8}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    cellblock.search(space="blocks", space_args=TINY, trials=3, epochs=1,
                     objectives="accuracy,macs,latency_ms", device="cpu", out=str(out), seed=2,
                     strategy="random", latency_repeats=3)
    return out


def test_search_writes_a_self_contained_report(run_dir):
    page = (run_dir / "report.html").read_text()
    assert "Plotly" in page and len(page) > 1_000_000
    assert re.search(r"plotly\.js v\d+\.\d+\.\d+", page)  # the plotly.js bundle itself, inline
    data = cellblock.load_run(str(run_dir))
    assert all(t.arch_id in page for t in data.trials)  # every trial is in the page
    assert not re.search(r"<script[^>]+src=", page)  # no CDN / external script
    data = cellblock.load_run(str(run_dir))
    numbers, hv = hypervolume_curve(data.trials, data.objectives)
    assert len(numbers) == 3 and all(b >= a for a, b in zip(hv, hv[1:])) and hv[-1] > 0


def _chromium() -> str | None:
    return shutil.which(
        "chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None,
                    reason="Chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    path = write_report(run_dir, tmp_path / "report.html")
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=10000", "--dump-dom", path.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    assert dom.count('class="main-svg"') >= 8  # 4 plots, 2 SVG layers each, drawn by plotly.js
    assert dom.count('class="point"') >= 3  # scatter markers were drawn
    assert "Accuracy vs MACs" in dom and "Hypervolume over trials" in dom


def test_objectives_beyond_the_usual_columns_are_shown(tmp_path):
    """A run's other objectives and constraint metrics get their own columns in trials.csv,
    pareto.csv, ``cellblock show`` and the report."""
    import csv

    from cellblock.pareto.results import load_run, summary

    out = tmp_path / "px"
    cellblock.search(space="blocks", space_args=TINY, trials=3, evaluator="proxy",
                     objectives="naswot,macs", constraints=["synflow>=0"], device="cpu",
                     out=str(out), seed=2, strategy="random")
    for name in ("trials.csv", "pareto.csv"):
        rows = list(csv.DictReader(open(out / name, encoding="utf-8")))
        assert list(rows[0])[8:] == ["naswot", "synflow", "error", "arch"], name
        assert all(float(r["naswot"]) != 0 for r in rows)
    table = summary(load_run(str(out)))
    header = next(line for line in table.splitlines() if line.split()[:2] == ["trial", "arch_id"])
    assert header.split()[-2:] == ["naswot", "synflow"]
    assert "<th>naswot</th>" in (out / "report.html").read_text()
