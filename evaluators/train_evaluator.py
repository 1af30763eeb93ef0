"""The ``train`` evaluator: stand-alone training of each candidate on the train split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from cellblock.core.devices import resolve_device
from cellblock.evaluators.autotune import autotune_decision
from cellblock.evaluators.base import Evaluator, register_evaluator
from cellblock.evaluators.training import TrainConfig, train_and_evaluate


@register_evaluator("train")
class TrainEvaluator(Evaluator):
    """Trains the candidate for ``epochs`` and reports validation top-1 accuracy, and
    whether cudnn autotuned its training (``cudnn_benchmark`` and ``cudnn_benchmark_why``)."""

    def autotune(self, cfg: TrainConfig) -> tuple[bool, str]:
        """Whether the candidate being evaluated trains with cudnn autotuning, and why
        (:func:`cellblock.evaluators.autotune.autotune_decision`, from its MACs in
        :attr:`known`)."""
        return autotune_decision(
            self.ctx.config.cudnn_benchmark, resolve_device(cfg.device).type,
            n_train=len(self.ctx.data.y_train), batch_size=cfg.batch_size,
            drop_last=True,  # the loop drops an epoch's partial batch (loop.step_schedule)
            resizes=False,  # Augment's random shift and flip keep the image size
            macs=(self.known or {}).get("macs"))

    def train_config(self, seed: int) -> TrainConfig:
        """The run's training recipe for the candidate being evaluated."""
        cfg = TrainConfig.from_run(self.ctx.config, seed=seed, device=str(self.ctx.device))
        cfg.cudnn_benchmark = self.autotune(cfg)[0]
        return cfg

    def evaluate(self, model: nn.Module, arch: Mapping[str, Any], seed: int) -> dict[str, Any]:
        cfg = self.train_config(seed)
        on, why = self.autotune(cfg)
        return {**train_and_evaluate(model, self.ctx.data, cfg), "cudnn_benchmark": on,
                "cudnn_benchmark_why": why}
