"""Issue 30: ``make test`` never sits idle after crashed workers or a stuck test."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CRASH = ("import os\n\ndef test_before():\n    pass\n\ndef test_crash():\n    os._exit(1)\n\n"
         "def test_after():\n    pass\n")
STUCK = ("import threading\n\ndef test_stuck():\n    threading.Event().wait()\n\n"
         "def test_next():\n    pass\n")
FINE = "def test_one():\n    pass\n\ndef test_two():\n    pass\n"


def make_test_options() -> list[str]:
    """The pytest options of the Makefile's ``test`` target (after ``-m pytest``)."""
    recipe = (REPO / "Makefile").read_text(encoding="utf-8").split("\ntest:", 1)[1]
    line = next(ln for ln in recipe.splitlines() if "-m pytest" in ln)
    return shlex.split(line.split("-m pytest", 1)[1])


@pytest.mark.slow
def test_crashed_workers_and_a_stuck_test_fail_alone_and_the_rest_runs(tmp_path):
    options = make_test_options()
    assert "-n" in options and "--dist" in options
    for i in range(5):  # five crashed workers, as in the issue
        (tmp_path / f"test_crash_{i}.py").write_text(CRASH)
    (tmp_path / "test_stuck.py").write_text(STUCK)
    for i in range(3):
        (tmp_path / f"test_fine_{i}.py").write_text(FINE)
    cmd = [sys.executable, "-m", "pytest", *options, "-p", "no:cacheprovider", "--rootdir",
           str(tmp_path), "-o", "timeout=5", "-o", "timeout_method=thread", str(tmp_path)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    summary = out.strip().splitlines()[-1]
    # every crashed or stuck test fails once; every other test runs and passes
    assert re.search(r"\b6 failed, 17 passed\b", summary), out[-3000:]
    assert "INTERNALERROR" not in out
