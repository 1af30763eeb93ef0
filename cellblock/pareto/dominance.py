"""Dominance on minimisation arrays (pure numpy): checks, masks, non-dominated ranks.

Every function takes an ``(n, m)`` float array ``F`` where SMALLER IS BETTER in every
column (see :mod:`cellblock.pareto`). Rows holding a NaN or an infinity are never
on the front, are dominated by every finite row and get the last rank.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError

_DIRECTIONS = ("minimize", "maximize")
_MATRIX_RANK_LIMIT = 4000  # above this many points, ranks are found by peeling fronts
_CHUNK_ELEMENTS = 4_000_000  # bound on the size of pairwise comparison blocks


def _as_matrix(F: Any, name: str = "F") -> np.ndarray:
    """Validate ``F`` as a 2-D float array with at least one column."""
    try:
        arr = np.asarray(F, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an (n, m) array of numbers: {exc}") from exc
    if arr.ndim != 2:
        raise ConfigError(
            f"{name} must be a 2-D (n points, m objectives) array, got shape {arr.shape}"
        )
    if arr.shape[1] < 1:
        raise ConfigError(f"{name} must have at least one objective column, got shape {arr.shape}")
    return arr


def _as_vector(v: Any, m: int, name: str) -> np.ndarray:
    """Validate ``v`` as a 1-D float vector of length ``m``."""
    try:
        arr = np.asarray(v, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a vector of {m} numbers: {exc}") from exc
    if arr.shape != (m,):
        raise ConfigError(f"{name} must have shape ({m},) to match the objectives, got {arr.shape}")
    return arr


def _finite_rows(F: np.ndarray) -> np.ndarray:
    return np.isfinite(F).all(axis=1)


def to_minimization(values: Any, directions: Sequence[str]) -> np.ndarray:
    """Turn objective values into a minimisation array by negating maximised columns.

    Args:
        values: ``(n, m)`` objective values.
        directions: ``m`` strings, each ``"minimize"`` or ``"maximize"``.

    Returns:
        A new float array of shape ``(n, m)``.
    """
    F = _as_matrix(values, "values")
    if isinstance(directions, str):
        raise ConfigError("directions must be a sequence of strings, one per objective")
    dirs = list(directions)
    if len(dirs) != F.shape[1]:
        raise ConfigError(f"got {len(dirs)} directions for {F.shape[1]} objectives; give one each")
    out = F.copy()
    for j, d in enumerate(dirs):
        if d not in _DIRECTIONS:
            raise ConfigError(f"direction {d!r} of objective {j} must be 'minimize' or 'maximize'")
        if d == "maximize":
            out[:, j] = -out[:, j]
    return out


def dominates(a: Any, b: Any) -> bool:
    """Whether ``a`` Pareto-dominates ``b`` (no worse everywhere, better somewhere).

    A non-finite ``a`` dominates nothing; a finite ``a`` dominates any non-finite ``b``.
    """
    av = np.asarray(a, dtype=float)
    bv = np.asarray(b, dtype=float)
    if av.ndim != 1 or av.shape != bv.shape or av.size == 0:
        raise ConfigError(
            f"a and b must be 1-D vectors of equal length, got {av.shape}, {bv.shape}"
        )
    if not np.isfinite(av).all():
        return False
    if not np.isfinite(bv).all():
        return True
    return bool(np.all(av <= bv) and np.any(av < bv))


def _mask_2d(F: np.ndarray) -> np.ndarray:
    """Non-dominated mask of finite 2-D points, O(n log n)."""
    n = F.shape[0]
    order = np.lexsort((F[:, 1], F[:, 0]))
    x = F[order, 0]
    y = F[order, 1]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = x[1:] != x[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    cummin = np.minimum.accumulate(y)
    # Best y among points with strictly smaller x: running minimum just before the group.
    before = np.full(n, np.inf)
    has_prev = group_start > 0
    before[has_prev] = cummin[group_start[has_prev] - 1]
    keep_sorted = (y == y[group_start]) & (y < before)
    mask = np.empty(n, dtype=bool)
    mask[order] = keep_sorted
    return mask


def _dominated_by_any(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """For each row of ``P``, whether some row of ``Q`` dominates it (chunked)."""
    out = np.zeros(P.shape[0], dtype=bool)
    if Q.shape[0] == 0 or P.shape[0] == 0:
        return out
    step = max(1, _CHUNK_ELEMENTS // (Q.shape[0] * P.shape[1]))
    for s in range(0, P.shape[0], step):
        p = P[s : s + step, None, :]
        le = np.all(Q[None, :, :] <= p, axis=2)
        lt = np.any(Q[None, :, :] < p, axis=2)
        out[s : s + step] = np.any(le & lt, axis=1)
    return out


def _mask_general(F: np.ndarray) -> np.ndarray:
    """Non-dominated mask of finite points in any dimension (sort + front filter)."""
    n, m = F.shape
    order = np.lexsort(F.T[::-1])
    S = F[order]
    keep = np.zeros(n, dtype=bool)
    front_rows: list[np.ndarray] = []
    front = np.empty((0, m))
    block = 256
    for s in range(0, n, block):
        chunk = S[s : s + block]
        # A dominator of a point comes before it in lexicographic order, and any
        # dominated point is dominated by a front point: check the front so far
        # and the chunk itself.
        dom = _dominated_by_any(chunk, front) | _dominated_by_any(chunk, chunk)
        keep[s : s + block] = ~dom
        if (~dom).any():
            front_rows.append(chunk[~dom])
            front = np.concatenate(front_rows, axis=0)
            front_rows = [front]
    mask = np.empty(n, dtype=bool)
    mask[order] = keep
    return mask


def nondominated_mask(F: Any) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``F``.

    Duplicates of a non-dominated point are all non-dominated; non-finite rows never are.
    2-D uses an O(n log n) sort; other dimensions compare against the growing front.
    """
    F = _as_matrix(F)
    finite = _finite_rows(F)
    mask = np.zeros(F.shape[0], dtype=bool)
    idx = np.flatnonzero(finite)
    if idx.size == 0:
        return mask
    G = F[idx]
    if G.shape[1] == 1:
        sub = G[:, 0] == G[:, 0].min()
    elif G.shape[1] == 2:
        sub = _mask_2d(G)
    else:
        sub = _mask_general(G)
    mask[idx] = sub
    return mask


def _rank_2d(G: np.ndarray) -> np.ndarray:
    """Ranks of distinct-or-not finite 2-D points, O(n log n) via front minima."""
    uniq, inverse = np.unique(G, axis=0, return_inverse=True)
    # np.unique sorts rows lexicographically: any dominator of a row comes earlier.
    mins: list[float] = []
    ranks_u = np.empty(uniq.shape[0], dtype=np.int64)
    for i, yi in enumerate(uniq[:, 1].tolist()):
        k = bisect.bisect_right(mins, yi)
        ranks_u[i] = k
        if k == len(mins):
            mins.append(yi)
        else:
            mins[k] = yi
    return ranks_u[np.ravel(inverse)]


def _rank_matrix(G: np.ndarray) -> np.ndarray:
    """Deb's fast non-dominated sort with a boolean dominance matrix."""
    n = G.shape[0]
    D = np.zeros((n, n), dtype=bool)  # D[i, j]: i dominates j
    step = max(1, _CHUNK_ELEMENTS // (n * G.shape[1]))
    for s in range(0, n, step):
        a = G[s : s + step, None, :]
        D[s : s + step] = (a <= G[None, :, :]).all(axis=2) & (a < G[None, :, :]).any(axis=2)
    counts = D.sum(axis=0)
    ranks = np.full(n, -1, dtype=np.int64)
    current = np.flatnonzero(counts == 0)
    r = 0
    while current.size:
        ranks[current] = r
        counts = counts - D[current].sum(axis=0)
        counts[current] = -1
        current = np.flatnonzero(counts == 0)
        r += 1
    return ranks


def _rank_peel(G: np.ndarray) -> np.ndarray:
    """Ranks by repeatedly removing the non-dominated set."""
    ranks = np.full(G.shape[0], -1, dtype=np.int64)
    remaining = np.arange(G.shape[0])
    r = 0
    while remaining.size:
        front = _mask_general(G[remaining])
        ranks[remaining[front]] = r
        remaining = remaining[~front]
        r += 1
    return ranks


def nondominated_rank(F: Any) -> np.ndarray:
    """Non-domination rank of every row (0 = the Pareto front).

    Non-finite rows all get ``max finite rank + 1`` (0 when no row is finite).
    """
    F = _as_matrix(F)
    n, m = F.shape
    finite = _finite_rows(F)
    ranks = np.zeros(n, dtype=np.int64)
    idx = np.flatnonzero(finite)
    if idx.size:
        G = F[idx]
        if m == 1:
            sub = np.unique(G[:, 0], return_inverse=True)[1].ravel().astype(np.int64)
        elif m == 2:
            sub = _rank_2d(G)
        elif idx.size <= _MATRIX_RANK_LIMIT:
            sub = _rank_matrix(G)
        else:
            sub = _rank_peel(G)
        ranks[idx] = sub
        ranks[~finite] = int(sub.max()) + 1
    return ranks


def pareto_front(values: Any, directions: Sequence[str]) -> np.ndarray:
    """Row indices (ascending) of the Pareto-optimal rows of ``values``.

    Args:
        values: ``(n, m)`` objective values in their natural direction.
        directions: ``m`` strings, each ``"minimize"`` or ``"maximize"``.
    """
    return np.flatnonzero(nondominated_mask(to_minimization(values, directions)))
