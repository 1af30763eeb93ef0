"""The correction a latency table adds to its summed units, fitted on whole networks.

A unit timed alone does not cost exactly what it costs inside a network: a graph runtime
(onnxruntime) runs the whole network in one call, with its own per-operator overheads and
memory plan. In NAS-Bench-201 in onnxruntime, for example, a ``none`` edge costs about four
times as much in a network as alone. Two models of ``measured - sum of units`` are fitted on
the calibration networks:

* ``constant``: one per-network constant (the median);
* ``per-kind``: a constant plus, for each kind of unit (its class and chosen option, such as
  ``ReLUConvBN[nor_conv_3x3]`` or ``MBConv``), a cost per call (ridge regression).

The per-kind model is kept only when leave-one-out cross-validation on the calibration
networks says it predicts better (its mean absolute percentage error at most 0.9 times the
constant's), so a space where units add up well keeps the one constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Ridge penalty, relative to the mean variance of the kind counts.
RIDGE = 0.1
#: The per-kind model must cut the leave-one-out error to this fraction of the constant's.
KEEP_BELOW = 0.9


def unit_kind(label: str) -> str:
    """The kind of a unit from its label: class and option, e.g. ``Zero[none]``."""
    return label.split(" ", 1)[0]


def _ridge(counts: np.ndarray, resid: np.ndarray) -> tuple[float, np.ndarray]:
    mu = counts.mean(axis=0)
    xc = counts - mu
    gram = xc.T @ xc
    scale = max(float(np.mean(np.diag(gram))), 1e-12)
    beta = np.linalg.solve(gram + RIDGE * scale * np.eye(counts.shape[1]),
                           xc.T @ (resid - resid.mean()))
    return float(resid.mean() - mu @ beta), beta


def _loo_mape(measured: np.ndarray, resid: np.ndarray, predict_left_out) -> float:
    errors = []
    for i in range(len(resid)):
        keep = np.arange(len(resid)) != i
        errors.append(abs(resid[i] - predict_left_out(keep, i)) / measured[i])
    return float(np.mean(errors) * 100)


def fit_correction(measured_ms: Sequence[float], units_ms: Sequence[float],
                   kinds: Sequence[dict[str, int]]) -> dict[str, Any]:
    """Fit the correction on calibration networks.

    Args:
        measured_ms: Each network's measured latency.
        units_ms: Each network's sum of unit latencies from the table.
        kinds: Each network's calls per unit kind.

    Returns:
        ``{"constant_ms", "kind_ms", "model", "loo_mape_pct"}``: ``kind_ms`` maps a kind to
        its cost per call (empty for the constant model); ``loo_mape_pct`` holds both models'
        leave-one-out error (``per_kind`` is None with too few networks to fit it).
    """
    measured = np.asarray(measured_ms, dtype=float)
    resid = measured - np.asarray(units_ms, dtype=float)
    names = sorted(set().union(*kinds)) if kinds else []
    counts = np.array([[k.get(n, 0) for n in names] for k in kinds],
                      dtype=float).reshape(len(kinds), len(names))
    constant = float(np.median(resid))
    loo = {"constant": _loo_mape(measured, resid, lambda keep, i: float(np.median(resid[keep])))
           if len(resid) > 2
           else None, "per_kind": None}
    out = {"constant_ms": constant, "kind_ms": {}, "model": "constant", "loo_mape_pct": loo}
    varying = [j for j in range(len(names)) if np.ptp(counts[:, j]) > 0] if len(names) else []
    if not varying or len(resid) < len(varying) + 5:
        return out
    x = counts[:, varying]

    def left_out(keep: np.ndarray, i: int) -> float:
        c, beta = _ridge(x[keep], resid[keep])
        return float(c + x[i] @ beta)

    loo["per_kind"] = _loo_mape(measured, resid, left_out)
    if loo["constant"] is not None and loo["per_kind"] <= KEEP_BELOW * loo["constant"]:
        c, beta = _ridge(x, resid)
        out.update(constant_ms=c, model="per-kind",
                   kind_ms={names[j]: float(b) for j, b in zip(varying, beta, strict=True)})
    return out
