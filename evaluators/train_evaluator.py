"""The ``train`` evaluator: stand-alone training of each candidate on the train split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from cellblock.evaluators.base import Evaluator, register_evaluator
from cellblock.evaluators.training import TrainConfig, train_and_evaluate


@register_evaluator("train")
class TrainEvaluator(Evaluator):
    """Trains the candidate for ``epochs`` and reports validation top-1 accuracy."""

    def train_config(self, seed: int) -> TrainConfig:
        """The run's training recipe for one candidate."""
        return TrainConfig.from_run(self.ctx.config, seed=seed, device=str(self.ctx.device))

    def evaluate(self, model: nn.Module, arch: Mapping[str, Any], seed: int) -> dict[str, Any]:
        return train_and_evaluate(model, self.ctx.data, self.train_config(seed))
