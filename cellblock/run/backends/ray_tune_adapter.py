"""Ray Tune plug-ins of the ``ray`` backend (:mod:`cellblock.run.backends.ray_backend`),
driver side (used with ``--scheduler asha`` or ``mo-asha``).

* :data:`SCHEDULERS`: the ``--scheduler`` choices (none, asha, mo-asha) as Tune
  schedulers; :class:`MOASHAScheduler` applies
  :class:`cellblock.run.schedulers.MOSuccessiveHalving`.
* :class:`BookSearcher`: a Tune ``Searcher`` over the run's :class:`cellblock.run.book.TrialBook`,
  so every cellblock strategy works unchanged and the driver keeps ``trials.jsonl``;
  :class:`ErrorCallback` hands it the errors of failed trials. An error of the
  infrastructure (:func:`infra_error`: the trial's actor, worker process or node died) is a
  lost attempt (``TrialBook.lose``: the trial runs again as a new Tune trial); any other
  error (an exception in the trial) makes the trial FAILED.
* :func:`outcome_of`: a trial's outcome from its last Tune result (:data:`OUTCOME_KEY`,
  :data:`METRICS_KEY`, written by the trainable in :mod:`cellblock.run.backends.ray_backend`).

Imports ray: import it only through :mod:`cellblock.run.backends.ray_backend` (loaded lazily).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from cellblock.core.config import RunConfig
from cellblock.core.objectives import Objective
from cellblock.core.registry import Registry
from cellblock.evaluators.pipeline import Outcome, trial_seed
from cellblock.records import FAILED, PRUNED, Trial
from cellblock.run.schedulers import MOSuccessiveHalving

#: Result keys: the final outcome (JSON), the metrics at an epoch (JSON), the trial's node.
OUTCOME_KEY = "cellblock_outcome"
METRICS_KEY = "cellblock_metrics"
NODE_KEY = "cellblock_node"


def node_label(ip: str | None, node_id: str | None) -> str:
    """How records name a Ray node: ``IP node-ID-prefix`` (several nodes may share an IP)."""
    return f"{ip or '?'} {(node_id or '?')[:12]}"


# ---- schedulers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SchedulerKind:
    """A ``--scheduler`` choice: how to make the Tune scheduler (stop, never pause, trials)."""

    make: Callable[[RunConfig, list[Objective]], TrialScheduler | None]


SCHEDULERS: Registry[SchedulerKind] = Registry("scheduler")
SCHEDULERS.register("none", SchedulerKind(lambda cfg, objs: None))
SCHEDULERS.register(
    "asha",
    SchedulerKind(
        lambda cfg, objs: ASHAScheduler(
            time_attr="epoch",
            metric="accuracy",
            mode="max",
            max_t=cfg.epochs,
            grace_period=cfg.grace_epochs,
            reduction_factor=cfg.reduction_factor,
        )
    ),
)


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


SCHEDULERS.register(
    "mo-asha",
    SchedulerKind(
        lambda cfg, objs: MOASHAScheduler(
            MOSuccessiveHalving(objs, cfg.grace_epochs, cfg.reduction_factor, cfg.epochs)
        )
    ),
)


# ---- driver side -----------------------------------------------------------------------------
def outcome_of(result: Mapping[str, Any] | None) -> Outcome:
    """The outcome of a trial from its last Tune result (PRUNED when stopped early)."""
    result = result or {}
    if result.get(OUTCOME_KEY):
        return Outcome(**json.loads(result[OUTCOME_KEY]))
    if result.get(METRICS_KEY):
        return Outcome(PRUNED, json.loads(result[METRICS_KEY]))
    return Outcome(FAILED, {}, "the trial ended without reporting a result")


def _error_lines(tune_trial: Any) -> list[str]:
    err = None
    try:  # Tune writes the error text to the trial's (driver-side) error file
        path = tune_trial.error_file
        err = (
            Path(path).read_text(encoding="utf-8")
            if path and Path(path).exists()
            else tune_trial.get_error()
        )
    except Exception:  # an unreadable error file must not stop the search
        err = None
    return [
        ln for ln in str(err or "").splitlines() if ln.strip() and not ln.startswith("Failure # ")
    ]


def _error_text(tune_trial: Any) -> str:
    lines = _error_lines(tune_trial)
    text = " ".join(" ".join(lines).split()) or "unknown error"
    # a traceback ends with the exception ("Type: message"): that line says why
    cause = " ".join(lines[-1].split()) if lines else text
    return f"Ray trial failed: {cause[:400]}"


#: Words of Ray's error texts that mean the infrastructure failed (when the pickled error is lost).
_INFRA_WORDS = (
    "ActorDiedError",
    "ActorUnavailableError",
    "RayActorError",
    "WorkerCrashedError",
    "NodeDiedError",
    "OutOfMemoryError",
    "The actor died",
    "actor is unavailable",
    "worker process has died",
    "node has died",
    "node was terminated",
    "is unavailable",
)


def infra_error(tune_trial: Any) -> str | None:
    """Why the trial's attempt was lost to the infrastructure (its actor, worker process or
    node died, or Ray's memory monitor killed it), one line; None for an error of the trial."""
    from ray import exceptions as rex

    kinds = (
        rex.RayActorError,
        rex.WorkerCrashedError,
        rex.NodeDiedError,
        rex.OutOfMemoryError,
        rex.ObjectLostError,
    )
    try:
        err = tune_trial.get_pickled_error()
    except Exception:  # unreadable: fall back to the text
        err = None
    if isinstance(err, rex.RayTaskError):
        err = err.as_instanceof_cause()
    if err is not None and not isinstance(err, kinds):
        return None
    lines = _error_lines(tune_trial)
    text = " ".join(" ".join(lines).split())
    if err is None and not any(w in text for w in _INFRA_WORDS):
        return None
    kind = type(err).__name__ if err is not None else "Ray error"
    detail = " ".join(str(getattr(err, "error_msg", "") or text).split())
    return f"{kind}: {detail[:300]}"


def _ip_of(text: str) -> str | None:
    match = re.search(r"\bip: ([0-9a-fA-F.:]+)", text)
    return match.group(1) if match else None


class BookSearcher(Searcher):
    """Tune searcher over a :class:`cellblock.run.book.TrialBook` (any cellblock strategy).

    ``suggest`` takes the book's next trial and records its start; ``on_trial_complete``
    records its end and tells the strategy. Trials that error are completed by
    :meth:`fail`, called by :class:`ErrorCallback`: a lost attempt goes back to the book.

    Args:
        book: The run's trial book.
        after: Called with the number of trials that just finished.
        seed: The run's seed.
        capacity: Trials that may be live now (the cluster's size for ``concurrency: auto``).
    """

    def __init__(
        self,
        book: Any,
        after: Callable[[int], None],
        seed: int,
        capacity: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(metric="accuracy", mode="max")
        self.book, self.after, self.seed = book, after, seed
        self.capacity = capacity
        self.live: dict[str, Trial] = {}
        self.errored: dict[str, Trial] = {}
        self.last: dict[str, dict[str, Any]] = {}
        #: Tune trial id -> the Ray actor id that ran it (for the node of a lost attempt).
        self.actors: dict[str, str] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        book = self.book
        if book.exhausted or book.done + len(book.held) >= book.budget:
            return Searcher.FINISHED
        if not book.wants_more():  # the rest of the budget is in flight (and may be lost)
            return None
        if self.capacity is not None and len(self.live) >= self.capacity():
            return None
        trial = book.next_trial()
        if trial is None:
            return Searcher.FINISHED if book.exhausted else None
        book.start(trial)
        self.live[trial_id] = trial
        return {
            "arch": json.dumps(trial.arch, sort_keys=True),
            "number": trial.number,
            "seed": trial_seed(self.seed, trial.arch_id),
        }

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.last[trial_id] = {k: result.get(k) for k in (OUTCOME_KEY, METRICS_KEY, NODE_KEY)}

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        trial = self.live.pop(trial_id, None)
        last = self.last.pop(trial_id, None)
        if trial is None:
            return
        if error:
            self.errored[trial_id] = trial
            return
        final = result if result and (result.get(OUTCOME_KEY) or result.get(METRICS_KEY)) else last
        self.actors.pop(trial_id, None)
        self._finish(trial, outcome_of(final), (final or {}).get(NODE_KEY))

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its searcher; the book and the callbacks stay in the driver."""
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("book", "after", "live", "errored", "capacity")
        }

    def save(self, checkpoint_path: str) -> None:
        """No Tune-side searcher checkpoint: cellblock resumes from ``trials.jsonl``."""

    def fail(
        self, trial_id: str, message: str, lost: bool = False, node: str | None = None
    ) -> None:
        """Complete an errored trial: FAILED with ``message``, or (``lost``) a lost attempt."""
        trial = self.errored.pop(trial_id, None)
        self.actors.pop(trial_id, None)
        if trial is None:
            return
        if lost:
            self.book.lose(trial, node, message)
        else:
            self._finish(trial, Outcome(FAILED, {}, message))

    def node_of(self, trial_id: str, text: str) -> str | None:
        """Where a Tune trial ran: its actor's node from Ray's actor table, else the error's ip."""
        actor = self.actors.get(trial_id)
        if actor:
            try:
                from ray._private.state import actors

                info = actors(actor) or {}
                address = info.get("Address") or {}
                if address.get("NodeID"):
                    return node_label(address.get("IPAddress"), address["NodeID"])
            except Exception:  # the actor table is a best effort: the error's ip is next
                pass
        ip = _ip_of(text)
        return node_label(ip, None) if ip else None

    def _finish(self, trial: Trial, outcome: Outcome, node: str | None = None) -> None:
        self.book.finish(trial, outcome, node)
        self.after(1)


class ErrorCallback(tune.Callback):
    """Hands the errors of failed Tune trials to the searcher, remembers which Ray actor
    runs each trial (the node of a lost attempt), and calls ``watch`` at every step of
    Tune's loop (the driver's look at the cluster: nodes lost or joined)."""

    def __init__(self, searcher: BookSearcher, watch: Callable[[], None] | None = None) -> None:
        self.searcher = searcher
        self.watch = watch

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks; the watch (it holds the run's log) stays in the driver."""
        return {k: v for k, v in self.__dict__.items() if k != "watch"}

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        watch = getattr(self, "watch", None)
        if watch is not None:
            watch()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        actor = getattr(getattr(trial, "temporary_state", None), "ray_actor", None)
        actor_id = getattr(actor, "_actor_id", None)
        if actor_id is not None:
            self.searcher.actors[trial.trial_id] = actor_id.hex()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        lost = infra_error(trial)
        if lost is None:
            self.searcher.fail(trial.trial_id, _error_text(trial))
        else:
            self.searcher.fail(
                trial.trial_id, lost, lost=True, node=self.searcher.node_of(trial.trial_id, lost)
            )
