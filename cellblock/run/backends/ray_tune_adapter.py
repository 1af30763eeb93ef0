"""Ray Tune plug-ins of the ``ray`` backend (:mod:`cellblock.run.backends.ray_backend`), driver side.

* :data:`SCHEDULERS`: the ``--scheduler`` choices (none, asha, mo-asha) as Tune
  schedulers; :class:`MOASHAScheduler` applies :class:`cellblock.run.schedulers.MOSuccessiveHalving`.
* :class:`BookSearcher`: a Tune ``Searcher`` over the run's :class:`cellblock.run.runner.TrialBook`,
  so every cellblock strategy works unchanged and the driver keeps ``trials.jsonl``;
  :class:`ErrorCallback` hands it the error text of failed trials.
* :func:`outcome_of`: a trial's outcome from its last Tune result (:data:`OUTCOME_KEY`,
  :data:`METRICS_KEY`, written by the trainable in :mod:`cellblock.run.backends.ray_backend`).

Imports ray: import it only through :mod:`cellblock.run.backends.ray_backend` (loaded lazily).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from cellblock.core.objectives import Objective
from cellblock.core.registry import Registry
from cellblock.evaluators.pipeline import Outcome, trial_seed
from cellblock.records import FAILED, PRUNED, Trial
from cellblock.run.schedulers import MOSuccessiveHalving

#: Result keys: the final outcome (JSON) and the metrics at an epoch (JSON).
OUTCOME_KEY = "cellblock_outcome"
METRICS_KEY = "cellblock_metrics"


# ---- schedulers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SchedulerKind:
    """A ``--scheduler`` choice: how to make the Tune scheduler (stop, never pause, trials)."""

    make: Callable[[Mapping[str, Any], list[Objective]], TrialScheduler | None]


SCHEDULERS: Registry[SchedulerKind] = Registry("scheduler")
SCHEDULERS.register("none", SchedulerKind(lambda cfg, objs: None))
SCHEDULERS.register("asha", SchedulerKind(lambda cfg, objs: ASHAScheduler(
    time_attr="epoch", metric="accuracy", mode="max", max_t=cfg["epochs"],
    grace_period=cfg["grace_epochs"], reduction_factor=cfg["reduction_factor"])))


class MOASHAScheduler(FIFOScheduler):
    """Tune scheduler applying :class:`cellblock.run.schedulers.MOSuccessiveHalving`.

    Args:
        rule: The multi-objective successive-halving rule.
    """

    def __init__(self, rule: MOSuccessiveHalving) -> None:
        super().__init__()
        self.rule = rule
        self._metric = "accuracy"

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if OUTCOME_KEY in result or "epoch" not in result:
            return TrialScheduler.CONTINUE  # the final result: the trial ends by itself
        go_on = self.rule.decide(trial.trial_id, int(result["epoch"]), result)
        return TrialScheduler.CONTINUE if go_on else TrialScheduler.STOP

    def debug_string(self) -> str:
        counts = {r: len(s) for r, s in self.rule.recorded.items()}
        return f"Multi-objective ASHA, trials recorded per rung: {counts}"


SCHEDULERS.register("mo-asha", SchedulerKind(lambda cfg, objs: MOASHAScheduler(MOSuccessiveHalving(
    objs, cfg["grace_epochs"], cfg["reduction_factor"], cfg["epochs"]))))


# ---- driver side -----------------------------------------------------------------------------
def outcome_of(result: Mapping[str, Any] | None) -> Outcome:
    """The outcome of a trial from its last Tune result (PRUNED when stopped early)."""
    result = result or {}
    if result.get(OUTCOME_KEY):
        return Outcome(**json.loads(result[OUTCOME_KEY]))
    if result.get(METRICS_KEY):
        return Outcome(PRUNED, json.loads(result[METRICS_KEY]))
    return Outcome(FAILED, {}, "the trial ended without reporting a result")


def _error_text(tune_trial: Any) -> str:
    err = None
    try:  # Tune writes the error text to the trial's (driver-side) error file
        path = tune_trial.error_file
        err = Path(path).read_text(encoding="utf-8") if path and Path(path).exists() else tune_trial.get_error()
    except Exception:  # an unreadable error file must not stop the search
        err = None
    lines = [ln for ln in str(err or "").splitlines() if ln.strip() and not ln.startswith("Failure # ")]
    text = " ".join(" ".join(lines).split()) or "unknown error"
    if "actor died" in text or "worker process has died" in text or "ActorDiedError" in text:
        return f"Ray worker died while evaluating it: {text[:400]}"
    # a traceback ends with the exception ("Type: message"): that line says why
    cause = " ".join(lines[-1].split()) if lines else text
    return f"Ray trial failed: {cause[:400]}"


class BookSearcher(Searcher):
    """Tune searcher over a :class:`cellblock.run.runner.TrialBook` (any cellblock strategy).

    ``suggest`` takes the book's next trial and records its start; ``on_trial_complete``
    records its end and tells the strategy. Trials that error are completed by
    :meth:`fail`, called with the error text by :class:`ErrorCallback`.
    """

    def __init__(self, book: Any, after: Callable[[int], None], seed: int) -> None:
        super().__init__(metric="accuracy", mode="max")
        self.book, self.after, self.seed = book, after, seed
        self.live: dict[str, Trial] = {}
        self.errored: dict[str, Trial] = {}
        self.last: dict[str, dict[str, Any]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self.book.wants_more():
            return Searcher.FINISHED
        trial = self.book.next_trial()
        if trial is None:
            return Searcher.FINISHED if self.book.exhausted else None
        self.book.start(trial)
        self.live[trial_id] = trial
        return {"arch": json.dumps(trial.arch, sort_keys=True), "number": trial.number,
                "seed": trial_seed(self.seed, trial.arch_id)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.last[trial_id] = {k: result.get(k) for k in (OUTCOME_KEY, METRICS_KEY)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        last = self.last.pop(trial_id, None)
        if trial is None:
            return
        if error:
            self.errored[trial_id] = trial
            return
        self._finish(trial, outcome_of(result if result and (
            result.get(OUTCOME_KEY) or result.get(METRICS_KEY)) else last))

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its searcher; the book and the callback stay in the driver."""
        return {k: v for k, v in self.__dict__.items() if k not in ("book", "after", "live", "errored")}

    def save(self, checkpoint_path: str) -> None:
        """No Tune-side searcher checkpoint: cellblock resumes from ``trials.jsonl``."""

    def fail(self, trial_id: str, message: str) -> None:
        """Record an errored trial as FAILED with ``message``."""
        trial = self.errored.pop(trial_id, None)
        if trial is not None:
            self._finish(trial, Outcome(FAILED, {}, message))

    def _finish(self, trial: Trial, outcome: Outcome) -> None:
        self.book.finish(trial, outcome)
        self.after(1)


class ErrorCallback(tune.Callback):
    """Hands the error text of failed Tune trials to the searcher."""

    def __init__(self, searcher: BookSearcher) -> None:
        self.searcher = searcher

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.fail(trial.trial_id, _error_text(trial))
