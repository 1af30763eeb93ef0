"""Evaluate one candidate: cheap metrics and constraints first, then the evaluator.

Order: build -> params/MACs (+ registered cheap metrics such as zero-cost proxies, when an
objective or constraint names them) -> cheap constraints -> latency -> latency constraints ->
evaluator (training, table, supernet...) -> remaining constraints. A candidate that
breaks a cheap constraint is INFEASIBLE without being trained. Any exception or a
NaN metric makes the trial FAILED with its error; the search goes on.
"""

from __future__ import annotations

import hashlib
import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cellblock.core.errors import EvaluationError
from cellblock.core.objectives import Constraint, Objective, total_violation
from cellblock.core.registry import Registry
from cellblock.core.threads import apply_threads, threads_for
from cellblock.evaluators.base import EvalContext, Evaluator
from cellblock.evaluators.cost import cost_metrics
from cellblock.records import COMPLETE, FAILED, INFEASIBLE

#: Metric name -> ``provider(model, ctx) -> value``: cheap metrics computed from the built,
#: untrained network (zero-cost proxies register here), only when an objective or a
#: constraint names them.
METRIC_PROVIDERS: Registry[Callable[[nn.Module, EvalContext], float]] = Registry("metric provider")


@dataclass
class Outcome:
    """Result of evaluating one candidate."""

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    violation: float = 0.0


def trial_seed(seed: int, arch_id: str) -> int:
    """Per-candidate seed: the same architecture gets the same init and data order."""
    digest = hashlib.sha256(f"{seed}:{arch_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EvaluationError):
        return str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


class Pipeline:
    """Callable evaluating an architecture dict into an :class:`Outcome`.

    Args:
        ctx: Evaluation context (config, space, data, device).
        evaluator: The evaluator producing the expensive metrics.
        objectives: The run's objectives (decide whether latency is measured).
        constraints: Constraints; cheap ones are checked before the evaluator runs.
    """

    def __init__(
        self,
        ctx: EvalContext,
        evaluator: Evaluator,
        objectives: Sequence[Objective],
        constraints: Sequence[Constraint],
    ) -> None:
        self.ctx = ctx
        self.evaluator = evaluator
        self.objectives = list(objectives)
        self.constraints = list(constraints)
        wanted = {o.name for o in self.objectives} | {c.metric for c in self.constraints}
        self.measure_latency = "latency_ms" in wanted
        self.provided = sorted(n for n in wanted if n in METRIC_PROVIDERS)
        self.input_shape = ctx.space.input_shape
        self.latency = None
        if self.measure_latency:  # measured in a runtime, or a latency table's prediction
            from cellblock.evaluators.latency.objective import latency_function

            self.latency = latency_function(ctx, self.input_shape)
        #: The metrics known before the evaluator runs (costs, cheap metrics, latency) of the
        #: candidate being evaluated, for evaluators that report them early (Ray schedulers).
        self.cheap_metrics: dict[str, Any] = {}

    def _violation(self, metrics: Mapping[str, Any]) -> float:
        return total_violation(self.constraints, metrics)

    def __call__(self, arch: Mapping[str, Any], seed: int) -> Outcome:
        from cellblock.core.devices import device_label

        metrics: dict[str, Any] = {"device": device_label(self.ctx.device)}  # where it ran
        try:
            known = self.evaluator.costs(arch)
            model = None
            if known is None or self.evaluator.needs_model or self.measure_latency or self.provided:
                torch.manual_seed(seed)
                model = self.ctx.space.build(arch)
            metrics.update(known if known is not None else cost_metrics(model, self.input_shape))
            threads = threads_for(self.ctx.config, metrics.get("macs"))
            apply_threads(threads)
            if threads is not None:
                metrics["threads"] = threads
            metrics.update({n: METRIC_PROVIDERS.get(n)(model, self.ctx) for n in self.provided})
            violation = self._violation(metrics)
            if violation > 0:
                return Outcome(INFEASIBLE, metrics, None, violation)
            if self.latency is not None:
                metrics.update(self.latency(model, arch))
                violation = self._violation(metrics)
                if violation > 0:
                    return Outcome(INFEASIBLE, metrics, None, violation)
            self.cheap_metrics = dict(metrics)
            self.evaluator.known = self.cheap_metrics
            metrics.update(self.evaluator.evaluate(model, arch, seed))
            for o in self.objectives:
                v = metrics.get(o.name)
                if not isinstance(v, (int, float)) or math.isnan(v):
                    raise EvaluationError(f"objective {o.name!r} is {v!r} after evaluation")
            violation = self._violation(metrics)
            return Outcome(INFEASIBLE if violation > 0 else COMPLETE, metrics, None, violation)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # every failure of a candidate becomes a FAILED trial
            return Outcome(FAILED, metrics, _describe(exc))
