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


def test_space_that_raises_while_sampling_is_one_line_naming_space_and_decision(tmp_path,
                                                                                monkeypatch,
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


def test_version_and_help_defaults(capsys):
    import cellblock

    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"cellblock {cellblock.__version__}"
    _, out, _ = _run(["search", "--help"], capsys)
    text = " ".join(out.split()).split("options:", 1)[1]  # the options, not the usage line
    for option, default in (("--batch-size", "(default: 64)"), ("--seed", "(default: 0)"),
                            ("--concurrency",
                             "(default: GPUs x --trials-per-gpu with GPUs, else 1)"),
                            ("--threads-per-trial", "else the cores free of other load)")):
        assert option in text and default in text.split(option, 1)[1][:400], option
    _, out, _ = _run(["bench", "--help"], capsys)
    text = " ".join(out.split()).split("options:", 1)[1]
    for option, default in (("--seeds", "(default: 10)"), ("--workers", "(default: 2)"),
                            ("--budgets", "(default: 25,50,100,200,300)")):
        assert default in text.split(option, 1)[1][:300], option
    _, out, _ = _run(["supernet", "train", "--help"], capsys)
    assert "--no-progress" in out and "(default: 64)" in " ".join(out.split())


def test_a_table_run_is_named_by_its_table_not_the_unused_dataset():
    from cellblock.core import config as config_mod

    cfg = config_mod.resolve({"space": "nb201", "evaluator": "table",
                              "table": "../shared/nb201_cifar100.csv",
                              "strategy": "random"})
    assert str(config_mod.default_run_dir(cfg)) == "results/runs/nb201-nb201_cifar100-random-seed0"
    assert "digits" in str(config_mod.default_run_dir(config_mod.resolve({"space": "nb201"})))


def test_table_search_shows_accuracy_in_the_tables_units_too(tmp_path, capsys):
    import itertools

    from cellblock.search_spaces.nb201 import EDGE_NAMES, to_nb201_string

    ops = ["none", "skip_connect", "nor_conv_1x1"]
    table = tmp_path / "t.csv"
    rows = [(to_nb201_string(dict(zip(EDGE_NAMES, combo, strict=True))), 40 + 0.01 * i)
            for i, combo in enumerate(itertools.product(ops, repeat=len(EDGE_NAMES)))]
    table.write_text("arch,valid_acc\n" + "".join(f"{k},{v:.2f}\n" for k, v in rows),
                     encoding="utf-8")
    code, out, err = _run(["search", "--space", "nb201", "--space-arg", f"ops=[{','.join(ops)}]",
                           "--space-arg", "C=4", "--space-arg", "N=1", "--evaluator", "table",
                           "--table", str(table), "--strategy", "random", "--trials", "2",
                           "--objectives", "accuracy,params", "--out", str(tmp_path / "run"),
                           "--no-progress", "--device", "cpu"], capsys)
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("best validation accuracy"))
    assert "table: t.csv" in out and "dataset:" not in out.split("objectives")[0]
    acc = float(line.split()[3])
    assert f"(= {acc * 100:.2f} in the table's 'valid_acc' column" in line, line


def test_sigterm_message_says_what_was_kept(tmp_path, monkeypatch, capsys):
    from cellblock.core.signals import Terminated
    from cellblock.run.backends.base import LocalBackend

    def terminated(self, book, after):
        raise Terminated()

    monkeypatch.setattr(LocalBackend, "drive", terminated)
    argv = ["search", "--space", "s.py:space", "--trials", "2", "--epochs", "1", "--objectives",
            "accuracy,params", "--out", "run", "--no-progress", "--device", "cpu", "--backend",
            "local"]
    monkeypatch.chdir(tmp_path)
    Path("s.py").write_text(RAISING_SPACE.replace("    table = {}\n    return table[w]",
                                                  "    return nn.Flatten()"))
    code, _, err = _run(argv, capsys)
    assert code == 143
    assert err.strip().splitlines()[-1] == ("cellblock: terminated (SIGTERM); no trial had "
                                            "finished, so "
                                            "none is saved; run the same command again to start")
    from cellblock.cli.app import _what_was_kept

    exc = Terminated()
    exc.trials_finished = (0, 3)
    kept = _what_was_kept(exc)
    assert "no trial finished in this invocation (the run's 3 earlier ones are kept)" in kept
    exc.trials_finished = (2, 5)
    assert _what_was_kept(exc).startswith("2 trial(s) finished in this invocation and are saved")
    assert "what was finished is saved" in _what_was_kept(Terminated())  # train, supernet...


def test_failed_export_folder_has_the_mode_of_a_plain_mkdir(tmp_path, monkeypatch):
    import os

    import cellblock.export.exporter as ex
    from cellblock.core.errors import ExportError
    from cellblock.export.verify import ExportItem

    space = SearchSpace("blocks", stages=1, widths=[[8]], strides=[1], depth=[1, 1],
                        block_types=["basic"], attentions=["none"], kernels=[3], stem_width=8)
    item = ExportItem("a", space.sample(np.random.default_rng(0)), space, 0)
    real = ex.make_reference

    def skewed(it):
        ref = real(it)
        ref.y = ref.y + 1.0  # the round trip fails
        return ref

    monkeypatch.setattr(ex, "make_reference", skewed)
    old = os.umask(0o022)
    try:
        with pytest.raises(ExportError):
            ex.export_items([item], tmp_path / "out", ["json"])
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
