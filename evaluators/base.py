"""The evaluator interface and registry.

An evaluator turns a built candidate into its expensive metrics (``accuracy``...).
Cheap metrics (params, MACs, latency) are computed before it by the pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from cellblock.core.config import RunConfig
from cellblock.core.registry import Registry
from cellblock.search_spaces.api import SearchSpace

#: Evaluators by name; the supernet's lives in :mod:`cellblock.supernet` (which builds on
#: this package) and is imported on its first look-up.
EVALUATORS: Registry[type[Evaluator]] = Registry(
    "evaluator", lazy={"supernet": ("cellblock.supernet.evaluator", None)})


def register_evaluator(name: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
    """Class decorator registering an evaluator under ``name``."""
    return EVALUATORS.register(name)  # type: ignore[return-value]


@dataclass
class EvalContext:
    """What an evaluator may use: the resolved config, the space, the data, the device."""

    config: RunConfig
    space: SearchSpace
    data: Any
    device: torch.device


class Evaluator(ABC):
    """Base class of evaluators.

    Attributes:
        needs_data: Whether the run must load the dataset for this evaluator.
        needs_model: Whether :meth:`evaluate` uses the built network. When False and
            :meth:`costs` knows the costs, the pipeline builds no network at all.
    """

    needs_data: ClassVar[bool] = True
    needs_model: ClassVar[bool] = True

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx
        #: The candidate's metrics known before :meth:`evaluate` runs (costs, cheap metrics,
        #: latency), set by the pipeline for each candidate; empty outside a pipeline.
        self.known: Mapping[str, Any] = {}

    def costs(self, arch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Known ``params``/``macs`` of ``arch`` (e.g. from a cache), or None to count them."""
        return None

    @abstractmethod
    def evaluate(
        self, model: nn.Module | None, arch: Mapping[str, Any], seed: int
    ) -> dict[str, Any]:
        """Metrics of ``arch`` (``model``: its network or None), ``accuracy`` among them."""
