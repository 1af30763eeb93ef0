"""The correction a latency table fits on whole networks: constant or per unit kind."""

from __future__ import annotations

import numpy as np
import pytest

from cellblock.evaluators.latency.fit import fit_correction, unit_kind


def _networks(n: int, kind_cost: dict[str, float], seed: int = 0, noise: float = 0.0):
    rng = np.random.default_rng(seed)
    kinds = [{"Zero[none]": int(rng.integers(0, 7)), "Conv[3x3]": int(rng.integers(0, 7)),
              "Stem": 1}
             for _ in range(n)]
    units = rng.uniform(1.0, 2.0, n)
    measured = [u + 0.2 + sum(kind_cost.get(k, 0.0) * c for k, c in ks.items()) + rng.normal(0,
                                                                                             noise)
                for u, ks in zip(units, kinds, strict=True)]
    return measured, list(units), kinds


def test_units_that_add_up_keep_one_constant():
    fit = fit_correction(*_networks(30, {}, noise=0.01))
    assert fit["model"] == "constant" and fit["kind_ms"] == {}
    assert fit["constant_ms"] == pytest.approx(0.2, abs=0.01)
    assert fit["loo_mape_pct"]["per_kind"] is not None


def test_a_kind_that_costs_more_in_a_network_gets_its_cost_per_call():
    fit = fit_correction(*_networks(30, {"Zero[none]": 0.05}, noise=0.002))
    assert fit["model"] == "per-kind"
    assert fit["loo_mape_pct"]["per_kind"] < 0.9 * fit["loo_mape_pct"]["constant"]
    assert fit["kind_ms"]["Zero[none]"] == pytest.approx(0.05, abs=0.01)
    # fixed count: the constant
    assert abs(fit["kind_ms"]["Conv[3x3]"]) < 0.01 and "Stem" not in fit["kind_ms"]


def test_too_few_networks_for_the_kinds_keep_the_constant():
    fit = fit_correction(*_networks(5, {"Zero[none]": 0.05}))
    assert fit["model"] == "constant" and fit["loo_mape_pct"]["per_kind"] is None
    assert fit_correction([1.0], [0.5], [{}])["constant_ms"] == pytest.approx(0.5)


def test_unit_kind_is_class_and_option():
    assert unit_kind("Zero[none] 1x32x16x16 -> 1x32x16x16 (0 params)") == "Zero[none]"
    assert unit_kind("MBConv 1x8x8x8 -> 1x12x8x8 (552 params)") == "MBConv"
