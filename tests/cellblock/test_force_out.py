"""Issue 28, row 2: ``--force`` replaces only what cellblock made; no ``--out`` writes over a
record file (``trials.jsonl``, ``config.yaml``, a checkpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_run import copy_run, shared_run, snapshot

from cellblock.cli import main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)[0]


def _refused(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("cellblock: error:"), err
    return err


def _export(run: Path, out: Path, *extra: str) -> list[str]:
    return ["export", str(run), "--trial", "0", "--format", "json", "--out", str(out), *extra]


def test_export_force_into_the_run_directory_is_refused(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    before = snapshot(tmp_path)
    err = _refused(_export(run, run, "--force"), capsys)
    assert str(run) in err and "run directory" in err
    err = _refused(_export(run, tmp_path, "--force"), capsys)  # a parent of the run
    assert "holds it" in err
    assert snapshot(tmp_path) == before  # trials.jsonl and everything else untouched


def test_export_force_over_a_users_folder_is_refused(finished_run, tmp_path, capsys):
    from cellblock.export.outdir import EXPORT_MARKER

    run = copy_run(finished_run, tmp_path)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\chapter{years of work}")
    err = _refused(_export(run, thesis, "--force"), capsys)
    assert "did not write" in err and EXPORT_MARKER in err
    assert (thesis / "thesis.tex").read_text() == "\\chapter{years of work}"


def test_export_force_replaces_an_earlier_export_only_while_it_holds_nothing_else(finished_run,
                                                                                  tmp_path, capsys):
    from cellblock.export.outdir import EXPORT_MARKER

    run = copy_run(finished_run, tmp_path)
    out = tmp_path / "exp"
    assert main(_export(run, out)) == 0
    assert (out / EXPORT_MARKER).is_file() and (out / "trial_0" / "arch.json").is_file()
    assert main(_export(run, out, "--force")) == 0  # an earlier export: replaced
    capsys.readouterr()
    (out / "trial_0" / "notes.txt").write_text("mine")
    err = _refused(_export(run, out, "--force"), capsys)
    assert "trial_0/notes.txt" in err
    assert (out / "trial_0" / "notes.txt").read_text() == "mine"


def test_report_out_does_not_overwrite_records_or_other_files(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    for name in ("trials.jsonl", "config.yaml"):
        err = _refused(["report", str(run), "--out", str(run / name)], capsys)
        assert name in err
    (tmp_path / "notes.html").write_text("<p>mine</p>")
    err = _refused(["report", str(run), "--out", str(tmp_path / "notes.html")], capsys)
    assert "notes.html" in err and "not written by this command" in err
    assert snapshot(run) == before and (tmp_path / "notes.html").read_text() == "<p>mine</p>"
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    # its own report: replaced
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0


def test_train_out_into_a_run_directory_is_refused(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    err = _refused(["train", str(run), "--trial", "0", "--epochs", "1", "--out", str(run)], capsys)
    assert "is a run directory" in err
    assert snapshot(run) == before


def test_latency_check_out_does_not_overwrite_a_record(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    err = _refused(["latency", "check", "--table", str(tmp_path / "none.json"),
                    "--out", str(run / "trials.jsonl")], capsys)
    assert "trials.jsonl" in err and (run / "trials.jsonl").stat().st_size > 0
