"""Train a candidate network and measure its validation accuracy.

The hot path is a plain loop over on-device tensors: no DataLoader, no worker
processes, augmentation done on whole batches on the device, and no host sync per step
(losses are kept on the device and checked for NaN every few steps and at epoch end).
Mixed precision (bf16 where supported, else fp16 with a GradScaler) and channels-last
memory format are switched on automatically on CUDA only.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cellblock.core.device_lock import training_hold
from cellblock.core.devices import device_label, resolve_device
from cellblock.core.errors import ConfigError, EvaluationError
from cellblock.data import Augment, Dataset
from cellblock.evaluators.cuda_graph import StepRunner, cudnn_autotune

#: Steps between two (host-syncing) NaN checks of the on-device loss buffer.
NAN_CHECK_EVERY = 16


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

    @classmethod
    def from_run(cls, config: Mapping[str, Any], *, seed: int, device: str,
                 epochs: int | None = None) -> TrainConfig:
        """The recipe of a run's config (``epochs`` defaults to the run's own)."""
        return cls(
            epochs=config["epochs"] if epochs is None else epochs,
            batch_size=config["batch_size"], lr=config["lr"], weight_decay=config["weight_decay"],
            label_smoothing=config["label_smoothing"], seed=seed, device=device,
            cuda_graph=None if config.get("cuda_graphs", True) else False,
        )

    def validate(self) -> None:
        """Check every field.

        Raises:
            ConfigError: naming the first bad field and its valid range.
        """
        checks = [
            ("epochs", isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 2, "an integer >= 2"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a positive number"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, "in [0, epochs]"),
            ("max_steps", self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps >= 1), "None or an integer >= 1"),
            ("eval_batch_size", isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1, "an integer >= 1"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(f"train config {name}={getattr(self, name)!r} is invalid; it must be {want}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("train config nesterov=True needs momentum > 0; set momentum or nesterov=False")


# Device copies of datasets, per (dataset instance, device); dropped with the dataset.
_DEVICE_CACHE: weakref.WeakKeyDictionary[Dataset, dict[str, tuple[torch.Tensor, ...]]] = (
    weakref.WeakKeyDictionary()
)


def device_tensors(data: Dataset, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_val, y_val)`` on ``device``, copied once per dataset and device."""
    if device.type == "cpu":
        return data.x_train, data.y_train, data.x_val, data.y_val
    per_device = _DEVICE_CACHE.setdefault(data, {})
    key = str(device)
    if key not in per_device:
        per_device[key] = tuple(
            t.to(device, non_blocking=True) for t in (data.x_train, data.y_train, data.x_val, data.y_val)
        )
    return per_device[key]


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random shift (zero padding + per-image random crop) and optional flip of a batch.

    Vectorised: one pad, one gather and one ``torch.where``; random numbers come from
    ``generator`` (which must live on ``x``'s device).
    """
    n, _, h, w = x.shape
    if aug.pad > 0:
        p = aug.pad
        padded = F.pad(x, (p, p, p, p))
        offsets = torch.randint(0, 2 * p + 1, (2, n), device=x.device, generator=generator)
        rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (n, h)
        cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (n, w)
        batch = torch.arange(n, device=x.device)[:, None, None]
        # Advanced indices around a slice put their dims first: (n, h, w, c) -> NCHW view.
        x = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if aug.flip:
        flip = torch.rand(n, device=x.device, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights of rank >= 2 only (not on biases and norm parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def step_schedule(cfg: TrainConfig, n: int) -> tuple[int, int, int, int]:
    """``(batch_size, steps_per_epoch, total_steps, warmup_steps)`` for ``n`` training images."""
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    return bs, steps_per_epoch, total_steps, int(round(cfg.warmup_epochs * steps_per_epoch))


def make_optimizer(module: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum; weight decay on weights, not on biases and norms."""
    return torch.optim.SGD(
        _param_groups(module, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
        nesterov=cfg.nesterov,
    )


def epoch_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    augment: Augment,
    gen: torch.Generator,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    fmt: torch.memory_format = torch.contiguous_format,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented ``(i, x_batch, y_batch)``, from global step ``step``.

    Before yielding batch ``i`` it sets the optimizer's learning rate to the cosine
    schedule's value for that step; it stops early when the schedule's last step is reached.
    """
    bs, steps_per_epoch, total_steps, warmup_steps = step_schedule(cfg, len(y))
    perm = torch.randperm(len(y), device=y.device, generator=gen)
    for i in range(steps_per_epoch):
        if step + i >= total_steps:
            return
        lr = lr_at(step + i, total_steps, warmup_steps, cfg.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = perm[i * bs : (i + 1) * bs]
        yield i, augment_batch(x[idx], augment, gen).contiguous(memory_format=fmt), y[idx]


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to ``peak_lr`` then cosine decay to 0 over ``total_steps``."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak_lr * (1.0 + math.cos(math.pi * progress))


def _amp_setup(device: torch.device, amp: bool | None) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler) for ``device``."""
    if device.type != "cuda" or amp is False:
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def _check_finite(window: torch.Tensor, size: int, epoch: int, first_step: int) -> None:
    """Raise if any of the ``size`` losses in ``window`` is NaN or infinite (one host sync)."""
    if size <= 0:
        return
    bad = ~torch.isfinite(window)
    if bool(bad.any()):
        step = int(bad.nonzero()[0, 0])
        raise EvaluationError(
            f"loss became NaN at epoch {epoch + 1} step {first_step + step + 1}; "
            "lower the learning rate or check the architecture for unstable operations"
        )


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    with training_hold(device) as hold, cudnn_autotune(device):
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
    torch.manual_seed(cfg.seed)
    x_train, y_train, x_val, y_val = device_tensors(data, device)
    n = len(y_train)
    bs, steps_per_epoch, total_steps, warmup_steps = step_schedule(cfg, n)

    use_cl = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    fmt = torch.channels_last if use_cl else torch.contiguous_format
    model.to(device)
    if use_cl:
        model.to(memory_format=torch.channels_last)
    model.train()
    amp_dtype, use_scaler = _amp_setup(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    optimizer = make_optimizer(model, cfg)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    losses = torch.zeros(steps_per_epoch, device=device)
    runner = StepRunner(model, optimizer, loss_fn, device, amp_dtype, scaler, cfg.cuda_graph)
    # before the first step (always eager): a wrong head is one clear error, never a raw IndexError
    runner.check_output = lambda out, n: check_logits(out, n, data.num_classes)

    _sync(device)
    start = time.perf_counter()
    step = 0
    epochs_run = 0
    final_loss = float("nan")
    start_step = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        gen.set_state(resume["generator"].to(gen.get_state().device))
        torch.set_rng_state(resume["torch_rng"])
        step, epochs_run, final_loss = resume["step"], resume["epoch"], resume["final_loss"]
    start_step = step
    for epoch in range(epochs_run, cfg.epochs):
        if step >= total_steps:
            break
        epochs_run += 1
        if hasattr(model, "on_epoch_start"):  # per-epoch schedules, e.g. darts drop path
            model.on_epoch_start(epoch, cfg.epochs)
            runner.new_epoch()
        checked = done = 0
        batches = epoch_batches(x_train, y_train, data.augment, gen, optimizer, cfg, step, fmt)
        for i, xb, yb in batches:
            hold.poll()
            losses[i] = runner.step(xb, yb)
            step += 1
            done = i + 1
            if done % NAN_CHECK_EVERY == 0:
                _check_finite(losses[checked:done], done - checked, epoch, checked)
                checked = done
        _check_finite(losses[checked:done], done - checked, epoch, checked)
        final_loss = float(losses[:done].mean())
        if on_epoch_end is not None:
            on_epoch_end({
                "epoch": epochs_run, "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "final_loss": final_loss,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            })
    _sync(device)
    train_s = time.perf_counter() - start

    t0 = time.perf_counter()
    accuracy = evaluate_accuracy(model, x_val, y_val, cfg.eval_batch_size, device)
    eval_s = time.perf_counter() - t0
    return {
        "accuracy": accuracy,
        "train_s": train_s,
        "images_per_s": (step - start_step) * bs / train_s if train_s > 0 else float("nan"),
        "epochs": epochs_run,
        "final_loss": final_loss,
        "steps": step,
        "eval_s": eval_s,
        "device": device_label(device),
        **runner.describe(),
    }
