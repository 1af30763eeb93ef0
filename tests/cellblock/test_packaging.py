"""The built wheel holds every subpackage under its cellblock.* name and works outside the repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("search_spaces", "strategies", "supernet", "evaluators")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")  # build from a copy: setuptools writes build/ in place
    for name in ("pyproject.toml", "README.md", "cellblock", *SUBPACKAGES):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"building the wheel failed: {done.stderr[-2000:]}")
    (whl,) = out.glob("cellblock-*.whl")
    return whl


def test_wheel_maps_the_top_level_folders_into_cellblock(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for sub in SUBPACKAGES:
        assert f"cellblock/{sub}/__init__.py" in names, sub
    assert not any(n.startswith(tuple(f"{s}/" for s in SUBPACKAGES)) for n in names)
    # every sub-package of cellblock/ is listed in pyproject (a missing one would be left out)
    for init in sorted((REPO / "cellblock").rglob("__init__.py")):
        assert init.relative_to(REPO).as_posix() in names, init
    # and so is every sub-package of the top-level folders (evaluators/latency/...)
    for sub in SUBPACKAGES:
        for init in sorted((REPO / sub).rglob("__init__.py")):
            assert f"cellblock/{init.relative_to(REPO).as_posix()}" in names, init
    assert "cellblock/cli/app.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)


@pytest.mark.slow
def test_installed_wheel_imports_outside_the_repo(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    code = (
        "import cellblock, cellblock.search_spaces, cellblock.strategies, cellblock.evaluators, "
        "cellblock.supernet, cellblock.cli\n"
        "print(cellblock.__file__)\n"
        "print(sorted(cellblock.search_spaces.SPACES.names()))\n"
        "print(sorted(cellblock.strategies.STRATEGIES.names()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith(str(target)), lines[0]
    assert "blocks" in lines[1] and "evolution" in lines[2]
