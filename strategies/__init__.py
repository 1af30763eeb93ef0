"""Ask/tell search strategies, registered by name."""

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
