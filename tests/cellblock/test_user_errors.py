"""Issue 30: every user error is one line (exit 2), the small things of a new user's day."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellblock.cli import main
from cellblock.core.errors import SpaceError
from cellblock.search_spaces.api import SearchSpace


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors and --version
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


RAISING_SPACE = """from torch import nn
def space(s, input_shape, num_classes):
    w = s.choice('width', [4, 8])
    table = {}
    return table[w]  # a bug of the user's: KeyError while sampling
"""


def test_space_that_raises_while_sampling_is_one_line_naming_space_and_decision(tmp_path, monkeypatch,
                                                                                capsys):
    monkeypatch.chdir(tmp_path)
    Path("s.py").write_text(RAISING_SPACE)
    code, _, err = _run(["search", "--space", "s.py:space", "--trials", "2", "--epochs", "1",
                         "--objectives", "accuracy,params", "--out", "run", "--no-progress",
                         "--device", "cpu"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "space 'space' raised KeyError while sampling after decision 'width'" in lines[0]
    assert "Traceback" not in err


def test_space_error_keeps_cellblock_errors_and_says_when_nothing_was_decided():
    def early(s, input_shape=(1, 8, 8), num_classes=10):
        raise RuntimeError("no GPU here")

    with pytest.raises(SpaceError, match=r"space 'early' raised RuntimeError while sampling before "
                                         r"its first decision: no GPU here"):
        SearchSpace(early).sample(np.random.default_rng(0))

    def own(s, input_shape=(1, 8, 8), num_classes=10):
        s.choice("a", [1, 2])
        s.choice("a", [3, 4])  # the sampler's own SpaceError passes through unchanged

    with pytest.raises(SpaceError, match="made twice with different domains"):
        SearchSpace(own).sample(np.random.default_rng(0))
