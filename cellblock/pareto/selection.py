"""Choosing on a front (pure numpy): crowding distance, normalisation, the knee point."""

from __future__ import annotations

from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.pareto.dominance import _as_matrix, _as_vector, _finite_rows, nondominated_mask


def crowding_distance(F: Any) -> np.ndarray:
    """NSGA-II crowding distance of the rows of ``F``, taken as one front.

    Per objective, rows are sorted (stable, ties by row order); the first and last get
    ``inf`` and interior rows add ``(next - prev) / (max - min)``. An objective whose
    range is zero contributes nothing. Non-finite rows get 0 and are ignored.
    """
    F = _as_matrix(F)
    n, m = F.shape
    out = np.zeros(n, dtype=float)
    idx = np.flatnonzero(_finite_rows(F))
    k = idx.size
    if k == 0:
        return out
    if k <= 2:
        out[idx] = np.inf
        return out
    G = F[idx]
    dist = np.zeros(k, dtype=float)
    for j in range(m):
        order = np.argsort(G[:, j], kind="stable")
        col = G[order, j]
        span = col[-1] - col[0]
        if span <= 0:
            continue
        dist[order[0]] = np.inf
        dist[order[-1]] = np.inf
        dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    out[idx] = dist
    return out


def normalize(F: Any, ideal: Any = None, nadir: Any = None) -> np.ndarray:
    """Scale ``F`` so that ``ideal`` maps to 0 and ``nadir`` to 1 in every objective.

    Args:
        F: ``(n, m)`` objective values.
        ideal: Per-objective lower anchor; default the minimum over finite rows.
        nadir: Per-objective upper anchor; default the maximum over finite rows.

    Returns:
        ``(F - ideal) / (nadir - ideal)``; a zero-width objective is only shifted.
    """
    F = _as_matrix(F)
    m = F.shape[1]
    finite = F[_finite_rows(F)]
    if (ideal is None or nadir is None) and finite.shape[0] == 0:
        raise ConfigError("cannot infer ideal/nadir: F has no finite row; pass them explicitly")
    lo = finite.min(axis=0) if ideal is None else _as_vector(ideal, m, "ideal")
    hi = finite.max(axis=0) if nadir is None else _as_vector(nadir, m, "nadir")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ConfigError("ideal and nadir must be finite")
    span = hi - lo
    if (span < 0).any():
        raise ConfigError(f"nadir {hi.tolist()} must be >= ideal {lo.tolist()} in every objective")
    span = np.where(span > 0, span, 1.0)
    return (F - lo) / span


def knee_point(F: Any) -> int:
    """Row index of the knee of the Pareto front of ``F``.

    The front is normalised by its own ideal and nadir; the knee is the front point
    farthest from the hyperplane through the extreme points, on the ideal side
    (2-D: the line between the two end points). Ties go to the lowest index.
    """
    F = _as_matrix(F)
    mask = nondominated_mask(F)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise ConfigError("no finite point in F: cannot pick a knee point")
    if idx.size == 1:
        return int(idx[0])
    G = normalize(F[idx])
    m = G.shape[1]
    # Extreme point along axis j (NSGA-III style): the smallest worst value over the other
    # objectives, ties to the smaller value in j, then to the lower index.
    extremes = []
    for j in range(m):
        others = np.delete(G, j, axis=1).max(axis=1)
        extremes.append(G[np.lexsort((G[:, j], others))[0]])
    E = np.array(extremes)
    w = None
    if np.linalg.matrix_rank(E) == m:
        w = np.linalg.solve(E, np.ones(m))  # hyperplane w . x = 1 through the extremes
        if not np.isfinite(w).all() or np.linalg.norm(w) == 0:
            w = None
    if w is None:
        w = np.ones(m)  # degenerate extremes: the plane sum(x) = 1 of the normalised space
    dist = (1.0 - G @ w) / np.linalg.norm(w)
    return int(idx[int(np.argmax(dist))])
