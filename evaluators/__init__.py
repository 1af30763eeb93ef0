"""Evaluators: cost (MACs, params), latency, training, and the evaluator registry."""

from __future__ import annotations

from cellblock.evaluators.base import EVALUATORS, EvalContext, Evaluator, register_evaluator
from cellblock.evaluators import train_evaluator  # noqa: F401  (registers "train")
from cellblock.evaluators import proxies  # noqa: F401  (registers "proxy" and the proxy metrics)
from cellblock.evaluators import table  # noqa: F401  (registers "table")

__all__ = ["EVALUATORS", "EvalContext", "Evaluator", "register_evaluator"]
