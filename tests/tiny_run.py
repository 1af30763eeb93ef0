"""A finished run of a tiny space, made once per test session and copied by each test."""

from __future__ import annotations

import shutil
from pathlib import Path

from spaces import conv_space

SPACE = conv_space([2, 4, 6])


def search_argv(space_file: Path) -> list[str]:
    """The ``cellblock search`` options of the tiny run (add ``--out``)."""
    return ["search", "--space", f"{space_file}:space", "--trials", "2", "--epochs", "1",
            "--objectives", "accuracy,macs", "--device", "cpu", "--strategy", "random",
            "--no-progress"]


def shared_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """``(run directory, search argv without --out)`` of a finished 2-trial run: made once per
    session (do not change it; copy it with :func:`copy_run`)."""
    from cellblock.cli import main

    base = tmp_path_factory.getbasetemp() / "tiny_run_shared"
    space_file = base / "sp.py"
    argv = search_argv(space_file)
    if not (base / "run" / "trials.jsonl").is_file():
        base.mkdir(exist_ok=True)
        space_file.write_text(SPACE)
        if main([*argv, "--out", str(base / "run")]) != 0:
            raise RuntimeError("the tiny run failed")
    return base / "run", argv


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of ``run`` at ``dest/run``."""
    out = dest / "run"
    shutil.copytree(run, out)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}
