"""Latency runtimes: how a module is run when it is timed (``torch``, ``torchscript``,
``onnxruntime``; register more with :func:`register_runtime`).

A runtime turns a module and example inputs into a zero-argument callable doing one
forward pass; :func:`time_call` times such a callable. ``onnxruntime`` exports the module
to ONNX exactly as ``cellblock export --format onnx`` does (opset 17, BN not folded by the
exporter) and runs it with ``CPUExecutionProvider`` (CUDA when the device is a GPU), so
its number is the deployed one.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cellblock.core.errors import ConfigError
from cellblock.core.registry import Registry

#: ``prepare(module, inputs, device) -> run``: ``run()`` does one forward pass, synchronously.
Prepare = Callable[[nn.Module, tuple, torch.device], Callable[[], Any]]
RUNTIMES: Registry[Prepare] = Registry("latency runtime")


def register_runtime(name: str) -> Callable[[Prepare], Prepare]:
    """Decorator registering ``prepare(module, inputs, device) -> run`` under ``name``."""
    return RUNTIMES.register(name)  # type: ignore[return-value]


def get_runtime(name: str | None) -> Prepare:
    """The runtime ``name`` (None means ``torch``); RegistryError lists the known ones."""
    return RUNTIMES.get(name or "torch")


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@register_runtime("torch")
def torch_runtime(module: nn.Module, inputs: tuple, device: torch.device) -> Callable[[], Any]:
    """PyTorch eager, eval mode (timed under ``torch.inference_mode``)."""
    module = module.to(device).eval()
    sync = _sync(device)

    def run() -> Any:
        out = module(*inputs)
        sync()
        return out

    return run


@register_runtime("torchscript")
def torchscript_runtime(module: nn.Module, inputs: tuple, device: torch.device) -> Callable[[],
                                                                                            Any]:
    """``torch.jit.trace`` then ``torch.jit.freeze`` (what a TorchScript deployment runs)."""
    module = module.to(device).eval()
    tensors = tuple(t for t in inputs if isinstance(t, torch.Tensor))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(_Bound(module, inputs).eval(), tensors))
    sync = _sync(device)

    def run() -> Any:
        out = traced(*tensors)
        sync()
        return out

    return run


class _Bound(nn.Module):
    """``module`` with its non-tensor arguments fixed, so it takes tensors only."""

    def __init__(self, module: nn.Module, inputs: tuple) -> None:
        super().__init__()
        self.module = module
        self.template = tuple(None if isinstance(t, torch.Tensor) else t for t in inputs)

    def forward(self, *tensors: torch.Tensor) -> Any:
        it = iter(tensors)
        return self.module(*(next(it) if t is None else t for t in self.template))


#: ONNX opset of every export and of the onnxruntime latency runtime.
ONNX_OPSET = 17


def onnx_bytes(module: nn.Module, inputs: tuple) -> bytes:
    """``module`` exported to ONNX the way ``cellblock export --format onnx`` does."""
    tensors = tuple(t.cpu() for t in inputs if isinstance(t, torch.Tensor))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Bound(module.cpu().eval(), inputs), tensors, buf, opset_version=ONNX_OPSET,
            dynamo=False, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
        )
    return buf.getvalue()


def ort_session(model: bytes | str, device: torch.device | None = None) -> Any:
    """An onnxruntime session with as many intra-op threads as torch uses."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("latency runtime 'onnxruntime' needs the onnxruntime package; "
                          "pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device is not None and device.type == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model, opts, providers=providers)


def ort_runner(sess: Any, arrays: Sequence[np.ndarray]) -> Callable[[], Any]:
    """One ``sess.run`` on ``arrays`` (fed to the session's inputs in order)."""
    feed = {i.name: a for i, a in zip(sess.get_inputs(), arrays, strict=False)}
    return lambda: sess.run(None, feed)


@register_runtime("onnxruntime")
def onnxruntime_runtime(module: nn.Module, inputs: tuple, device: torch.device) -> Callable[[],
                                                                                            Any]:
    """The module exported to ONNX (as ``cellblock export``), run by onnxruntime."""
    sess = ort_session(onnx_bytes(module, inputs), device)
    arrays = [t.detach().cpu().numpy() for t in inputs if isinstance(t, torch.Tensor)]
    return ort_runner(sess, arrays)


#: ``wall``: elapsed time (what a user waits). ``thread``: CPU time of the calling thread,
#: which excludes time the OS gave to other processes: with one compute thread it is the
#: latency of an otherwise idle machine, measured on a shared one.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}


def check_clock(clock: str) -> Callable[[], float]:
    """The clock ``clock``; ``thread`` needs one torch thread (work on other threads is unseen).

    Raises:
        ConfigError: for an unknown clock, or ``thread`` with several threads.
    """
    if clock not in CLOCKS:
        raise ConfigError(f"unknown latency clock {clock!r}; use one of: {', '.join(CLOCKS)}")
    if clock == "thread" and torch.get_num_threads() != 1:
        raise ConfigError(f"the 'thread' clock needs one compute thread (--threads 1), torch has "
                          f"{torch.get_num_threads()}; use --clock wall")
    return CLOCKS[clock]


def time_call(run: Callable[[], Any], warmup: int, repeats: int,
              clock: str = "wall") -> list[float]:
    """Milliseconds of ``repeats`` calls of ``run`` after ``warmup`` untimed ones (all under
    ``torch.inference_mode``, entered once, as ``measure_latency`` does)."""
    if warmup < 0 or repeats < 1:
        raise ConfigError(
            f"warmup={warmup}, repeats={repeats} are invalid; use warmup >= 0, repeats >= 1")
    now = check_clock(clock)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            run()
        for _ in range(repeats):
            t0 = now()
            run()
            times.append((now() - t0) * 1e3)
    return times


def runtime_fingerprint(runtime: str | None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The device fingerprint plus the runtime and its version (no hostname)."""
    from cellblock.evaluators.latency.measure import device_fingerprint

    name = runtime or "torch"
    fp = dict(device_fingerprint(device))
    fp["runtime"] = name
    if name == "onnxruntime":
        import onnxruntime as ort

        fp["onnxruntime"] = ort.__version__
    return fp


def measure_runtime_latency(
    model: nn.Module, input_shape: Sequence[int], runtime: str | None, batch_size: int = 1,
    device: str | torch.device = "cpu", warmup: int = 10, repeats: int = 30,
    max_spread: float | None = None,
) -> dict[str, Any]:
    """Like :func:`~cellblock.evaluators.latency.measure_latency`, in ``runtime``.

    ``torch`` uses ``measure_latency`` itself (with its re-measurement of a wide spread);
    other runtimes get the same keys plus ``latency_runtime``, timed with the device held
    exclusively as well. The model itself is left untouched (it is copied).
    """
    from cellblock.core.devices import resolve_device
    from cellblock.evaluators.latency.measure import measure_latency

    name = runtime or "torch"
    prepare = get_runtime(name)
    if name == "torch":
        out = measure_latency(model, input_shape, batch_size=batch_size, device=device,
                              warmup=warmup, repeats=repeats, max_spread=max_spread)
        out["latency_runtime"] = "torch"
        return out
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ConfigError(
            f"input_shape {tuple(input_shape)} is invalid; give (C, H, W) with positive sizes")
    import copy

    dev = resolve_device(str(device))
    x = torch.randn(batch_size, *map(int, input_shape), device=dev)
    from cellblock.core.device_lock import exclusive_device

    run = prepare(copy.deepcopy(model), (x,), dev)
    with exclusive_device(dev) as isolation:
        times = time_call(run, warmup, repeats)
    p10, p50, p90 = np.percentile(times, [10, 50, 90])
    return {
        "latency_ms": float(p50), "latency_p10_ms": float(p10), "latency_p90_ms": float(p90),
        "latency_batch_size": batch_size, "latency_repeats": repeats,
        "latency_device": runtime_fingerprint(name, dev), "latency_runtime": name, **isolation,
    }


def onnx_file_runner(path: str, input_shape: Sequence[int] | None = None,
                     batch_size: int = 1) -> Callable[[], Any]:
    """A callable running an exported ``model.onnx`` in onnxruntime on a fixed random input.

    The input shape is ``(batch_size, *input_shape)``, or the file's own with its dynamic
    (batch) dimension set to ``batch_size``; the input is drawn from seed 0.
    """
    sess = ort_session(str(path))
    inp = sess.get_inputs()[0]
    shape = [batch_size, *input_shape] if input_shape else [
        batch_size if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return ort_runner(sess, [x])


def measure_onnx_file(path: str, input_shape: Sequence[int] | None = None, batch_size: int = 1,
                      warmup: int = 10, repeats: int = 30, clock: str = "wall") -> dict[str, Any]:
    """Median latency of an exported ``model.onnx`` in onnxruntime (input shape from the file)."""
    times = time_call(onnx_file_runner(path, input_shape, batch_size), warmup, repeats, clock)
    p10, p50, p90 = np.percentile(times, [10, 50, 90])
    return {"latency_ms": float(p50), "latency_p10_ms": float(p10), "latency_p90_ms": float(p90),
            "latency_repeats": repeats, "latency_device": runtime_fingerprint("onnxruntime")}
