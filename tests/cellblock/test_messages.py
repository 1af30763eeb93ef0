"""Issue 29, part 5: library code prints nothing; the CLI shows its warnings and log lines.

A :class:`CellblockWarning` reads ``cellblock: warning: <message>`` on one line, a log
record at WARNING ``cellblock: notice: <message>``, one at INFO the message as it is.
"""

from __future__ import annotations

import ast
import logging
import warnings
from pathlib import Path

import pytest

from cellblock.cli.messages import user_messages
from cellblock.core.errors import CellblockWarning

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("cellblock", "search_spaces", "strategies", "supernet", "evaluators")


def _prints() -> list[str]:
    found = []
    for folder in LIBRARY:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("cellblock/cli/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id == "print"):
                    found.append(f"{rel}:{node.lineno}")
    return found


def test_library_code_calls_no_print():
    assert _prints() == [], "library code warns (warnings.warn) or logs; the CLI prints"


def test_the_cli_shows_warnings_and_log_lines_one_line_each(capsys):
    log = logging.getLogger("cellblock.run.example")
    with user_messages():
        warnings.warn("trial 3: latency stayed\n unstable", CellblockWarning, stacklevel=1)
        warnings.warn("trial 3: latency stayed\n unstable", CellblockWarning, stacklevel=1)
        log.info("supernet prior macs: scoring 6 reference children")
        log.warning("taking over the stale lock of %s", "run directory 'x'")
        log.debug("not shown")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "cellblock: warning: trial 3: latency stayed unstable",
        "cellblock: warning: trial 3: latency stayed unstable",  # every time, not once
        "supernet prior macs: scoring 6 reference children",
        "cellblock: notice: taking over the stale lock of run directory 'x'",
    ]


def test_other_warnings_go_where_they_went_and_the_setup_is_undone(monkeypatch, capsys):
    seen: list[type[Warning]] = []
    monkeypatch.setattr(warnings, "showwarning", lambda m, cat, *a, **k: seen.append(cat))
    logger = logging.getLogger("cellblock")
    before = (list(logger.handlers), logger.level, logger.propagate, warnings.showwarning)
    with user_messages():
        warnings.warn("a library of someone else's", DeprecationWarning, stacklevel=1)
        warnings.warn("ours", CellblockWarning, stacklevel=1)
    assert seen == [DeprecationWarning]
    assert capsys.readouterr().err == "cellblock: warning: ours\n"
    assert (list(logger.handlers), logger.level, logger.propagate, warnings.showwarning) == before
    with pytest.warns(CellblockWarning):  # outside the CLI, an ordinary warning
        warnings.warn("x", CellblockWarning, stacklevel=1)


def test_a_warning_of_a_command_reaches_the_user(tmp_path, capsys, monkeypatch):
    """A run whose report cannot be written says so through the CLI's warning line."""
    from cellblock.cli import main
    from cellblock.run import runner

    class Broken(runner.Runner):
        def write_derived(self) -> None:
            raise OSError("disk on fire")

    monkeypatch.setattr(runner, "Runner", Broken)  # the handler imports it when it runs
    code = main(["search", "--evaluator", "proxy", "--strategy", "random", "--trials", "1",
                 "--no-progress", "--objectives", "synflow,macs", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert ("cellblock: warning: derived files or report.html not written (disk on fire)"
            in err.splitlines())
