"""Ask/tell search strategies, registered by name in :data:`.base.STRATEGIES`.

Each strategy only proposes (``ask``) and learns (``tell``); the run loop owns evaluation
and records. May import: :mod:`cellblock.core`, :mod:`cellblock.records`,
:mod:`cellblock.pareto` (front math) and :mod:`cellblock.search_spaces`.
"""

from __future__ import annotations

from cellblock.strategies import (  # noqa: F401  (register)
    evolution,
    nsga2,
    random_search,
)
from cellblock.strategies.base import STRATEGIES, Strategy, make_strategy, register_strategy
from cellblock.strategies.optuna import strategy as _optuna  # noqa: F401  (registers optuna:*)
from cellblock.strategies.predictive import search as _predictive  # noqa: F401  (registers)

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "register_strategy"]
