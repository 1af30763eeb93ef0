"""Training steps on CUDA as CUDA graphs, with an automatic eager fallback.

A small candidate's step is launch-bound: the GPU waits on Python and on hundreds of
kernel launches. :class:`StepRunner` runs the first :data:`WARMUP_STEPS` steps eagerly
(on a side stream: lazy initialisation, cudnn autotuning, momentum buffers), then
captures one whole step (forward, loss, backward and the SGD update, with the learning
rate in a device tensor) into a ``torch.cuda.CUDAGraph`` with static input buffers, and
replays it for every later step. Shuffling and augmentation stay outside the graph: each
step copies its batch into the static buffers.

The optimizer stays a ``torch.optim.SGD``: the graphed update (:func:`sgd_update`) does
the same arithmetic on the optimizer's own momentum buffers, so checkpoints are the same
in both modes and a run may resume in either.

When the step cannot be captured (not CUDA, an fp16 GradScaler's host sync, a sync or an
unsupported op inside the model) training goes on eagerly. A host sync is found before any
capture is tried: the last warm-up step runs under ``torch.cuda.set_sync_debug_mode("warn")``.
The reason is returned with the results (``train_step``, ``graph_fallback``). A model
with ``on_epoch_start`` (a per-epoch schedule such as DARTS drop path) is captured again
each epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

#: Eager steps before the capture.
WARMUP_STEPS = 3
GRAPHED = "cuda_graph"
EAGER = "eager"


@contextmanager
def cudnn_autotune(device: torch.device, on: bool = True) -> Iterator[None]:
    """cudnn benchmark mode (autotuned kernels for the fixed training shapes) on CUDA,
    or, with ``on`` False, off there (whatever the process had set)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def graph_refusal(device: torch.device, wanted: bool | None, scaler: Any) -> str | None:
    """Why a training step on ``device`` is not captured (None: it will be tried)."""
    if wanted is False:
        return "CUDA graphs switched off (cuda_graph=False)"
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device.type}"
    if scaler is not None:
        return "fp16 GradScaler checks for inf on the host every step; no graph"
    if not hasattr(torch.cuda, "CUDAGraph"):
        return "this torch build has no CUDA graphs"
    return None


@torch.no_grad()
def sgd_update(optimizer: torch.optim.SGD, lrs: list[torch.Tensor]) -> None:
    """One SGD step of ``optimizer`` with group ``g``'s learning rate read from ``lrs[g]``.

    The arithmetic of ``torch.optim.SGD`` (weight decay, momentum, dampening, Nesterov)
    on its own momentum buffers, with no host sync and no Python number depending on the
    step, so it can live inside a CUDA graph. Every parameter with a gradient must
    already have its momentum buffer (one eager step makes them).
    """
    for group, lr in zip(optimizer.param_groups, lrs):
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        wd, momentum, nesterov = group["weight_decay"], group["momentum"], group["nesterov"]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum != 0:
            bufs = [optimizer.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
            if nesterov:
                grads = torch._foreach_add(grads, bufs, alpha=momentum)
            else:
                grads = bufs
        torch._foreach_add_(params, torch._foreach_mul(grads, -lr))


@contextmanager
def host_syncs(active: bool) -> Iterator[list[str]]:
    """While ``active``, collect the messages of CUDA operations that wait on the host
    (``torch.cuda.set_sync_debug_mode("warn")``): a step with one cannot be captured."""
    found: list[str] = []
    if not active or not torch.cuda.is_available():
        yield found
        return
    import warnings

    saved = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(saved)
    for w in caught:
        text = str(w.message)
        if "synchroniz" in text:
            found.append(" ".join(text.split())[:200])
        else:  # not ours: pass it on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:240]}"


class StepRunner:
    """Runs training steps, as a CUDA graph when possible (see the module docs).

    Args:
        model: The network (in train mode, on ``device``).
        optimizer: Its SGD optimizer.
        loss_fn: ``loss_fn(logits, y)``.
        device: The training device.
        amp_dtype: Autocast dtype, or None.
        scaler: fp16 GradScaler, or None.
        wanted: ``TrainConfig.cuda_graph`` (None: on for CUDA).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                 device: torch.device, amp_dtype: torch.dtype | None, scaler: Any,
                 wanted: bool | None = None) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device, self.amp_dtype, self.scaler = device, amp_dtype, scaler
        self.reason = graph_refusal(device, wanted, scaler)
        if self.reason is None and not isinstance(optimizer, torch.optim.SGD):
            self.reason = f"the graphed update is SGD's; {type(optimizer).__name__} runs eagerly"
        self.graph: torch.cuda.CUDAGraph | None = None
        #: Called once with the first step's output and batch size (e.g. a head-shape check).
        self.check_output: Callable[[torch.Tensor, int], None] | None = None
        self.eager_steps = 0
        self.graphed_steps = 0
        self.captures = 0
        self._side = torch.cuda.Stream(device) if self.reason is None else None

    @property
    def mode(self) -> str:
        """``cuda_graph`` once a step was replayed from a graph, else ``eager``."""
        return GRAPHED if self.graphed_steps else EAGER

    def _autocast(self, cache: bool = True) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=cache)

    def eager_step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """One ordinary step; returns the (on-device) loss."""
        with self._autocast():
            out = self.model(xb)
            if self.check_output is not None:  # the first step is eager: checked before training
                self.check_output(out, len(xb))
                self.check_output = None
            loss = self.loss_fn(out, yb)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.eager_steps += 1
        return loss.detach()

    def new_epoch(self) -> None:
        """Drop the graph if the model has a per-epoch schedule (captured again next step)."""
        if self.graph is not None and hasattr(self.model, "on_epoch_start"):
            self.graph = None

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """One training step on ``(xb, yb)``; returns the loss (a tensor on the device,
        overwritten by the next graphed step: copy it to keep it)."""
        if self.reason is not None:
            return self.eager_step(xb, yb)
        if self.graph is None and self.eager_steps < WARMUP_STEPS:
            side, current = self._side, torch.cuda.current_stream(self.device)
            side.wait_stream(current)
            last = self.eager_steps == WARMUP_STEPS - 1
            with torch.cuda.stream(side), host_syncs(last) as syncs:
                loss = self.eager_step(xb, yb)
            current.wait_stream(side)
            if syncs:  # the step waits on the host: a capture would fail; never try it
                self.reason = f"the step synchronises with the host, trained eagerly: {syncs[0]}"
            return loss
        if self.graph is None:
            try:
                self._capture(xb, yb)
            except Exception as exc:  # any capture failure: train eagerly, say why
                self._abandon(exc)
                return self.eager_step(xb, yb)
        self.static_x.copy_(xb)
        self.static_y.copy_(yb)
        for t, group in zip(self.lrs, self.optimizer.param_groups):
            t.fill_(group["lr"])
        self.graph.replay()
        self.graphed_steps += 1
        return self.static_loss.detach()  # the graph's buffer: copy it before the next step

    def _capture(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        torch.cuda.synchronize(self.device)
        stream = torch.cuda.current_stream(self.device)
        try:
            self._record(xb, yb)
        except BaseException:
            # torch.cuda.graph leaves its capture stream current when the capture fails:
            # the eager steps that follow must run where the batches are made
            torch.cuda.set_stream(stream)
            raise

    def _record(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """Capture one whole step on static buffers into ``self.graph``."""
        self.static_x = torch.empty_like(xb)
        self.static_y = torch.empty_like(yb)
        self.static_x.copy_(xb)
        self.static_y.copy_(yb)
        self.lrs = [
            torch.tensor(float(g["lr"]), device=self.device) for g in self.optimizer.param_groups]
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            with self._autocast(cache=False):
                loss = self.loss_fn(self.model(self.static_x), self.static_y)
            loss.backward()
            sgd_update(self.optimizer, self.lrs)
        self.static_loss = loss
        self.graph = graph
        self.captures += 1

    def _abandon(self, exc: BaseException) -> None:
        self.graph = None
        self.reason = f"capture failed, trained eagerly: {_one_line(exc)}"
        if self.device.type == "cuda":
            try:  # a failed capture may leave an error on the stream: clear it
                torch.cuda.synchronize(self.device)
            except RuntimeError:
                pass
        self.optimizer.zero_grad(set_to_none=True)

    def describe(self) -> dict[str, Any]:
        """The record's ``train_step``, ``graph_fallback``, ``graph_captures`` and so on."""
        return {"train_step": self.mode, "graph_fallback": self.reason,
                "graph_captures": self.captures, "graphed_steps": self.graphed_steps}
