"""The records side of the run loop: :class:`TrialBook` numbers trials, dedupes them,
writes their start, end and lost events, and tells the strategy; every backend drives the
same book, so all of them write the same records."""

from __future__ import annotations

import socket
import time
import warnings
from typing import TYPE_CHECKING

from cellblock.core.errors import CellblockWarning, RunError
from cellblock.evaluators.pipeline import Outcome
from cellblock.records import (
    RUNNING,
    RecordLog,
    Trial,
    read_events,
    replay_trials,
    trial_end_event,
    trial_lost_event,
    trial_start_event,
)
from cellblock.run.asking import AskLoop

if TYPE_CHECKING:
    from cellblock.run.runner import Prepared

#: The node of trials run on this machine (``trial_end``'s ``node``).
THIS_NODE = socket.gethostname()


class TrialBook:
    """The records side of the loop: numbering, dedupe, start/end events and tells.

    Shared by every backend, so all of them write the same records.
    """

    def __init__(self, prepared: Prepared, log: RecordLog) -> None:
        self.p = prepared
        self.log = log
        self.budget: int = prepared.config.trials
        self.trials: list[Trial] = []
        self.by_id: dict[str, Trial] = {}
        self.in_flight: dict[str, Trial] = {}
        self.rerun: list[Trial] = []
        #: Trials whose every attempt of this run was lost to the infrastructure (more than
        #: ``infra_retries`` times): not finished, not counted, re-run by the next run.
        self.held: dict[str, Trial] = {}
        #: Attempts of this run lost to the infrastructure, by trial number.
        self.lost_now: dict[int, int] = {}
        self.retries: int = prepared.config.infra_retries
        #: Asks the strategy, dedupes against finished and in-flight trials, counts repeats.
        self.asks = AskLoop()
        self.exhausted = False

    @property
    def done(self) -> int:
        """Finished trials (complete, failed or infeasible)."""
        return len(self.by_id)

    def resume(self) -> None:
        """Load recorded trials; rebuild the strategy; queue in-flight ones.

        The strategy is rebuilt by asking and telling it again exactly as the log records
        (:func:`cellblock.strategies.resume.fast_forward`), so a resumed run goes on as an
        uninterrupted one would; a strategy that cannot (Optuna: its state is in its
        storage) or a log it does not reproduce falls back to :meth:`Strategy.replay`.
        """
        from cellblock.strategies.resume import fast_forward

        events = read_events(self.log.path)
        self.trials = replay_trials(events)
        finished = sorted(
            (t for t in self.trials if t.done), key=lambda t: (t.end_t or 0, t.number)
        )
        self.by_id = {t.arch_id: t for t in finished}
        if not fast_forward(self.p.strategy, events, self.trials, self.asks.exhausted_after):
            if self.p.new_strategy is not None and getattr(
                self.p.strategy, "replays_by_asking", True
            ):
                self.p.strategy = self.p.new_strategy()  # undo the partial fast-forward
            self.p.strategy.replay(finished)
        self.rerun = [t for t in self.trials if t.status == RUNNING]

    def wants_more(self) -> bool:
        """Whether another trial should be started now (trials held after lost attempts keep
        their place in the budget)."""
        return not self.exhausted and self.done + len(self.in_flight) + len(self.held) < self.budget

    def next_trial(self) -> Trial | None:
        """The next trial to run: an interrupted one first, then a new proposal.

        Returns None when the strategy only proposes known architectures (a small space
        exhausted, or everything left is in flight).
        """
        if self.rerun:
            return self.rerun.pop(0)
        busy = {*self.in_flight, *self.held}
        proposal = self.asks.propose(self.p.strategy, self.by_id, busy)
        if proposal is None:
            self.exhausted = not self.in_flight
            return None
        aid, arch = proposal
        trial = Trial(number=len(self.trials), arch_id=aid, arch=arch)
        self.trials.append(trial)
        return trial

    def start(self, trial: Trial) -> None:
        """Record the start of ``trial``."""
        trial.status, trial.start_t = RUNNING, time.time()
        self.in_flight[trial.arch_id] = trial
        self.log.append(trial_start_event(trial))

    def lose(self, trial: Trial, node: str | None, reason: str, counted: bool = True) -> bool:
        """Record that ``trial``'s attempt was lost to the infrastructure (its worker process,
        actor or node died) and queue it to run again, first; past ``infra_retries`` lost
        attempts in this run it is held instead (never FAILED, never counted as done).

        Args:
            trial: The in-flight trial.
            node: Where the attempt ran (None when unknown).
            reason: Why it was lost, one line.
            counted: Whether the attempt counts against the retry cap (False for a trial
                that was only a bystander of another trial's worker death).

        Returns:
            Whether the trial runs again in this run.
        """
        if counted:
            self.lost_now[trial.number] = self.lost_now.get(trial.number, 0) + 1
        retry = self.lost_now.get(trial.number, 0) <= self.retries
        event = trial_lost_event(trial, node, reason, retry)
        self.log.append(event)
        trial.lost.append({k: event[k] for k in ("attempt", "node", "reason", "retry", "t")})
        self.in_flight.pop(trial.arch_id, None)
        if retry:
            self.rerun.insert(0, trial)
        else:
            self.held[trial.arch_id] = trial
        return retry

    def check_held(self) -> None:
        """Raise when trials were held (every attempt lost): the run is not finished.

        Raises:
            RunError: naming them and the last reason; run the same command again.
        """
        if not self.held:
            return
        names = "; ".join(
            f"trial {t.number} (last on {t.lost[-1]['node'] or 'an unknown node'}: "
            f"{t.lost[-1]['reason']})"
            for t in list(self.held.values())[:3]
        )
        raise RunError(
            f"{len(self.held)} trial(s) lost {self.retries + 1} attempts to infrastructure "
            f"failures (infra_retries={self.retries}) and are not finished: {names}; "
            "run the same command again to re-run them, or raise --infra-retries"
        )

    def finish(self, trial: Trial, outcome: Outcome, node: str | None = None) -> None:
        """Record the end of ``trial`` and tell the strategy (warn about an unstable latency).

        Args:
            trial: The in-flight trial.
            outcome: Its outcome.
            node: Where the attempt ran (default: this machine).
        """
        if outcome.metrics.get("latency_unstable"):
            m = outcome.metrics
            warnings.warn(
                f"trial {trial.number}: latency stayed unstable "
                f"({m.get('latency_unstable_reason') or 'wide spread'}; p10 "
                f"{m.get('latency_p10_ms', 0):.3g} ms, p90 {m.get('latency_p90_ms', 0):.3g} ms, "
                f"{m.get('latency_attempts')} measurements); kept off the Pareto front unless "
                "allow_unstable_latency is set; 'cellblock show' lists these trials",
                CellblockWarning,
                stacklevel=2,
            )
        self.in_flight.pop(trial.arch_id, None)
        trial.status, trial.metrics = outcome.status, outcome.metrics
        trial.error, trial.violation = outcome.error, outcome.violation
        trial.end_t = time.time()
        trial.node = node or THIS_NODE
        self.log.append(trial_end_event(trial))
        self.by_id[trial.arch_id] = trial
        self.p.strategy.tell(trial)
