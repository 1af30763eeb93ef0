"""Evaluators: cost (MACs, params), latency, training, and the evaluator registry."""

from __future__ import annotations

from cellblock.evaluators.base import EVALUATORS, EvalContext, Evaluator, register_evaluator
from cellblock.evaluators import train_evaluator  # noqa: F401  (registers "train")

__all__ = ["EVALUATORS", "EvalContext", "Evaluator", "register_evaluator"]
