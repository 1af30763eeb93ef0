"""cudnn_benchmark: auto tunes only fixed training shapes of networks large enough to repay
it; the decision is recorded per trial; a bad setting is one line, exit 2."""

from __future__ import annotations

import pytest

import cellblock
from cellblock.cli import main
from cellblock.core.config import resolve
from cellblock.core.errors import ConfigError
from cellblock.evaluators.autotune import AUTOTUNE_MIN_BATCH_MACS, autotune_decision
from tests.spaces import conv_space, write_space

BIG = AUTOTUNE_MIN_BATCH_MACS / 64 * 2  # MACs per image: twice the threshold at batch 64


def _decide(setting="auto", device="cuda", n_train=1280, batch_size=64, drop_last=True,
            resizes=False, macs=BIG):
    return autotune_decision(setting, device, n_train=n_train, batch_size=batch_size,
                             drop_last=drop_last, resizes=resizes, macs=macs)


def test_auto_tunes_fixed_shapes_of_large_networks_only():
    assert _decide()[0] is True
    on, why = _decide(macs=AUTOTUNE_MIN_BATCH_MACS / 64 / 2)  # half the threshold
    assert on is False and "MACs per batch" in why
    assert _decide(macs=None) == (False, "off (auto: the candidate's MACs are unknown)")
    assert _decide(device="cpu")[0] is False and "cpu" in _decide(device="cpu")[1]
    # a kept partial batch is a second shape; a train split divisible by the batch is not
    on, why = _decide(n_train=1300, drop_last=False)
    assert on is False and "last batch of an epoch has 20 images" in why
    assert _decide(n_train=1280, drop_last=False)[0] is True
    assert _decide(n_train=1300, drop_last=True)[0] is True
    assert _decide(resizes=True) == (False, "off (auto: the augmentation resizes images)")
    # the default digits search's largest candidate (2.2 MMACs an image) is not tuned
    assert _decide(macs=2.2e6)[0] is False


def test_true_and_false_force_it_and_bad_settings_are_refused():
    assert _decide(True, macs=1.0)[0] is True
    assert _decide(False)[0] is False
    assert _decide(True, device="cpu")[0] is False  # nothing to tune away from CUDA
    for bad in ("sometimes", 1, None):
        with pytest.raises(ConfigError, match="cudnn_benchmark must be auto, true or false"):
            _decide(bad)


def test_config_key_defaults_to_auto_and_refuses_other_values(tmp_path, capsys):
    assert resolve({}).cudnn_benchmark == "auto"
    assert resolve({"cudnn_benchmark": False}).cudnn_benchmark is False
    with pytest.raises(ConfigError, match="'cudnn_benchmark' must be auto, true or false"):
        resolve({"cudnn_benchmark": "sometimes"})
    (tmp_path / "c.yaml").write_text("cudnn_benchmark: sometimes\n")
    code = main(["search", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cudnn_benchmark" in err


def test_each_trial_records_its_decision(tmp_path):
    run = cellblock.search(space=write_space(tmp_path, conv_space([4, 8])), trials=2, epochs=1,
                           device="cpu", strategy="random", objectives=["accuracy", "macs"],
                           backend="local", out=str(tmp_path / "run"))
    assert [t.metrics["cudnn_benchmark"] for t in run.trials] == [False, False]
    assert all(t.metrics["cudnn_benchmark_why"] == "off (no cudnn on cpu)" for t in run.trials)
