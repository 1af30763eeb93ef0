"""Pareto: front math, and everything derived from a run's records.

Owns: :mod:`.front` (pure-numpy front math, gathered from :mod:`.dominance`: dominance,
masks, ranks; :mod:`.volume`: hypervolume; :mod:`.selection`: crowding, knee),
:mod:`.results` (reading a run back, derived files, summaries), :mod:`.plots`
(``pareto.png``) and :mod:`.report` (``report.html``). May import: :mod:`cellblock.core`,
:mod:`cellblock.records`. The package namespace re-exports :mod:`.front` only.
"""

from __future__ import annotations

from cellblock.pareto.front import (
    crowding_distance,
    dominates,
    hypervolume,
    knee_point,
    nondominated_mask,
    nondominated_rank,
    normalize,
    pareto_front,
    to_minimization,
)

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
