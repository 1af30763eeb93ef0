"""Config resolution and objectives/constraints parsing."""

from __future__ import annotations

import math

import pytest

from cellblock.core import config as config_mod
from cellblock.core.errors import ConfigError
from cellblock.core.objectives import Constraint, parse_objectives, total_violation


def test_defaults_and_layering(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trials: 5\nobjectives: accuracy,params\nlr: 1\n")
    cfg = config_mod.resolve(config_mod.load_yaml(f), {"trials": 7})
    assert cfg.trials == 7 and cfg.objectives == ("accuracy", "params")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.space == "blocks" and cfg.strategy == "predictive"


@pytest.mark.parametrize("layer, message", [
    ({"trails": 3}, "unknown config key 'trails'; allowed: space"),
    ({"trials": "many"}, "'trials' must be an integer"),
    ({"trials": True}, "'trials' must be an integer"),
    ({"trials": 0}, "'trials' must be > 0"),
    ({"device": "gpu"}, "'device' must be auto, cpu"),
    ({"label_smoothing": 1.5}, r"must be in \[0, 1\)"),
    ({"space_args": [1]}, "'space_args' must be a mapping"),
    ({"dataset": None}, "'dataset' must not be empty"),
    ({"val_fraction": 1.5}, r"'val_fraction' must be in \(0, 1\), e.g. 0.4, got 1.5"),
    ({"val_fraction": 0}, r"'val_fraction' must be in \(0, 1\)"),
    ({"val_fraction": "big"}, "'val_fraction' must be a number"),
])
def test_bad_values(layer, message):
    with pytest.raises(ConfigError, match=message):
        config_mod.resolve(layer)


def test_malformed_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("trials: [1, 2\nepochs: 3\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*bad.yaml.* at line"):
        config_mod.load_yaml(f)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        config_mod.load_yaml(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="not found"):
        config_mod.load_yaml(tmp_path / "missing.yaml")


def test_differences_ignore_trials():
    a = config_mod.resolve({}).to_dict()
    assert config_mod.differences(a, {**a, "trials": 99}) == []
    assert config_mod.differences(a, {**a, "strategy": "nsga2"}) == ["strategy"]
    moved = {**a, "backend": "ray", "concurrency": 4, "address": "auto",
             "resources_per_trial": "cpu=2"}
    assert config_mod.differences(a, moved) == []


def test_val_fraction_default_and_not_resumable():
    a = config_mod.resolve({}).to_dict()
    assert a["val_fraction"] is None
    assert config_mod.resolve({"val_fraction": 0.4}).val_fraction == 0.4
    assert config_mod.differences(a, {**a, "val_fraction": 0.4}) == ["val_fraction"]
    saved_before_the_key = {k: v for k, v in a.items() if k != "val_fraction"}
    assert config_mod.differences(saved_before_the_key, a) == []


def test_objectives_and_constraints():
    objs = parse_objectives("accuracy, macs,latency_ms")
    assert [(o.name, o.direction, o.cheap) for o in objs] == [
        ("accuracy", "maximize", False), ("macs", "minimize", True),
        ("latency_ms", "minimize", True)]
    assert objs[0].to_min(0.9) == -0.9 and objs[1].to_min(None) == math.inf
    with pytest.raises(ConfigError, match="unknown metric 'flops'"):
        parse_objectives("accuracy,flops")
    with pytest.raises(ConfigError, match="repeat"):
        parse_objectives(["macs", "macs"])
    c = Constraint.parse("macs <= 5M")
    assert (c.metric, c.op, c.bound, c.cheap) == ("macs", "<=", 5e6, True)
    assert c.violation({"macs": 6e6}) == 1e6 and c.violation({}) is None
    acc = Constraint.parse("accuracy>=0.9")
    assert not acc.cheap and acc.violation({"accuracy": 0.95}) < 0
    assert total_violation([c, acc], {"macs": 4e6, "accuracy": 0.8}) == pytest.approx(0.1)
    for bad in ("macs < 5", "speed<=3", "macs<=fast", 5):
        with pytest.raises(ConfigError):
            Constraint.parse(bad)  # type: ignore[arg-type]
