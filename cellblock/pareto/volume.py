"""Exact hypervolume of a minimisation front (pure numpy; m=2 and m=3 sweeps, slicing above)."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.pareto.dominance import _as_matrix, _as_vector, _finite_rows, _mask_general

#: Hypervolume reference point of a front normalised to [0, 1] per objective (ideal 0,
#: nadir 1): the nadir plus this fraction of the range, so that the nadir's own points
#: still count (used by ``cellblock bench`` and the predictive strategy's EHVI).
REF_OFFSET = 0.1


class _Front2D:
    """Incremental 2-D staircase (x ascending, y strictly descending) and its area."""

    def __init__(self, rx: float, ry: float) -> None:
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.rx = rx
        self.ry = ry
        self.area = 0.0

    def add(self, px: float, py: float) -> None:
        xs, ys = self.xs, self.ys
        k = bisect.bisect_left(xs, px)
        if k > 0 and ys[k - 1] <= py:
            return  # dominated by a point with smaller x
        if k < len(xs) and xs[k] == px and ys[k] <= py:
            return  # dominated by (or equal to) a point with the same x
        # Points from k on with y >= py are dominated by p: a contiguous run.
        j = k
        while j < len(xs) and ys[j] >= py:
            j += 1
        x_end = xs[j] if j < len(xs) else self.rx
        # Area covered on [px, x_end] before the insertion.
        old = 0.0
        if k < j:
            if k > 0:
                old += (xs[k] - px) * (self.ry - ys[k - 1])
            for i in range(k, j):
                nxt = xs[i + 1] if i + 1 < len(xs) else self.rx
                old += (nxt - xs[i]) * (self.ry - ys[i])
        elif k > 0:
            old = (x_end - px) * (self.ry - ys[k - 1])
        self.area += (x_end - px) * (self.ry - py) - old
        xs[k:j] = [px]
        ys[k:j] = [py]


def _hv2(P: np.ndarray, ref: np.ndarray) -> float:
    order = np.lexsort((P[:, 1], P[:, 0]))
    x = P[order, 0]
    y = np.minimum.accumulate(P[order, 1])
    nxt = np.append(x[1:], ref[0])
    return float(np.sum((nxt - x) * (ref[1] - y)))


def _hv3(P: np.ndarray, ref: np.ndarray) -> float:
    order = np.argsort(P[:, 2], kind="stable")
    S = P[order]
    z_next = np.append(S[1:, 2], ref[2])
    front = _Front2D(float(ref[0]), float(ref[1]))
    total = 0.0
    for (x, y, z), zn in zip(S.tolist(), z_next.tolist(), strict=True):
        front.add(x, y)
        total += front.area * (zn - z)
    return total


def _hv(P: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of points strictly better than ``ref`` (any m, slicing above 3)."""
    m = P.shape[1]
    if P.shape[0] == 0:
        return 0.0
    if m == 1:
        return float(ref[0] - P[:, 0].min())
    if m == 2:
        return _hv2(P, ref)
    P = P[_mask_general(P)] if P.shape[0] > 1 else P
    if m == 3:
        return _hv3(P, ref)
    order = np.argsort(P[:, -1], kind="stable")
    S = P[order]
    total = 0.0
    for i in range(S.shape[0]):
        z_next = S[i + 1, -1] if i + 1 < S.shape[0] else ref[-1]
        height = z_next - S[i, -1]
        if height > 0:
            total += height * _hv(S[: i + 1, :-1], ref[:-1])
    return float(total)


def hypervolume(F: Any, ref: Any) -> float:
    """Exact hypervolume dominated by ``F`` and bounded by the reference point ``ref``.

    Rows not strictly better than ``ref`` in every objective, and non-finite rows, are
    ignored. m=2 is an O(n log n) sweep, m=3 a sweep over the third axis with an
    incrementally maintained 2-D front (O(n^2) worst case, O(n log n) typical); m>3 is
    exact by slicing along the last axis, exponential in m (fine for small fronts).
    """
    F = _as_matrix(F)
    r = _as_vector(ref, F.shape[1], "ref")
    if not np.isfinite(r).all():
        raise ConfigError(f"ref must be finite, got {r.tolist()}")
    keep = _finite_rows(F) & (F < r).all(axis=1)
    return _hv(F[keep], r)
