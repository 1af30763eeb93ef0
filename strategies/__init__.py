"""Ask/tell search strategies, registered by name in :data:`.base.STRATEGIES`.

Each strategy only proposes (``ask``) and learns (``tell``); the run loop owns evaluation
and records. May import: :mod:`cellblock.core`, :mod:`cellblock.records`,
:mod:`cellblock.pareto` (front math) and :mod:`cellblock.search_spaces`.
"""

from __future__ import annotations

from cellblock.strategies import (  # noqa: F401  (register)
    evolution,
    nsga2,
    optuna_strategy,
    predictive,
    random_search,
)
from cellblock.strategies.base import STRATEGIES, Strategy, make_strategy, register_strategy

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "register_strategy"]
