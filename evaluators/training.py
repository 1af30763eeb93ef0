"""Train a candidate network and measure its validation accuracy.

The recipe is :class:`TrainConfig`; the loop (device copies of the data, schedule,
augmentation, NaN checks, checkpoint state) is :class:`~cellblock.evaluators.loop.TrainLoop`,
shared with supernet training, and a candidate's steps run through a
:class:`~cellblock.evaluators.cuda_graph.StepRunner` (a CUDA graph on CUDA when it can be
captured, else eager). Mixed precision (bf16 where supported, else fp16 with a
GradScaler) and channels-last memory format are switched on automatically on CUDA only.
The loop's pieces (:func:`step_schedule`, :func:`epoch_batches`...) are re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cellblock.core.config import RunConfig
from cellblock.core.devices import device_label, resolve_device
from cellblock.core.errors import ConfigError, EvaluationError
from cellblock.data import Dataset
from cellblock.evaluators.cuda_graph import StepRunner
from cellblock.evaluators.loop import TrainLoop, held, sync
from cellblock.evaluators.loop import amp_setup as _amp_setup


@dataclass
class TrainConfig:
    """Training recipe of one candidate.

    Args:
        epochs: Passes over the train split.
        batch_size: Images per SGD step (the last partial batch of an epoch is dropped).
        lr: Peak learning rate of the cosine schedule.
        momentum: SGD momentum.
        nesterov: Use Nesterov momentum.
        weight_decay: L2 penalty on weights (not on biases and normalisation parameters).
        label_smoothing: Cross-entropy label smoothing.
        warmup_epochs: Linear warm-up length before the cosine decay (may be fractional).
        seed: Seeds parameters-free randomness: shuffling, augmentation, dropout.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...
        amp: Mixed precision; ``None`` means on for CUDA, off elsewhere.
        channels_last: Channels-last memory format; ``None`` means on for CUDA only.
        max_steps: Stop after this many SGD steps (the schedule is fitted to it).
        eval_batch_size: Batch size of validation inference.
        cuda_graph: Capture the training step as a CUDA graph; ``None`` means on for CUDA
            (falls back to eager, with the reason, when capture fails; see
            :mod:`cellblock.evaluators.cuda_graph`).
        cudnn_benchmark: cudnn autotuning of the training shapes; ``None`` means on for CUDA.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.0
    seed: int = 0
    device: str = "cpu"
    amp: bool | None = None
    channels_last: bool | None = None
    max_steps: int | None = None
    eval_batch_size: int = 512
    cuda_graph: bool | None = None
    cudnn_benchmark: bool | None = None

    @classmethod
    def from_run(cls, config: RunConfig, *, seed: int, device: str,
                 epochs: int | None = None) -> TrainConfig:
        """The recipe of a run's config (``epochs`` defaults to the run's own)."""
        return cls(
            epochs=config.epochs if epochs is None else epochs,
            batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
            label_smoothing=config.label_smoothing, seed=seed, device=device,
            cuda_graph=None if config.cuda_graphs else False,
            cudnn_benchmark=None if config.cudnn_benchmark else False,
        )

    def validate(self) -> None:
        """Check every field.

        Raises:
            ConfigError: naming the first bad field and its valid range.
        """
        checks = [
            ("epochs", isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 2,
             "an integer >= 2"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a positive number"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, "in [0, epochs]"),
            ("max_steps",
             self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps >= 1),
             "None or an integer >= 1"),
            ("eval_batch_size", isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1,
             "an integer >= 1"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(
                    f"train config {name}={getattr(self, name)!r} is invalid; it must be {want}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError(
                "train config nesterov=True needs momentum > 0; set momentum or nesterov=False")


@torch.inference_mode()
def evaluate_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``(x, y)``, in eval mode.

    The model is moved to ``device``; its training flag is restored afterwards.
    Uses autocast and channels-last on CUDA.
    """
    dev = resolve_device(device)
    if len(y) == 0:
        raise EvaluationError("cannot evaluate accuracy on an empty split; check the dataset split")
    was_training = model.training
    model.to(dev).eval()
    amp_dtype, _ = _amp_setup(dev, None)
    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    correct = torch.zeros((), dtype=torch.long, device=dev)
    try:
        for i in range(0, len(y), batch_size):
            xb = x[i : i + batch_size].to(dev, non_blocking=True).contiguous(memory_format=fmt)
            yb = y[i : i + batch_size].to(dev, non_blocking=True)
            ctx = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with ctx:
                logits = model(xb)
            correct += (logits.argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return correct.item() / len(y)


def check_logits(out: Any, batch: int, num_classes: int) -> None:
    """Check that a network's output on a batch is ``(batch, num_classes)`` logits (done on
    the first batch, before any training step).

    Raises:
        EvaluationError: one line naming the shape it gives and the one expected.
    """
    shape = tuple(getattr(out, "shape", ()))
    want = (batch, num_classes)
    if shape != want:
        raise EvaluationError(
            f"the network outputs shape {shape} for a batch of {batch}, expected {want} "
            f"({num_classes} classes); check the space's head / num_classes"
        )


def train_and_evaluate(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data``'s train split and return its validation accuracy.

    Recipe: SGD (Nesterov momentum), per-step cosine LR with optional linear warm-up,
    label smoothing, weight decay on weights only; seeded from ``cfg.seed``. The test
    split is never touched.

    Returns:
        ``{"accuracy", "train_s", "images_per_s", "epochs", "final_loss", "steps", "eval_s",
        "device", "train_step", "graph_fallback", "graph_captures", "graphed_steps"}``;
        ``final_loss`` is the mean training loss of the last epoch; ``train_step`` is
        ``cuda_graph`` or ``eager``, ``graph_fallback`` why no graph was used (or None).
        On CUDA, steps run as a CUDA graph when possible, with cudnn autotuning; the
        device is held shared against latency measurements (:mod:`cellblock.core.device_lock`).

    Args:
        model: The network (trained in place).
        data: The dataset.
        cfg: The recipe.
        on_epoch_end: Optional callback called after every epoch with the training state
            (``epoch``, ``step``, ``model``, ``optimizer``, ``scaler``, ``generator``,
            ``torch_rng``, ``final_loss``), e.g. to write a checkpoint.
        resume: A state given earlier to ``on_epoch_end``: training continues after it.

    Raises:
        ConfigError: if ``cfg`` is invalid.
        EvaluationError: if the loss becomes NaN or infinite.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    with held(device, autotune=cfg.cudnn_benchmark is not False) as hold:
        return _train(model, data, cfg, device, hold, on_epoch_end, resume)


def _train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    hold: Any,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
    resume: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The body of :func:`train_and_evaluate`, on a resolved device that is held."""
    loop = TrainLoop(model, data, cfg, device)
    runner = StepRunner(model, loop.optimizer, loop.loss_fn, device, loop.amp_dtype, loop.scaler,
                        cfg.cuda_graph)
    # before the first step (always eager): a wrong head is one clear error, never a raw IndexError
    runner.check_output = lambda out, n: check_logits(out, n, data.num_classes)
    sync(device)
    start = time.perf_counter()
    if resume is not None:
        model.load_state_dict(resume["model"])
        loop.restore(resume)

    loop.run(runner, hold, None if on_epoch_end is None else
             lambda lp: on_epoch_end({"model": model.state_dict(), **lp.state()}))
    sync(device)
    train_s = time.perf_counter() - start

    t0 = time.perf_counter()
    accuracy = evaluate_accuracy(model, loop.x_val, loop.y_val, cfg.eval_batch_size, device)
    eval_s = time.perf_counter() - t0
    steps = loop.step - loop.start_step
    return {
        "accuracy": accuracy,
        "train_s": train_s,
        "images_per_s": steps * loop.batch_size / train_s if train_s > 0 else float("nan"),
        "epochs": loop.epoch,
        "final_loss": loop.final_loss,
        "steps": loop.step,
        "eval_s": eval_s,
        "device": device_label(device),
        **runner.describe(),
    }
