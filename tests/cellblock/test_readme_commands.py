"""Every command of the README's ``bash`` blocks runs as written (issue 16).

The blocks run in order, each as one ``bash -e`` script, in one fresh temporary
directory where ``make demo``'s run already exists (made here with the demo's own config
and a smaller budget, which a run may extend). Files the README shows (``my_space.py``,
``config.yaml``) are written there from the README itself; ``../shared`` points at the
NAS-Bench-201 table when it is present, and a block that needs it is skipped otherwise.

Two kinds of lines are not run, by rule: ``make ...`` (the set-up this suite runs in)
and nothing else. Examples that need hardware or services a test machine lacks (GPUs,
a Ray cluster, a dashboard) are ``console`` blocks, which this test does not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SHARED = REPO.parent / "shared"
TABLE = SHARED / "nb201_cifar100.csv"


def bash_blocks() -> list[str]:
    """The README's ``bash`` blocks, with the ``make ...`` lines left out."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        lines = [ln for ln in block.splitlines() if not ln.strip().startswith("make ")]
        if any(ln.strip() and not ln.strip().startswith("#") for ln in lines):
            out.append("\n".join(lines))
    return out


def readme_file(marker: str, lang: str) -> str:
    """The README code block of ``lang`` whose text starts with (or is) ``marker``'s file."""
    for block in re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        if block.startswith(marker) or marker == "":
            return block
    raise AssertionError(f"the README has no {lang} block starting with {marker!r}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    work = root / "work"
    work.mkdir()
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED)
    (work / "my_space.py").write_text(readme_file("# my_space.py", "python"), encoding="utf-8")
    (work / "config.yaml").write_text(readme_file("", "yaml"), encoding="utf-8")
    # make demo's run: the demo's config (a run may be extended, so a smaller budget is the same
    # run); unstable latencies (a busy test machine) may reach the front, so that the examples
    # that pick from the front do not depend on the machine's load
    done = run(work, "cellblock search --trials 2 --no-progress --allow-unstable-latency")
    assert done.returncode == 0, done.stderr[-3000:]
    return work


def run(work: Path, script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-x", "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)


def test_the_readme_has_commands_and_starts_with_the_two():
    text = README.read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).splitlines()
    assert first[0].startswith("make demo") and first[1].startswith("make test")
    assert len(bash_blocks()) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(bash_blocks())))
def test_readme_block_runs_as_written(workdir, index):
    script = bash_blocks()[index]
    if "../shared/" in script and not TABLE.is_file():
        pytest.skip(f"needs {TABLE} (NAS-Bench-201 table; see the README's section on it)")
    done = run(workdir, script)
    assert done.returncode == 0, (
        f"README block {index} failed (exit {done.returncode}):\n{script}\n--- stderr (end) ---\n"
        f"{done.stderr[-4000:]}"
    )
