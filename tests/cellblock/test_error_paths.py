"""Issue 28, row 8: one-line errors name their path (a full disk included), and the summary
names only files that exist."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from tiny_run import copy_run, search_argv, shared_run

from cellblock.cli import main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)[0]


def _disk_full(*args, **kwargs):
    # as a write on a full disk: no file name
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _error_line(code: int, capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cellblock: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_full_disk_while_writing_the_report_names_the_file(finished_run, tmp_path, capsys,
                                                             monkeypatch):
    run = copy_run(finished_run, tmp_path)
    from cellblock.core import fileio

    monkeypatch.setattr(fileio.os, "replace", _disk_full)
    line = _error_line(main(["report", str(run), "--out", str(tmp_path / "r.html")]), capsys)
    assert "(ENOSPC)" in line and "r.html" in line
    assert not (tmp_path / "r.html").exists()


def test_a_full_disk_while_appending_to_the_log_names_the_log(finished_run, tmp_path, capsys,
                                                              monkeypatch):
    from cellblock.records import log as log_mod

    class FullDisk:
        def __init__(self, *a, **k):
            pass

        def write(self, text):
            _disk_full()

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(log_mod, "open", FullDisk, raising=False)
    argv = search_argv(finished_run.parent / "sp.py")
    line = _error_line(main([*argv, "--out", str(tmp_path / "new")]), capsys)
    assert "(ENOSPC)" in line and str(tmp_path / "new" / "trials.jsonl") in line


def test_the_summary_names_only_files_that_exist(finished_run, tmp_path, capsys, monkeypatch):
    from cellblock.pareto import report

    def no_report(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                      str(tmp_path / "new" / "report.html"))

    monkeypatch.setattr(report, "write_report", no_report)
    argv = search_argv(finished_run.parent / "sp.py")
    assert main([*argv, "--out", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "new" / "report.html").exists()
    assert "report: " not in out
    assert "not written: report.html ('cellblock report" in out
    assert f"plot: {tmp_path / 'new' / 'pareto.png'}" in out  # the files that exist are still named
