"""Acquisition functions of the predictive strategy, on minimisation values (pure numpy).

* :func:`expected_improvement` (one objective) over the best feasible value;
* :func:`p_nondominated` (several objectives): probability of not being dominated by the front;
* :func:`ehvi`: expected hypervolume improvement over the current front, from the
  project's exact :func:`~cellblock.pareto.hypervolume`, integrated on normal quantiles
  for a shortlist of candidates;
* :func:`fenced`: the rows that may set the front (Tukey's fence on expensive objectives);
* :func:`hamming`: decisions changed between two architectures (batch penalisation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.core.objectives import Objective
from cellblock.pareto import hypervolume
from cellblock.pareto.volume import REF_OFFSET
from cellblock.strategies.predictive.models import normal_cdf

SHORTLIST = 8  # candidates whose EHVI is integrated (the others: optimistic HVI only)
QUANTILES = 8  # normal quantiles integrating EHVI


def hamming(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """Number of decisions in which two architectures differ (absent counts as a value)."""
    return sum(1 for k in a.keys() | b.keys() if k not in a or k not in b or a[k] != b[k])


def quartiles(x: np.ndarray) -> np.ndarray:
    """``np.percentile(x, [25, 75])`` (its default, linear interpolation) from a partial sort:
    the same numbers, several times faster (the fence is drawn after every tell)."""
    n = len(x)
    at = np.array([0.25, 0.75]) * (n - 1)
    lo = np.floor(at).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    part = np.partition(x, np.unique(np.concatenate([lo, hi])))
    a, b, t = part[lo], part[hi], at - lo
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


def fenced(F: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    """Finite rows of ``F`` (minimisation) that are, with several objectives, inside Tukey's
    fence (Q3 + 1.5 IQR) of every expensive objective: a network that failed to learn may
    sit on the front's cheap end, but should not set its nadir."""
    ok = np.isfinite(F).all(axis=1)
    if len(objectives) > 1 and ok.sum() >= 4:
        inside = ok.copy()
        for j, o in enumerate(objectives):
            if not o.cheap:
                q1, q3 = quartiles(F[ok, j])
                inside &= F[:, j] <= q3 + 1.5 * (q3 - q1)
        if inside.any():
            return inside
    return ok


def expected_improvement(M: np.ndarray, S: np.ndarray, best: float) -> np.ndarray:
    """EI of candidates (means ``M``, stds ``S``, first column, minimisation) below ``best``."""
    u = (best - M[:, 0]) / S[:, 0]
    return (best - M[:, 0]) * normal_cdf(u) + S[:, 0] * np.exp(-0.5 * u**2) / np.sqrt(2 * np.pi)


def p_nondominated(M: np.ndarray, S: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Probability that each candidate (means ``M``, stds ``S``, minimisation, independent
    normals) is not dominated by any point of ``front``, bounded by its most likely dominator.

    The multi-objective probability of improvement: it values a likely small gain
    anywhere on the front above an unlikely large one, so the front fills in evenly.
    """
    dominated = normal_cdf(
        (M[:, None, :] - front[None, :, :]) / np.maximum(S[:, None, :], 1e-12)).prod(axis=2)
    return 1.0 - dominated.max(axis=1)


def ehvi(M: np.ndarray, S: np.ndarray, front: np.ndarray) -> np.ndarray:
    """EHVI of candidates (means ``M``, stds ``S``, minimisation) over ``front``.

    Objectives are scaled by the front's ideal and nadir; the reference point is the
    nadir + 10% of the range (the convention of ``cellblock bench``).
    """
    lo, hi = front.min(axis=0), front.max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1e-12))
    P, Mn, Sn = (front - lo) / span, (M - lo) / span, S / span
    ref = np.full(front.shape[1], 1.0 + REF_OFFSET)
    base = hypervolume(P, ref)
    opt = Mn - 2.0 * Sn  # optimistic points
    eps = np.min(np.max(opt[:, None, :] - P[None, :, :], axis=2), axis=1)  # < 0: not dominated
    open_ = np.flatnonzero(eps < 0)
    if len(open_) == 0:  # nothing can improve the front: closest to doing so (additive epsilon)
        return -eps
    open_ = open_[np.argsort(eps[open_], kind="stable")[: 4 * SHORTLIST]]
    score = np.zeros(len(M))
    hvi = np.array([hypervolume(np.vstack([P, opt[i]]), ref) - base for i in open_])
    short = open_[np.argsort(-hvi, kind="stable")[:SHORTLIST]]
    from scipy.special import ndtri  # the standard normal quantile function

    z = ndtri((np.arange(QUANTILES) + 0.5) / QUANTILES)
    for i in short:
        Y = Mn[i] + np.outer(z, Sn[i])
        score[i] = np.mean([hypervolume(np.vstack([P, y]), ref) - base for y in Y]) + 1e-12
    return score
