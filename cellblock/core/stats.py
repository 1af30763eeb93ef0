"""Rank agreement between two lists of scores (one definition for every report)."""

from __future__ import annotations

from collections.abc import Sequence


def rank_correlations(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(kendall_tau, spearman)`` of two equally long score lists; NaN when either is constant."""
    from scipy import stats

    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan"), float("nan")
    tau = stats.kendalltau(a, b).statistic
    rho = stats.spearmanr(a, b).statistic
    return float(tau), float(rho)
