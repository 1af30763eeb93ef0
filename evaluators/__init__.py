"""Evaluators: cost (MACs, params), latency, training, and the evaluator registry.

Importing the package registers the built-in evaluators (``train``, ``table``,
``proxy``); ``supernet`` is registered lazily by :mod:`cellblock.supernet`. May import:
:mod:`cellblock.core`, :mod:`cellblock.data`, :mod:`cellblock.records` and
:mod:`cellblock.search_spaces`.
"""

from __future__ import annotations

from cellblock.evaluators import (
    proxies,  # noqa: F401  (registers "proxy" and the proxy metrics)
    table,  # noqa: F401  (registers "table")
    train_evaluator,  # noqa: F401  (registers "train")
)
from cellblock.evaluators.base import EVALUATORS, EvalContext, Evaluator, register_evaluator

__all__ = ["EVALUATORS", "EvalContext", "Evaluator", "register_evaluator"]
