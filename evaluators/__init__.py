"""Evaluators: cost (MACs, params), latency, training, and the evaluator registry."""

from __future__ import annotations

from cellblock.evaluators import (
    proxies,  # noqa: F401  (registers "proxy" and the proxy metrics)
    table,  # noqa: F401  (registers "table")
    train_evaluator,  # noqa: F401  (registers "train")
)
from cellblock.evaluators.base import EVALUATORS, EvalContext, Evaluator, register_evaluator
from cellblock.supernet import evaluator as _supernet_evaluator  # noqa: E402,F401  (registers "supernet")

__all__ = ["EVALUATORS", "EvalContext", "Evaluator", "register_evaluator"]
