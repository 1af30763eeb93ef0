"""The ``supernet`` evaluator: a child's accuracy with weights inherited from a supernet.

The pipeline builds the child as usual (so params/MACs/latency come from the normal
path); this evaluator copies the supernet's slices into it, re-calibrates its batch-norm
statistics on a few training batches (reset the running statistics, forward the
batches in train mode without gradients, cumulative averages) and measures the
validation accuracy. Every child sees the same re-calibration batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cellblock.core.errors import ConfigError
from cellblock.data import Dataset
from cellblock.evaluators.base import EvalContext, Evaluator, register_evaluator
from cellblock.evaluators.cost import cost_metrics
from cellblock.evaluators.training import evaluate_accuracy
from cellblock.supernet.model import Supernet
from cellblock.supernet.prior import REFERENCE_SAMPLES, FusedScore, check_prior

_log = logging.getLogger(__name__)

#: Batches (of :data:`RECAL_BATCH_SIZE` train images) used to re-calibrate BN statistics.
RECAL_BATCHES = 2
RECAL_BATCH_SIZE = 128
#: Seconds between progress lines of :func:`fused_reference`.
PROGRESS_EVERY_S = 10.0

_LOADED: dict[tuple[str, float, str], Any] = {}
_REFERENCES: dict[tuple[Any, ...], FusedScore] = {}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batches: int = RECAL_BATCHES,
                   batch_size: int = RECAL_BATCH_SIZE, seed: int = 0) -> nn.Module:
    """Reset every BN's running statistics and re-estimate them on ``batches`` batches of ``x``.

    The batches are a seeded random subset of ``x`` (the same for every model); the model
    is left in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the re-calibration batches
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)[: batches * batch_size]
    device = next(iter(model.parameters()), torch.empty(0)).device
    model.train()
    for i in range(0, len(order), batch_size):
        model(x[order[i : i + batch_size].to(x.device)].to(device))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    return model.eval()


def inherited_accuracy(model: nn.Module, data: Dataset, device: torch.device,
                       recal: bool = True) -> float:
    """Validation accuracy of a child holding inherited weights (BN re-calibrated or not)."""
    if recal:
        recalibrate_bn(model, data.x_train)
    return evaluate_accuracy(model.eval(), data.x_val, data.y_val, device=device)


def supernet_accuracy(supernet: Supernet, arch: Mapping[str, Any], data: Dataset,
                      device: torch.device, recal: bool = True) -> float:
    """Validation accuracy of ``arch`` with inherited weights (BN re-calibrated or not)."""
    return inherited_accuracy(supernet.extract(arch).to(device), data, device, recal)


def fused_reference(supernet: Supernet, prior: str, data: Dataset, device: torch.device,
                    key: Any = None, log: Callable[[str], None] | None = None,
                    clock: Callable[[], float] = time.monotonic) -> FusedScore:
    """The :class:`FusedScore` of ``prior`` against stratified reference children.

    :data:`~cellblock.supernet.prior.REFERENCE_SAMPLES` children, one per parameter-count
    quantile (sample seed 0, as ``supernet rank``'s default sample), scored with the
    supernet; cached by ``key`` (with ``prior``) when given. Scoring re-calibrates each
    child's BN statistics, minutes on a small CPU: ``log`` gets a line when it starts,
    one at most every :data:`PROGRESS_EVERY_S` seconds (``clock``) and one at the end.
    """
    from cellblock.supernet.baselines import sample_stratified

    if key is not None and (key, prior) in _REFERENCES:
        return _REFERENCES[(key, prior)]
    say = log or (lambda line: None)
    archs = sample_stratified(supernet.space, REFERENCE_SAMPLES, 0)
    say(f"supernet prior {prior}: scoring {len(archs)} reference children (BN re-calibration "
        "of each, once per supernet)...")
    t0 = last = clock()
    accuracies, costs = [], []
    for i, arch in enumerate(archs, 1):
        model = supernet.extract(arch).to(device)
        costs.append(cost_metrics(model, supernet.space.input_shape)[prior])
        accuracies.append(inherited_accuracy(model, data, device))
        now = clock()
        if now - last >= PROGRESS_EVERY_S and i < len(archs):
            say(f"supernet prior {prior}: {i}/{len(archs)} reference children scored, "
                f"{now - t0:.0f} s")
            last = now
    say(f"supernet prior {prior}: {len(archs)} reference children scored in {clock() - t0:.1f} s")
    score = FusedScore.of(prior, accuracies, costs)
    if key is not None:
        _REFERENCES.clear()
        _REFERENCES[(key, prior)] = score
    return score


def _checkpoint_key(path: Path, device: torch.device) -> tuple[str, float, str]:
    return (str(path.resolve()), path.stat().st_mtime if path.exists() else 0.0, str(device))


def cached_supernet(path: str | Path, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """``(supernet, checkpoint)`` loaded once per path, modification time and device."""
    from cellblock.supernet.checkpoint import load_checkpoint
    from cellblock.supernet.train import supernet_from_checkpoint

    p = Path(path)
    key = _checkpoint_key(p, device)
    if key not in _LOADED:
        ckpt = load_checkpoint(p)
        _LOADED.clear()
        _LOADED[key] = (supernet_from_checkpoint(ckpt, device).eval(), ckpt)
    return _LOADED[key]


@register_evaluator("supernet")
class SupernetEvaluator(Evaluator):
    """Accuracy of each child with inherited weights after BN re-calibration.

    Config: ``supernet`` = the checkpoint of ``cellblock supernet train`` for the run's
    space and skeleton; ``supernet_prior`` = ``none``, ``macs`` or ``params`` (the cost
    fused into ``supernet_score``).
    """

    needs_data = True
    needs_model = True

    def __init__(self, ctx: EvalContext) -> None:
        super().__init__(ctx)
        path = ctx.config.supernet
        if not path:
            raise ConfigError("evaluator 'supernet' needs a checkpoint: set --supernet PATH "
                              "(from 'cellblock supernet train')")
        from cellblock.supernet.checkpoint import check_space

        self.path = str(path)
        self.supernet, ckpt = cached_supernet(self.path, ctx.device)
        check_space(ckpt, ctx.space, self.path)
        want, have = ctx.config.val_fraction, ckpt.val_fraction
        if want != have:
            fix = "drop --val-fraction" if have is None else f"set --val-fraction {have}"
            raise ConfigError(
                f"supernet checkpoint {self.path!r} was trained with val_fraction {have}, this run "
                f"uses {want}, so validation images may be ones it trained on; {fix} or retrain "
                "the supernet"
            )
        self.prior = check_prior(ctx.config.supernet_prior)
        self.fused = None if self.prior is None else fused_reference(
            self.supernet, self.prior, ctx.data, ctx.device,
            (*_checkpoint_key(Path(self.path), ctx.device), ctx.data.name, len(ctx.data.y_val)),
            log=_log.info)

    def evaluate(self, model: nn.Module | None, arch: Mapping[str, Any], seed: int) -> dict[str,
                                                                                            Any]:
        t0 = time.perf_counter()
        if model is None:
            model = self.supernet.space.build(arch)
        # a few-shot supernet: the child's own sub-supernet
        model = self.supernet.bank_for(arch).copy_into(model.to(self.ctx.device))
        accuracy = inherited_accuracy(model, self.ctx.data, self.ctx.device)
        out = {"accuracy": accuracy}
        if self.fused is not None:
            cost = self.known.get(self.prior)
            if cost is None:  # outside a pipeline
                cost = cost_metrics(model, self.ctx.space.input_shape)[self.prior]
            out["supernet_score"] = self.fused(accuracy, cost)
        return {**out, "eval_s": time.perf_counter() - t0}
