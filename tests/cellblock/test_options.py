"""Issue 29, part 2: every search option is declared once, in ``FIELDS``.

``cellblock search``'s options are generated from it (flag, type, help, choices, default);
a parsed command line gives the same config overrides that a YAML file would.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cellblock.cli.app import build_parser, main
from cellblock.cli.options import config_overrides, help_text, search_keys
from cellblock.core import config as config_mod
from cellblock.core.config import FIELDS

ROOT = Path(__file__).resolve().parents[2]


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_every_option_is_in_search_help_with_its_default(capsys):
    text = _help(capsys, "search").split("options:", 1)[1]
    for key in search_keys():
        spec = FIELDS[key]
        flag = spec.flag(key)
        assert f" {flag}" in text, flag
        shown = help_text(spec)
        assert "".join(shown.split()) in "".join(text.split()), flag  # wrapped at any hyphen
        if spec.default is not None:
            assert "default" in shown, flag
    assert "(default: accuracy,macs,latency_ms)" in text and "none, asha, mo-asha" in text


def test_yaml_only_keys_are_the_declared_ones():
    assert [k for k in FIELDS if k not in search_keys()] == [
        "proxy", "weight_decay", "label_smoothing", "latency_batch_size", "latency_repeats"]


def test_search_declares_no_option_of_its_own_but_config_and_no_progress():
    tree = ast.parse((ROOT / "cellblock" / "cli" / "search.py").read_text(encoding="utf-8"))
    added = [ast.unparse(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"]
    assert added == ["'config'", "'--no-progress'"]


def test_parsed_options_are_config_overrides():
    args = build_parser().parse_args([
        "search", "--space-arg", "stages=2", "--space-arg", "depth=[1, 2]", "--constraint",
        "macs<=1M", "--concurrency", "auto", "--trials-per-gpu", "3", "--no-cuda-graphs",
        "--download", "--lr", "0.5", "--objectives", "accuracy,macs", "--infra-retries", "0",
        "--threads-per-trial", "2"])
    over = config_overrides(args)
    assert over == {"space_args": {"stages": 2, "depth": [1, 2]}, "constraints": ["macs<=1M"],
                    "concurrency": "auto", "trials_per_gpu": 3, "cuda_graphs": False,
                    "download": True, "lr": 0.5, "objectives": "accuracy,macs",
                    "infra_retries": 0, "threads_per_trial": 2}
    cfg = config_mod.resolve(over)
    assert cfg.objectives == ("accuracy", "macs") and cfg.backend == "auto"
    assert config_overrides(build_parser().parse_args(["search"])) == {}


@pytest.mark.parametrize("argv,says", [
    (["--concurrency", "x"], "argument --concurrency: expected auto or an integer, got 'x'"),
    (["--trials-per-gpu", "two"], "argument --trials-per-gpu: expected auto or an integer"),
    (["--trials", "x"], "argument --trials: invalid int value: 'x'"),
    (["--space-arg", "stages"], "argument --space-arg: expected KEY=VALUE, got 'stages'"),
])
def test_a_bad_option_value_is_one_line_and_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as info:
        main(["search", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("cellblock: error: ") and says in err


def test_bench_shares_the_space_arg_option(capsys):
    args = build_parser().parse_args(["bench", "--table", "t.csv", "--out", "o", "--space-arg",
                                      "num_classes=100"])
    assert args.space_arg == [("num_classes", 100)]
    assert help_text(FIELDS["space_args"]).split(" (default")[0] in _help(capsys, "bench")
