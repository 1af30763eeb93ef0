"""Selection helpers shared by the evolutionary strategies (Pareto rank, crowding)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cellblock.pareto import crowding_distance, nondominated_rank
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
