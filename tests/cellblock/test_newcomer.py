"""The newcomer path (issue 16): help shows defaults, typos get a suggestion, run directories
of different strategies never collide, time spans ignore idle gaps, and start-up is light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cellblock.cli.app import build_parser
from cellblock.core import config as config_mod
from cellblock.core.errors import ConfigError
from cellblock.pareto.results import busy_seconds
from cellblock.records import COMPLETE, Trial


def test_search_help_shows_the_config_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, default in (("--trials", 24), ("--epochs", 8), ("--strategy", "predictive"),
                            ("--objectives", "accuracy,macs,latency_ms")):
        assert option in text and f"(default: {default})" in text, option


def test_unknown_config_key_suggests_the_close_one():
    with pytest.raises(ConfigError,
                       match=r"unknown config key 'epoch'; allowed: .*; did you mean 'epochs'\?$"):
        config_mod.resolve({"epoch": 3})
    with pytest.raises(ConfigError) as info:
        config_mod.resolve({"zzzz": 3})
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("a,b", [("optuna:nsga2", "nsga2"), ("optuna:tpe", "tpe")])
def test_default_run_dirs_of_different_strategies_differ(a, b):
    da = config_mod.default_run_dir(config_mod.resolve({"strategy": a}))
    db = config_mod.default_run_dir(config_mod.resolve({"strategy": b}))
    assert da != db and ":" not in str(da)


def test_custom_space_run_dir_is_named_by_its_function():
    cfg = config_mod.resolve({"space": "my_spaces.py:tiny_net"})
    assert config_mod.default_run_dir(cfg).name == "tiny_net-digits-predictive-seed0"


def _t(n, start, end):
    return Trial(number=n, arch_id=str(n), arch={}, status=COMPLETE, start_t=start, end_t=end)


def test_busy_time_ignores_the_gap_between_invocations():
    # two 2-second trials, an idle gap of 990 s, then two overlapping ones
    trials = [_t(0, 0, 2), _t(1, 2, 4), _t(2, 994, 996), _t(3, 995, 997.5)]
    assert busy_seconds(trials) == pytest.approx(4 + 3.5)
    assert busy_seconds([]) == 0.0


def test_help_and_a_bad_option_do_not_import_torch():
    """``cellblock --help`` and a one-line usage error stay light (no torch import)."""
    code = ("import sys\nfrom cellblock.cli import main\n"
            "for argv in (['--help'], ['search', '--help'], ['search', '--trials', 'x']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stderr[-2000:]
