"""Issue 30: what the README's commands write into the repository is git-ignored, so that
``make lint`` (ruff, which skips ignored files) passes after every README command ran."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from readme_blocks import bash_blocks

REPO = Path(__file__).resolve().parents[2]
#: Outputs that are part of the repository (benchmarks committed with their command).
TRACKED = ("results/benchmarks/",)


def readme_outputs() -> list[str]:
    """Every relative ``--out`` of the README's bash blocks (outside ../ and /tmp)."""
    outs = {m for block in bash_blocks() for m in re.findall(r"--out\s+(\S+)", block)}
    return sorted(
        o for o in outs if not o.startswith(("/", "..", "$")) and not o.startswith(TRACKED))


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs git and a checkout")
def test_every_readme_output_is_ignored_and_lint_skips_generated_sources(tmp_path):
    outs = readme_outputs()
    assert {"exported/knee", "lut.json", "results/inherited", "results/supernet.pt",
            "results/rank"} <= set(outs)
    # what each output holds: a run or export folder gets a generated model.py, files as named
    paths = [o if "." in Path(o).name else f"{o}/trial_0/model.py" for o in outs]
    done = subprocess.run(["git", "check-ignore", "--no-index", "-v", "--stdin"], cwd=REPO,
                          input="\n".join(paths) + "\n", capture_output=True, text=True)
    ignored = {line.split("\t", 1)[1] for line in done.stdout.splitlines() if "\t" in line}
    assert sorted(set(paths) - ignored) == []
