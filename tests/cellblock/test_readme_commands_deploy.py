"""Every command of the README's ``bash`` blocks runs as written: the ``deploy`` chain.

See ``tests/readme_blocks.py`` (its own module, so that it runs beside the other chains).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from readme_blocks import bash_blocks, make_workdir, run_block


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("readme-deploy"))


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(bash_blocks("deploy"))))
def test_readme_block_runs_as_written(workdir, index):
    run_block(workdir, "deploy", index)
