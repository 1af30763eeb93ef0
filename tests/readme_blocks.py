"""The README's ``bash`` blocks, grouped in chains, and how the README tests run them.

Every command of the README's ``bash`` blocks runs as written (issue 16). The blocks of
one *chain* run in order, each as one ``bash -e`` script, in one fresh temporary
directory where ``make demo``'s run already exists (made with the demo's own config and a
smaller budget, which a run may extend; the ``supernet`` chain does not use it). Chains are groups
of README sections whose
commands share files; each chain has its own test module, so that the chains run in
parallel under ``pytest -n 2 --dist load`` (a block whose worker has not run the chain's
earlier blocks runs them first). A block in a section no chain names
belongs to the ``main`` chain, so a new README block is tested without any change here.

Files the README shows (``my_space.py``, ``config.yaml``) are written into each directory
from the README itself; ``../shared/nb201_cifar100.csv`` is a synthetic NAS-Bench-201 table
of every cell (:mod:`nb201_table`), so the blocks that use it run everywhere.

Two kinds of lines are not run, by rule: ``make ...`` (the set-up this suite runs in)
and nothing else. Examples that need hardware or services a test machine lacks (GPUs,
a Ray cluster, a dashboard) are ``console`` blocks, which these tests do not run.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nb201_table import write_nb201_table

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: Chain -> the ``## `` sections (by the start of their title) whose blocks it runs.
CHAINS = {
    "supernet": ("Weight-sharing supernet",),
    "deploy": ("Export, final training, report", "Latency on the target device"),
}


def _chain_of(section: str) -> str:
    for chain, titles in CHAINS.items():
        if any(section.startswith(t) for t in titles):
            return chain
    return "main"


def bash_blocks(chain: str | None = None) -> list[str]:
    """The README's ``bash`` blocks (of ``chain``, or all), with the ``make ...`` lines left out."""
    out, section = [], ""
    text = README.read_text(encoding="utf-8")
    for part in re.split(r"(^## [^\n]*$|```bash\n.*?```)", text, flags=re.S | re.M):
        if part.startswith("## "):
            section = part[3:].strip()
            continue
        if not part.startswith("```bash\n"):
            continue
        lines = [ln for ln in part[8:-3].splitlines() if not ln.strip().startswith("make ")]
        if not any(ln.strip() and not ln.strip().startswith("#") for ln in lines):
            continue
        if chain is None or _chain_of(section) == chain:
            out.append("\n".join(lines))
    return out


def readme_file(marker: str, lang: str) -> str:
    """The README code block of ``lang`` whose text starts with (or is) ``marker``'s file."""
    for block in re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"),
                            flags=re.S):
        if block.startswith(marker) or marker == "":
            return block
    raise AssertionError(f"the README has no {lang} block starting with {marker!r}")


def run(work: Path, script: str) -> subprocess.CompletedProcess:
    """``script`` under ``bash -e -o pipefail`` in ``work``, with this venv's commands first."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-x", "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)


#: make demo's run: the demo's config (a run may be extended, so a smaller budget is the same
#: run); unstable latencies (a busy test machine) may reach the front, so that the examples
#: that pick from the front do not depend on the machine's load
DEMO = "cellblock search --trials 2 --no-progress --allow-unstable-latency"


def demo_results(shared: Path) -> Path:
    """``results/`` holding ``make demo``'s run, made once under ``shared`` (a directory of this
    test session that every xdist worker sees) by whichever chain needs it first."""
    made = shared / "readme-demo"
    with open(shared / "readme-demo.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits for it, then copies it
        if not (made / "done").is_file():
            shutil.rmtree(made, ignore_errors=True)
            made.mkdir()
            done = run(made, DEMO)
            assert done.returncode == 0, done.stderr[-3000:]
            (made / "done").touch()
    return made / "results"


def make_workdir(root: Path, demo: bool = True, shared: Path | None = None) -> Path:
    """A fresh directory with the README's files and (``demo``) a copy of ``make demo``'s run
    in it (made once in ``shared``, or in ``root`` without one)."""
    work = root / "work"
    work.mkdir()
    write_nb201_table(root / "shared" / "nb201_cifar100.csv")
    (work / "my_space.py").write_text(readme_file("# my_space.py", "python"), encoding="utf-8")
    (work / "config.yaml").write_text(readme_file("", "yaml"), encoding="utf-8")
    if demo:  # a moved run is the same run (its inputs are hashed by content, not path)
        shutil.copytree(demo_results(shared or root), work / "results")
    return work


#: Blocks already run in each work directory (a chain's blocks build on each other's files).
_DONE: dict[Path, set[int]] = {}


def run_block(work: Path, chain: str, index: int) -> None:
    """Run block ``index`` of ``chain`` in ``work``; fail with its stderr if it fails.

    The chain's earlier blocks run first where they have not run in ``work``: under
    ``make test``'s ``--dist load`` the blocks of one chain may go to two workers (each
    with its own work directory), and a block needs the files of the ones before it.
    """
    done = _DONE.setdefault(work, set())
    for before in range(index):
        if before not in done:
            _run_one(work, chain, before, f" (run first, as block {index} needs its files)")
    _run_one(work, chain, index, "")


def _run_one(work: Path, chain: str, index: int, why: str) -> None:
    script = bash_blocks(chain)[index]
    _DONE[work].add(index)
    done = run(work, script)
    assert done.returncode == 0, (
        f"README block {index} of chain {chain!r}{why} failed (exit {done.returncode}):\n{script}\n"
        f"--- stderr (end) ---\n{done.stderr[-4000:]}"
    )


def chain_tests(chain: str, demo: bool = True) -> tuple:
    """``(workdir fixture, test)`` for a ``test_readme_commands_*.py`` module of ``chain``.

    Assign them to ``workdir`` and ``test_readme_block_runs_as_written`` in the module.
    """

    @pytest.fixture(scope="module", name="workdir")
    def workdir(tmp_path_factory) -> Path:
        base = tmp_path_factory.getbasetemp()  # under xdist, its parent is this run's, shared
        shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
        return make_workdir(tmp_path_factory.mktemp(f"readme-{chain}"), demo=demo, shared=shared)

    @pytest.mark.slow
    @pytest.mark.parametrize("index", range(len(bash_blocks(chain))))
    def test_readme_block_runs_as_written(workdir, index):
        run_block(workdir, chain, index)

    return workdir, test_readme_block_runs_as_written
