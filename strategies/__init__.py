"""Ask/tell search strategies, registered by name."""

from __future__ import annotations

from cellblock.strategies import evolution, nsga2, random_search  # noqa: F401  (register)
from cellblock.strategies.base import STRATEGIES, Strategy, make_strategy, register_strategy

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "register_strategy"]
