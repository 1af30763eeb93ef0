"""The worker side of the ``ray`` backend: what runs inside a Ray worker process (a Tune
trial, :func:`run_trial`, or an actor of :mod:`cellblock.run.backends.ray_actors`).

The run's components are built once per worker process (:func:`worker_components`);
:func:`evaluate_here` evaluates one architecture with them, after writing the inputs the
driver shipped (:mod:`cellblock.run.backends.ray_ship`) to this node.

Imports ray: import it only through :mod:`cellblock.run.backends.ray_backend`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import ray
from ray import tune

from cellblock.core.config import RunConfig
from cellblock.evaluators.base import Evaluator
from cellblock.evaluators.pipeline import Outcome
from cellblock.run.backends.base import set_threads
from cellblock.run.backends.ray_ship import materialize
from cellblock.run.backends.ray_tune_adapter import METRICS_KEY, NODE_KEY, OUTCOME_KEY, node_label

_COMPONENTS: dict[str, Any] = {}


def worker_components(cfg: RunConfig) -> Any:
    """The run's components, built once per worker process (keyed by the config's JSON)."""
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if key not in _COMPONENTS:
        from cellblock.run.components import build_components

        _COMPONENTS.clear()  # one run per worker at a time: free the previous data
        _COMPONENTS[key] = build_components(cfg)
    return _COMPONENTS[key]


def _jsonable(obj: Any) -> Any:
    return obj.item() if hasattr(obj, "item") else str(obj)


class EpochReporter(Evaluator):
    """Wraps a training evaluator: reports validation accuracy to Tune after every epoch
    but the last (whose result carries the full outcome), with the cheap metrics.

    Args:
        inner: The run's evaluator (it must have ``train_config(seed)``).
        pipeline: The run's pipeline (its cheap metrics go into the reports).
    """

    def __init__(self, inner: Any, pipeline: Any) -> None:
        super().__init__(inner.ctx)
        self.inner, self.pipeline = inner, pipeline

    def _cheap_metrics(self) -> dict[str, Any]:
        """The numeric metrics the pipeline measured before training (no second latency run)."""
        out = self.pipeline.cheap_metrics
        return {
            k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    def evaluate(self, model: Any, arch: Mapping[str, Any], seed: int) -> dict[str, Any]:
        from cellblock.core.devices import resolve_device
        from cellblock.evaluators.loop import device_tensors
        from cellblock.evaluators.training import evaluate_accuracy, train_and_evaluate

        cheap = self._cheap_metrics()
        tcfg = self.inner.train_config(seed)
        _, _, x_val, y_val = device_tensors(self.ctx.data, resolve_device(tcfg.device))
        start, eval_s = time.perf_counter(), 0.0

        def on_epoch_end(state: dict[str, Any]) -> None:
            nonlocal eval_s
            if state["epoch"] >= tcfg.epochs:
                return
            t0 = time.perf_counter()
            acc = evaluate_accuracy(model, x_val, y_val, tcfg.eval_batch_size, tcfg.device)
            eval_s += time.perf_counter() - t0
            train_s = time.perf_counter() - start - eval_s
            metrics = {**cheap, "accuracy": acc, "epochs": state["epoch"], "train_s": train_s}
            result = {
                **cheap,
                "epoch": state["epoch"],
                "accuracy": acc,
                NODE_KEY: here(),
                METRICS_KEY: json.dumps(metrics, default=_jsonable),
            }
            tune.report(result)

        out = train_and_evaluate(model, self.ctx.data, tcfg, on_epoch_end=on_epoch_end)
        out["train_s"] -= eval_s
        return out


def here() -> str:
    """This worker's node, as the records name it."""
    ctx = ray.get_runtime_context()
    return node_label(ray.util.get_node_ip_address(), ctx.get_node_id())


def evaluate_here(settings: Mapping[str, Any], arch: dict[str, Any], seed: int) -> Outcome:
    """Evaluate one architecture with the run's pipeline, in a Ray worker (a Tune trial or
    an actor of :mod:`cellblock.run.backends.ray_actors`)."""
    cfg = settings["config"]
    if settings.get("shipped"):
        cfg = materialize(cfg, settings["shipped"], ray.get)
    if str(cfg.device).startswith("cuda:") and ray.get_gpu_ids():
        cfg = cfg.replace(device="cuda")  # Ray shows a GPU trial only its own GPU(s)
    set_threads(cfg)
    pipeline = worker_components(cfg).pipeline
    if not settings["per_epoch"]:
        return pipeline(arch, seed)
    inner = pipeline.evaluator
    pipeline.evaluator = EpochReporter(inner, pipeline)
    try:
        return pipeline(arch, seed)
    finally:
        pipeline.evaluator = inner


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune function trainable: evaluate one architecture with the run's pipeline."""
    outcome = evaluate_here(settings, json.loads(config["arch"]), int(config["seed"]))
    acc = outcome.metrics.get("accuracy")
    acc = float(acc) if isinstance(acc, (int, float)) else math.nan
    tune.report(
        {
            "epoch": settings["config"].epochs,
            "accuracy": acc,
            NODE_KEY: here(),
            OUTCOME_KEY: json.dumps(asdict(outcome), default=_jsonable),
        }
    )
