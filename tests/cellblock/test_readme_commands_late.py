"""The README's ``bash`` blocks from the first export on (see ``test_readme_commands.py``),
in a directory of their own, so that a second test process runs them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "readme_commands", Path(__file__).with_name("test_readme_commands.py"))
readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme)

workdir = readme.workdir  # the same fixture: a fresh directory with the demo's run, for this module


@pytest.mark.slow
@pytest.mark.parametrize("index", range(readme.first_export_block(), len(readme.bash_blocks())))
def test_readme_block_runs_as_written(workdir, index):
    readme.check_block(workdir, index)
