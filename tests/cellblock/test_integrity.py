"""Issue 10, findings 5, 7 and 8: damaged metadata is refused or repaired, never silently
used; refused runs change nothing; OS errors and broken pipes are one line and exit 2."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
from spaces import conv_space

import cellblock
from cellblock.cli import main
from cellblock.core.errors import RunError

SPACE = conv_space([2, 4, 6, 8, 12])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished 3-trial run (copied by each test) and the CLI options that made it."""
    tmp = tmp_path_factory.mktemp("run")
    (tmp / "sp.py").write_text(SPACE)
    argv = ["search", "--space", f"{tmp / 'sp.py'}:space", "--trials", "3", "--epochs", "1",
            "--objectives", "accuracy,macs", "--device", "cpu", "--strategy", "random",
            "--no-progress"]
    assert main([*argv, "--out", str(tmp / "run")]) == 0
    return tmp / "run", argv


def _copy(finished_run, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    return run


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir()}


def _main(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_empty_log_beside_derived_files_is_refused_untouched(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    (run / "trials.jsonl").write_text("")
    before = _snapshot(run)
    code, _, err = _main([*finished_run[1], "--out", str(run)], capsys)
    assert code == 2
    assert "has trials.csv, pareto.csv, pareto.png" in err and "trials.jsonl is empty" in err
    assert _snapshot(run) == before  # trials.csv, the only copy left, is untouched
    (run / "trials.jsonl").unlink()
    code, _, err = _main(["show", str(run)], capsys)
    assert code == 2 and "trials.jsonl is missing" in err


def test_empty_config_is_rebuilt_from_the_log(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    (run / "config.yaml").write_text("")
    code, out, err = _main(["show", str(run)], capsys)
    assert code == 0
    assert "objectives: accuracy, macs" in out  # not a front on accuracy only
    assert "config.yaml of" in err and "is empty; using the config of the last run_start" in err
    (run / "config.yaml").unlink()
    code, out, _ = _main(["repair", str(run)], capsys)
    assert code == 0 and "rebuilt config.yaml" in out
    assert cellblock.load_run(str(run)).config.objectives == ("accuracy", "macs")
    (run / "config.yaml").unlink()  # a search continues it too, rebuilding the file
    code, _, err = _main([*finished_run[1][:4], "4", *finished_run[1][5:], "--out", str(run)],
                         capsys)
    assert code == 0, err
    assert (run / "config.yaml").read_text().startswith("space:")
    assert len(cellblock.load_run(str(run)).trials) == 4


def test_corrupt_log_is_one_error_and_a_refused_run_touches_nothing(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    lines = (run / "trials.jsonl").read_bytes().split(b"\n")
    lines[2] = lines[2][:10] + b"\xff\xfe" + lines[2][10:]
    (run / "trials.jsonl").write_bytes(b"\n".join(lines))
    before = _snapshot(run)
    code, _, err = _main([*finished_run[1], "--out", str(run)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "trials.jsonl:3 is not valid UTF-8; the record log is corrupt" in err
    assert _snapshot(run) == before  # no run_start appended, config.yaml not rewritten
    code, _, err = _main(["show", str(run)], capsys)
    assert code == 2 and "trials.jsonl:3 is not valid UTF-8" in err


def test_torn_tail_is_repaired(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    with open(run / "trials.jsonl", "ab") as fh:
        fh.write(b'{"event":"trial_start","tri')
    assert len(cellblock.load_run(str(run)).trials) == 3
    code, out, _ = _main(["repair", str(run)], capsys)
    assert code == 0 and "cut a torn last line" in out
    assert (run / "trials.jsonl").read_bytes().endswith(b"\n")


def test_out_under_a_file_is_one_line_exit_2(finished_run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = _main([*finished_run[1], "--out", str(tmp_path / "afile" / "run")], capsys)
    assert code == 2 and err.count("\n") == 1 and "is under the file" in err


@pytest.mark.parametrize("name", ["EROFS", "EACCES", "ENOSPC", "ENOTDIR"])
def test_os_errors_at_the_run_directory_are_one_line_exit_2(finished_run, tmp_path, capsys,
                                                            monkeypatch, name):
    from cellblock.records import RecordLog

    def fail(self, event):
        raise OSError(getattr(errno, name), "simulated", str(self.path))

    monkeypatch.setattr(RecordLog, "append", fail)
    code, _, err = _main([*finished_run[1], "--out", str(tmp_path / "new")], capsys)
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.startswith("cellblock: error")]
    assert len(lines) == 1 and f"({name})" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "new" / ".cellblock.lock").exists()


def test_broken_pipe_is_one_line_exit_2(finished_run):
    proc = subprocess.Popen([sys.executable, "-m", "cellblock", "show", str(finished_run[0])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` exiting before cellblock writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 2, err
    assert err.strip() == ("cellblock: error: the output pipe was closed before everything was "
                           "written (broken pipe)")


def test_unrecoverable_config_is_refused(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    (run / "config.yaml").write_text("")
    (run / "trials.jsonl").write_text('{"event":"trial_start","trial":0,"arch_id":"a","arch":{}}\n')
    with pytest.raises(RunError, match="is empty and trials.jsonl records no config"):
        cellblock.load_run(str(run))
