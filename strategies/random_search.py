"""Random search: independent uniform samples of the space, never repeated."""

from __future__ import annotations

from typing import Any

from cellblock.strategies.base import Strategy, register_strategy


@register_strategy("random")
class RandomSearch(Strategy):
    """Uniform random sampling (each decision uniform given the earlier ones)."""

    def ask(self) -> dict[str, Any]:
        return self.fresh(lambda: self.space.sample(self.rng))
