"""The one training loop of stand-alone candidates and supernets, and its pieces.

:class:`TrainLoop` owns what every training shares: the device copies of the data, the
step schedule (per-step cosine learning rate with optional warm-up, fitted to
``max_steps``), SGD, mixed precision (bf16 where supported, else fp16 with a
GradScaler, on CUDA only), channels-last batches, augmentation of whole batches on the
device, the per-epoch schedules of the model (``on_epoch_start``), the device hold
against latency measurements, the NaN checks, per-epoch timing, and the state a
checkpoint keeps and a resume restores.

What one step does comes from the caller, as a :class:`Steps` object: a
:class:`~cellblock.evaluators.cuda_graph.StepRunner` for a stand-alone network (a CUDA
graph or eager), the sampled children of :mod:`cellblock.supernet.train` for a supernet.

The hot path is a plain loop over on-device tensors: no DataLoader, no worker
processes, and no host sync per step (losses stay on the device and are checked for NaN
every :data:`NAN_CHECK_EVERY` steps and at the end of each epoch).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from cellblock.core.device_lock import sync_device as sync
from cellblock.core.device_lock import training_hold
from cellblock.core.errors import EvaluationError
from cellblock.data import Augment, Dataset
from cellblock.evaluators.cpu_kernels import guard_convs, in_format
from cellblock.evaluators.cuda_graph import cudnn_autotune

if TYPE_CHECKING:
    from cellblock.evaluators.training import TrainConfig

#: Steps between two (host-syncing) NaN checks of the on-device loss buffer.
NAN_CHECK_EVERY = 16

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
            t.to(device, non_blocking=True)
            for t in (data.x_train, data.y_train, data.x_val, data.y_val)
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
        yield i, in_format(augment_batch(x[idx], augment, gen), fmt), y[idx]


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to ``peak_lr`` then cosine decay to 0 over ``total_steps``."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak_lr * (1.0 + math.cos(math.pi * progress))


def amp_setup(device: torch.device, amp: bool | None) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler) for ``device``."""
    if device.type != "cuda" or amp is False:
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def check_finite(window: torch.Tensor, size: int, epoch: int, first_step: int) -> None:
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


@contextmanager
def held(device: torch.device, autotune: bool = True) -> Iterator[Hold]:
    """The device set up for training: held shared against latency measurements
    (:mod:`cellblock.core.device_lock`) and, on CUDA with ``autotune``, cudnn autotuning."""
    with training_hold(device) as hold, cudnn_autotune(device, autotune):
        yield hold


class Hold(Protocol):
    """A training's hold on its device (:class:`~cellblock.core.device_lock.TrainingHold`)."""

    def poll(self) -> None:
        """Between two steps: let a waiting latency measurement run."""

    def released(self) -> AbstractContextManager[None]:
        """The device let go of while the training does not use it."""


class Steps(Protocol):
    """What runs one training step for :meth:`TrainLoop.run`."""

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Train on one batch; return its loss as a tensor on the device."""

    def new_epoch(self) -> None:
        """Called after the model's per-epoch schedule changed (``on_epoch_start``)."""


class TrainLoop:
    """The epochs and steps of one training (see the module docs).

    Building it seeds torch, moves ``model`` to ``device`` in train mode (channels-last
    weights when the batches are channels-last and ``channels_last_weights``) and makes
    the optimizer, the scaler and the augmentation generator.

    Args:
        model: The network, or the supernet, being trained.
        data: The dataset (train split; the validation split is kept on the device).
        cfg: The recipe (validated by the caller).
        device: The resolved device.
        params: The module whose parameters SGD trains (default: ``model``).
        channels_last_weights: Whether the model's weights follow the batches' memory format.
    """

    def __init__(self, model: nn.Module, data: Dataset, cfg: TrainConfig, device: torch.device, *,
                 params: nn.Module | None = None, channels_last_weights: bool = True) -> None:
        torch.manual_seed(cfg.seed)
        self.model, self.data, self.cfg, self.device = model, data, cfg, device
        self.x_train, self.y_train, self.x_val, self.y_val = device_tensors(data, device)
        self.batch_size, self.steps_per_epoch, self.total_steps, _ = step_schedule(cfg,
                                                                                   len(self.y_train))
        use_cl = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
        self.fmt = torch.channels_last if use_cl else torch.contiguous_format
        model.to(device)
        if use_cl and channels_last_weights:
            model.to(memory_format=torch.channels_last)
        guard_convs(model)  # oneDNN#6035: see cpu_kernels
        model.train()
        self.amp_dtype, use_scaler = amp_setup(device, cfg.amp)
        self.scaler = torch.amp.GradScaler(device.type) if use_scaler else None
        self.optimizer = make_optimizer(model if params is None else params, cfg)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(cfg.seed)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.losses = torch.zeros(self.steps_per_epoch, device=device)
        #: Global step and epochs done; the mean loss of the last epoch.
        self.step, self.epoch, self.final_loss = 0, 0, float("nan")
        #: The step this session started from (0, or the resumed state's).
        self.start_step = 0
        #: Seconds spent in this session's epochs (checkpoints and callbacks not counted).
        self.train_s = 0.0

    def autocast(self) -> Any:
        """The mixed-precision context of a forward pass (a no-op without AMP)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled with fp16 (no optimizer step: :meth:`optimizer_step`)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def optimizer_step(self) -> None:
        """The SGD update (through the GradScaler with fp16)."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to continue this loop (the model's weights are the caller's)."""
        return {
            "epoch": self.epoch, "step": self.step, "optimizer": self.optimizer.state_dict(),
            "final_loss": self.final_loss,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue after ``state`` (from :meth:`state`; load the model's weights first)."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.gen.set_state(state["generator"].to(self.gen.get_state().device))
        torch.set_rng_state(state["torch_rng"])
        self.step, self.epoch, self.final_loss = state["step"], state["epoch"], state["final_loss"]
        self.start_step = self.step

    @property
    def last_epoch(self) -> bool:
        """Whether training is over (every epoch done, or the step budget spent)."""
        return self.epoch >= self.cfg.epochs or self.step >= self.total_steps

    def run(self, steps: Steps, hold: Hold | None = None,
            on_epoch_end: Callable[[TrainLoop], None] | None = None) -> None:
        """Train the remaining epochs; ``on_epoch_end(self)`` after each (e.g. a checkpoint).

        ``hold`` (from :func:`held`) is polled before every step.

        Raises:
            EvaluationError: if the loss becomes NaN or infinite.
        """
        for epoch in range(self.epoch, self.cfg.epochs):
            if self.step >= self.total_steps:
                break
            t0 = time.perf_counter()
            if hasattr(self.model, "on_epoch_start"):  # per-epoch schedules, e.g. darts drop path
                self.model.on_epoch_start(epoch, self.cfg.epochs)
                steps.new_epoch()
            done = self._epoch(steps, epoch, hold)
            self.final_loss = float(self.losses[:done].mean())
            sync(self.device)
            self.train_s += time.perf_counter() - t0
            self.epoch = epoch + 1
            if on_epoch_end is not None:  # it may wait (a Tune report): the device is let go
                with hold.released() if hold is not None else nullcontext():
                    on_epoch_end(self)

    def _epoch(self, steps: Steps, epoch: int, hold: Hold | None) -> int:
        """The steps of one epoch (losses in :attr:`losses`); returns how many ran."""
        checked = done = 0
        batches = epoch_batches(self.x_train, self.y_train, self.data.augment, self.gen,
                                self.optimizer, self.cfg, self.step, self.fmt)
        for i, xb, yb in batches:
            if hold is not None:
                hold.poll()
            self.losses[i] = steps.step(xb, yb)
            self.step += 1
            done = i + 1
            if done % NAN_CHECK_EVERY == 0:
                check_finite(self.losses[checked:done], done - checked, epoch, checked)
                checked = done
        check_finite(self.losses[checked:done], done - checked, epoch, checked)
        return done
