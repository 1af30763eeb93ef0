"""The ``ray`` backend's own scheduler (``scheduler: none``): one long-lived Ray actor per
trial slot, fed by the run loop's ``submit``/``wait``
(:meth:`cellblock.run.backends.base.Backend.drive`).

Ray Tune's controller costs the driver tens of milliseconds per trial (its trial
bookkeeping, result processing and checkpoints), which leaves most of 32 slots idle with
1-second trials. Without an early-stopping scheduler nothing of Tune is needed: a trial is
one actor method call, and the driver's cost per trial is a ``ray.wait`` and a record.

* Actors are created up to the capacity (``concurrency``, or what the alive nodes hold for
  ``concurrency: auto``) and each builds the run's components once. A trial waits in the
  driver until an actor is placed and idle, so an actor that cannot be placed (its node
  is gone, the cluster is full) never holds a trial.
* An actor, worker process or node that dies loses its trial's attempt (:class:`Lost`,
  with the node and Ray's reason); the run loop re-runs it. Idle actors on a node that
  left the cluster are dropped before they are given a trial.
* An exception of the trial is its outcome (FAILED, from the pipeline), never retried.

Imports ray: import it only through :mod:`cellblock.run.backends.ray_backend`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import ray
from ray import exceptions as rex

from cellblock.evaluators.pipeline import Outcome, trial_seed
from cellblock.records import FAILED, Trial
from cellblock.run.backends.base import Lost

#: Ray's errors that mean the infrastructure failed, not the trial.
INFRA_ERRORS = (
    rex.RayActorError,
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.OutOfMemoryError,
    rex.ObjectLostError,
)

#: Seconds between two looks at finished trials when nothing finished (the cluster is polled).
WAIT_STEP_S = 1.0


class TrialActor:
    """A trial slot on some node: builds the run's components once, then evaluates trials.

    Args:
        settings: What every trial needs: ``config``, ``per_epoch`` and the ``shipped`` inputs
            (see :func:`cellblock.run.backends.ray_worker.evaluate_here`).
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings

    def where(self) -> str:
        """This actor's node, as the records name it."""
        from cellblock.run.backends.ray_worker import here

        return here()

    def evaluate(self, arch: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], str]:
        """One trial's outcome (as a dict) and the node it ran on."""
        from cellblock.run.backends.ray_worker import evaluate_here, here

        return asdict(evaluate_here(self.settings, dict(arch), seed)), here()


@dataclass
class _Slot:
    """A driver-side handle of one actor."""

    actor: Any
    ready: Any  # the ref of its ``where()`` call: resolved once the actor is placed and started
    node: str | None = None
    trial: Trial | None = None
    task: Any = None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "error_msg", "") or exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


class ActorPool:
    """Trial slots as Ray actors (see the module docs).

    Args:
        settings: What every trial needs (config, shipped inputs).
        resources: One trial's resources (Ray names: CPU, GPU, custom).
        capacity: How many slots to keep (called at every submit).
        seed: The run's seed (a trial's seed comes from it and the architecture).
        poll: Called while waiting (the driver's look at the cluster).
        alive: Node ids of the alive nodes (None: unknown), to drop idle actors on lost nodes.
    """

    def __init__(
        self,
        settings: Mapping[str, Any],
        resources: Mapping[str, float],
        capacity: Callable[[], int],
        seed: int,
        poll: Callable[[], None] = lambda: None,
        alive: Callable[[], set[str] | None] = lambda: None,
    ) -> None:
        other = {k: v for k, v in resources.items() if k not in ("CPU", "GPU") and v > 0}
        self.remote = ray.remote(TrialActor).options(
            num_cpus=resources.get("CPU", 1.0),
            num_gpus=resources.get("GPU", 0.0),
            resources=other or None,
            max_restarts=0,
            max_task_retries=0,
        )
        self.settings, self.capacity, self.seed = settings, capacity, seed
        self.poll, self.alive = poll, alive
        self.slots: list[_Slot] = []
        self.queue: list[Trial] = []

    # ---- the run loop's side --------------------------------------------------------------
    def submit(self, trial: Trial) -> None:
        """Queue ``trial``; it starts as soon as an actor is idle."""
        self.queue.append(trial)
        self._grow()
        self._dispatch()

    def wait(self) -> list[tuple[Trial, Outcome | Lost, str | None]]:
        """Block until at least one trial finished or was lost: (trial, outcome, node); or,
        with nothing finished, until the capacity grew (a node joined: the run loop may
        start more trials)."""
        before = self.capacity()
        while True:
            out = self._collect(WAIT_STEP_S)
            self.poll()
            self._drop_lost_nodes()
            self._grow()
            self._dispatch()
            if out or self.capacity() > before:
                return out

    def close(self) -> None:
        """Stop every actor (trials still running are abandoned: they re-run on resume)."""
        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # already dead, or Ray is gone
                pass
        self.slots.clear()

    # ---- internals ------------------------------------------------------------------------
    def _grow(self) -> None:
        want = max(1, self.capacity())
        while len(self.slots) < want:
            actor: Any = self.remote.remote(self.settings)
            self.slots.append(_Slot(actor, actor.where.remote()))

    def _dispatch(self) -> None:
        for slot in self.slots:
            if not self.queue:
                return
            if slot.node is not None and slot.trial is None:
                trial = self.queue.pop(0)
                slot.trial = trial
                slot.task = slot.actor.evaluate.remote(
                    trial.arch, trial_seed(self.seed, trial.arch_id)
                )

    def _collect(self, timeout_s: float) -> list[tuple[Trial, Outcome | Lost, str | None]]:
        """Look at what resolved (placements and trials) within ``timeout_s``."""
        refs = {
            id(s): (s.task if s.trial is not None else s.ready)
            for s in self.slots
            if s.trial is not None or s.node is None
        }
        if not refs:
            return []
        by_ref = {ref: s for s in self.slots for ref in [refs.get(id(s))] if ref is not None}
        ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout_s)
        if ready:  # everything else that is ready too, without waiting
            ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        out: list[tuple[Trial, Outcome | Lost, str | None]] = []
        for ref in ready:
            slot = by_ref[ref]
            if slot.trial is None:
                self._placed(slot)
            else:
                out.append(self._finished(slot))
        return out

    def _placed(self, slot: _Slot) -> None:
        try:
            slot.node = ray.get(slot.ready)
        except INFRA_ERRORS:
            self._remove(slot)  # died before its first trial: nothing lost

    def _finished(self, slot: _Slot) -> tuple[Trial, Outcome | Lost, str | None]:
        trial, task = slot.trial, slot.task
        assert trial is not None  # a slot with a task has its trial (internal invariant)
        slot.trial = slot.task = None
        try:
            result, node = ray.get(task)
        except INFRA_ERRORS as exc:
            self._remove(slot)
            return trial, Lost(slot.node, _reason(exc)), slot.node
        except rex.RayTaskError as exc:  # the pipeline turns a trial's exceptions into FAILED
            return (
                trial,
                Outcome(FAILED, {}, f"Ray trial failed: {_reason(exc.as_instanceof_cause())}"),
                slot.node,
            )
        return trial, Outcome(**result), node

    def _remove(self, slot: _Slot) -> None:
        self.slots.remove(slot)
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # already gone
            pass

    def _drop_lost_nodes(self) -> None:
        alive = self.alive()
        if alive is None:
            return
        for slot in list(self.slots):
            node_id = (slot.node or "").rpartition(" ")[2]
            if (
                slot.trial is None
                and slot.node is not None
                and not any(a.startswith(node_id) for a in alive)
            ):
                self._remove(slot)
