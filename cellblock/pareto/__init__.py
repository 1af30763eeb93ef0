"""Pareto: front math, and everything derived from a run's records.

Owns the pure-numpy front math, :mod:`.dominance` (dominance, non-dominated masks and
ranks, ``pareto_front``), :mod:`.volume` (exact hypervolume) and :mod:`.selection`
(crowding distance, normalisation, knee point), whose functions this namespace is the one
import path for; and :mod:`.results` (reading a run back, derived files, summaries),
:mod:`.plots` (``pareto.png``) and :mod:`.report` (``report.html``). May import:
:mod:`cellblock.core`, :mod:`cellblock.records`.

Every front function takes an ``(n, m)`` float array ``F`` of objective values where
SMALLER IS BETTER in every column (minimisation). Callers negate maximised objectives,
e.g. with :func:`to_minimization`. Rows holding a NaN or an infinity are invalid: they
are never on the front, they are dominated by every finite row and get the last rank.
"""

from __future__ import annotations

from cellblock.pareto.dominance import (
    dominates,
    nondominated_mask,
    nondominated_rank,
    pareto_front,
    to_minimization,
)
from cellblock.pareto.selection import crowding_distance, knee_point, normalize
from cellblock.pareto.volume import hypervolume

__all__ = [
    "crowding_distance",
    "dominates",
    "hypervolume",
    "knee_point",
    "nondominated_mask",
    "nondominated_rank",
    "normalize",
    "pareto_front",
    "to_minimization",
]
