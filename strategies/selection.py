"""Selection helpers shared by the evolutionary strategies (Pareto rank, crowding)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cellblock.pareto import crowding_distance, nondominated_mask, nondominated_rank
from cellblock.records import Trial


def best_index(F: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the best row: lowest non-dominated rank, then largest crowding, then random."""
    ranks = nondominated_rank(F)
    candidates = np.flatnonzero(ranks == ranks.min())
    if len(candidates) > 1 and F.shape[1] > 1 and np.isfinite(F[candidates]).all():
        cd = crowding_distance(F[candidates])
        candidates = candidates[cd == cd.max()]
    return int(candidates[int(rng.integers(len(candidates)))])


def survivors(F: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NSGA-II environmental selection of ``k`` rows.

    Returns:
        (indices kept, their ranks, their crowding distances), in selection order.
    """
    ranks = nondominated_rank(F)
    crowd = np.zeros(len(F))
    kept: list[int] = []
    for r in np.unique(ranks):
        front = np.flatnonzero(ranks == r)
        finite = np.isfinite(F[front]).all()
        cd = crowding_distance(F[front]) if finite and len(front) > 0 else np.zeros(len(front))
        crowd[front] = cd
        if len(kept) + len(front) <= k:
            kept.extend(front.tolist())
        else:
            order = np.argsort(-cd, kind="stable")
            kept.extend(front[order[: k - len(kept)]].tolist())
        if len(kept) >= k:
            break
    idx = np.asarray(kept, dtype=int)
    return idx, ranks[idx], crowd[idx]


def best_rows(F: np.ndarray, k: int) -> np.ndarray:
    """The rows :func:`survivors` keeps (same rows, same order), ranking only the fronts needed.

    ``survivors`` ranks every row; to pick a few parents from thousands of trials this
    peels non-dominated fronts until ``k`` rows are kept (one objective: a stable sort).
    """
    n = len(F)
    k = min(k, n)
    finite = np.isfinite(F).all(axis=1)
    remaining = np.flatnonzero(finite)
    if F.shape[1] == 1:  # fronts are the distinct values in order; ties in row order
        kept = remaining[np.argsort(F[remaining, 0], kind="stable")][:k].tolist()
    else:
        kept = []
        while len(kept) < k and remaining.size:
            mask = nondominated_mask(F[remaining])
            front = remaining[mask]
            if len(kept) + len(front) <= k:
                kept.extend(front.tolist())
            else:
                cd = crowding_distance(F[front])
                kept.extend(front[np.argsort(-cd, kind="stable")[: k - len(kept)]].tolist())
            remaining = remaining[~mask]
    if len(kept) < k:  # the non-finite rows: one last front, in row order
        kept.extend(np.flatnonzero(~finite)[: k - len(kept)].tolist())
    return np.asarray(kept, dtype=int)


class Contenders:
    """The rows of a growing matrix (minimisation, rows only appended) that may be among its
    ``k`` best in NSGA-II order: those with fewer than ``k`` dominators.

    A row with ``k`` dominators has ``k`` rows in earlier fronts, so :func:`survivors` never
    reaches it; and every front it does reach lies wholly among the contenders, so
    :func:`best_rows` on them keeps the same rows as on the whole matrix (for any
    ``j <= k``). A row's dominators among the contenders number fewer than ``k`` exactly
    when all its dominators do, so each appended row costs one pass over the contenders.
    Non-finite rows never contend.

    Args:
        k: The most rows that will be asked for.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.n = 0  # rows seen
        self.rows = np.zeros(0, dtype=int)  # contenders, ascending
        self.dominators = np.zeros(0, dtype=int)  # their numbers of dominators

    def update(self, F: np.ndarray) -> np.ndarray:
        """The contenders among the rows of ``F`` (whose first rows are those seen before).

        Row by row when few rows are new; from all rows at once otherwise (a resumed run):
        a contender lies in the first ``k`` fronts, among whose rows are all its dominators.
        """
        if len(F) - self.n > max(len(self.rows), 16):
            self.n, self.rows, self.dominators = len(F), *self._from_scratch(F)
            return self.rows
        for r in range(self.n, len(F)):
            f = F[r]
            if not np.isfinite(f).all():
                continue
            G = F[self.rows]
            by = int((np.all(G <= f, axis=1) & np.any(G < f, axis=1)).sum())
            if by >= self.k:
                continue  # it dominates no contender either (its dominators would too)
            count = self.dominators + (np.all(f <= G, axis=1) & np.any(f < G, axis=1))
            keep = count < self.k
            self.rows = np.append(self.rows[keep], r)
            self.dominators = np.append(count[keep], by)
        self.n = len(F)
        return self.rows

    def _from_scratch(self, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(contenders, their numbers of dominators) of all rows of ``F``."""
        remaining = np.flatnonzero(np.isfinite(F).all(axis=1))
        fronts = []
        for _ in range(self.k):
            if not remaining.size:
                break
            mask = nondominated_mask(F[remaining])
            fronts.append(remaining[mask])
            remaining = remaining[~mask]
        rows = np.sort(np.concatenate(fronts)) if fronts else np.zeros(0, dtype=int)
        G = F[rows]
        count = np.zeros(len(rows), dtype=int)
        for s in range(0, len(rows), 256):  # dominators of each row, 256 rows at a time
            g = G[s: s + 256, None, :]
            count[s: s + 256] = (np.all(G[None] <= g, axis=2) & np.any(G[None] < g, axis=2)).sum(1)
        keep = count < self.k
        return rows[keep], count[keep]


def trial_to_state(t: Trial) -> dict[str, Any]:
    """A trial as JSON-able strategy state."""
    return {
        "number": t.number, "arch_id": t.arch_id, "arch": t.arch, "status": t.status,
        "metrics": t.metrics, "violation": t.violation,
    }


def trial_from_state(d: Mapping[str, Any]) -> Trial:
    """Inverse of :func:`trial_to_state`."""
    return Trial(
        number=d["number"], arch_id=d["arch_id"], arch=d["arch"], status=d["status"],
        metrics=dict(d["metrics"]), violation=d["violation"],
    )
