"""The run loop: owns evaluation, records and files; strategies only ask and tell.

Everything is validated before the run directory is created or touched. An existing
run directory with the same config is continued: completed trials are kept, in-flight
ones are re-run, and the strategy is rebuilt from the records.
"""

from __future__ import annotations

import socket
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellblock.core.errors import CellblockWarning, ConfigError, RunError
from cellblock.core.fileio import atomic_write_text
from cellblock.core.objectives import Constraint, Objective
from cellblock.evaluators.pipeline import Outcome, Pipeline
from cellblock.records import (
    FAILED,
    INFEASIBLE,
    RUNNING,
    RecordLog,
    Trial,
    read_events,
    replay_trials,
    trial_end_event,
    trial_lost_event,
    trial_start_event,
)
from cellblock.records.rundir import RunDir
from cellblock.run import config as config_mod
from cellblock.run.asking import AskLoop
from cellblock.run.components import build_components
from cellblock.search_spaces.api import SearchSpace
from cellblock.strategies.base import Strategy, make_strategy

DERIVED_EVERY_S = 10.0
#: The node of trials run on this machine (``trial_end``'s ``node``).
THIS_NODE = socket.gethostname()


@dataclass
class Prepared:
    """A validated run, ready to execute (nothing written yet)."""

    config: dict[str, Any]
    run_dir: Path
    space: SearchSpace
    objectives: list[Objective]
    constraints: list[Constraint]
    strategy: Strategy
    pipeline: Pipeline
    #: Content hashes of the inputs (see :mod:`cellblock.run.fingerprint`).
    inputs: dict[str, Any] = field(default_factory=dict)
    #: Inputs changed since the last run_start, continued with ``allow_changed_inputs``.
    input_changes: list[str] = field(default_factory=list)
    #: Builds a fresh strategy (a resume that cannot replay the asks rebuilds from it).
    new_strategy: Callable[[], Strategy] | None = None
    #: Where trials run and why (:class:`cellblock.core.devices.SlotPlan`).
    slots: Any = None


def prepare(config: Mapping[str, Any]) -> Prepared:
    """Validate a resolved config and build every component; writes nothing.

    Raises:
        CellblockError: for any bad input (unknown names, bad options, missing data,
            a run directory holding a different run).
    """
    from cellblock.core.devices import apply_slots
    from cellblock.run.backends.base import BACKENDS

    cfg, slots = apply_slots(config)
    BACKENDS.get(cfg["backend"]).check_config(cfg)
    comps = build_components(cfg)
    from cellblock.records.meta import RunMeta, log_notices, read_run_meta
    from cellblock.run.fingerprint import check_inputs, input_fingerprint

    run_dir = Path(cfg["out"]) if cfg["out"] else config_mod.default_run_dir(cfg)
    _check_out_path(run_dir)
    meta = read_run_meta(run_dir) if run_dir.is_dir() else RunMeta()
    _check_run_dir(run_dir, cfg, meta)
    inputs = input_fingerprint(cfg)
    data = comps.pipeline.ctx.data
    if cfg.get("remap_labels") and data is not None and data.class_names:
        inputs["labels"] = {"name": "remapped", "original_labels": list(data.class_names)}
    changes = check_inputs(run_dir, meta.events, inputs, bool(cfg.get("allow_changed_inputs")))
    log_notices(meta)
    options = {**_run_options(cfg, run_dir), **cfg["strategy_args"]}

    def new_strategy() -> Strategy:
        return make_strategy(cfg["strategy"], comps.space, comps.objectives, cfg["seed"], options)

    return Prepared(cfg, run_dir, comps.space, comps.objectives, comps.constraints, new_strategy(),
                    comps.pipeline, inputs, changes, new_strategy, slots)


def _check_out_path(run_dir: Path) -> None:
    """Refuse a run directory that is a file or lies under one (nothing is created)."""
    for p in (run_dir, *run_dir.parents):
        if p.exists():
            if not p.is_dir():
                where = ("exists and is not a directory" if p == run_dir
                         else f"is under the file {str(p)!r}")
                raise RunError(f"run directory {str(run_dir)!r} {where}; choose another --out")
            return


def _run_options(cfg: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """Strategy options owned by the run (a strategy class declares them with a
    ``run_options(config, run_dir)`` hook, e.g. the Optuna storage inside the run directory)."""
    from cellblock.strategies import STRATEGIES

    hook = getattr(STRATEGIES.get(cfg["strategy"]), "run_options", None)
    if hook is None:
        if cfg.get("storage") is not None:
            raise ConfigError(
                f"storage is used by optuna:* strategies only, not {cfg['strategy']!r}; "
                "remove --storage or choose an optuna:* strategy"
            )
        return {}
    return dict(hook(cfg, run_dir))


def _check_run_dir(run_dir: Path, cfg: Mapping[str, Any], meta: Any) -> None:
    """Refuse a run directory holding another run (its config is the log's last run_start;
    config.yaml is never read)."""
    saved = meta.config
    if saved is None:
        return
    diff = config_mod.differences(saved, _comparable(cfg))
    if diff:
        key = diff[0]
        raise RunError(
            f"run directory {str(run_dir)!r} holds a run with a different config "
            f"({key}: {saved.get(key)!r} there, {cfg.get(key)!r} now); "
            "use --out for a new run, or repeat the original command to continue it"
        )


def _comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config as it is saved in config.yaml (YAML-safe types)."""
    return yaml.safe_load(config_mod.dump(cfg))


class TrialBook:
    """The records side of the loop: numbering, dedupe, start/end events and tells.

    Shared by every backend, so all of them write the same records.
    """

    def __init__(self, prepared: Prepared, log: RecordLog) -> None:
        self.p = prepared
        self.log = log
        self.budget: int = prepared.config["trials"]
        self.trials: list[Trial] = []
        self.by_id: dict[str, Trial] = {}
        self.in_flight: dict[str, Trial] = {}
        self.rerun: list[Trial] = []
        #: Trials whose every attempt of this run was lost to the infrastructure (more than
        #: ``infra_retries`` times): not finished, not counted, re-run by the next run.
        self.held: dict[str, Trial] = {}
        #: Attempts of this run lost to the infrastructure, by trial number.
        self.lost_now: dict[int, int] = {}
        self.retries: int = prepared.config.get("infra_retries", 2)
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


class Runner:
    """Executes a prepared run: ask, evaluate, record, tell, until the budget is spent."""

    def __init__(self, prepared: Prepared, progress: bool = True) -> None:
        self.p = prepared
        self.progress = progress
        self.log = RecordLog(RunDir(prepared.run_dir).log)
        #: The records side of the loop (filled from the log when the run starts).
        self.book = TrialBook(prepared, self.log)
        # the first periodic rewrite comes DERIVED_EVERY_S after the start, not after the
        # first trial: a short run writes its derived files once, at the end
        self._last_derived = time.time()

    @property
    def trials(self) -> list[Trial]:
        """All trials of the run so far."""
        return self.book.trials

    def _write_start(self) -> None:
        import os

        from cellblock.core.threads import describe
        from cellblock.run.fingerprint import machine_load

        threads = describe(self.p.config)
        event = {
            "event": "run_start",
            "t": time.time(),
            "config": _comparable(self.p.config),
            "inputs": self.p.inputs,
            "machine": machine_load(),
            "threads": threads,
            "pid": os.getpid(),
            "cwd": os.getcwd(),
        }
        if self.p.input_changes:
            event["inputs_changed_allowed"] = self.p.input_changes
            warnings.warn(
                "continuing although inputs changed (allow_changed_inputs): "
                + "; ".join(self.p.input_changes),
                CellblockWarning,
                stacklevel=2,
            )
        self.log.append(event)  # the record first; config.yaml is its copy
        atomic_write_text(RunDir(self.p.run_dir).config, config_mod.dump(self.p.config))

    def run(self) -> list[Trial]:
        """Run until ``config['trials']`` trials have finished; return all trials.

        The run directory is locked for the whole run (a second writer is refused).
        """
        from cellblock.core.fileio import remove_stale_tmp
        from cellblock.core.runlock import run_dir_lock

        self.p.run_dir.mkdir(parents=True, exist_ok=True)
        with run_dir_lock(self.p.run_dir):
            remove_stale_tmp(self.p.run_dir)
            return self._run_locked()

    def _run_locked(self) -> list[Trial]:
        from tqdm.auto import tqdm

        from cellblock.run.backends.base import BACKENDS

        book = self.book
        self._write_start()
        book.resume()
        bar = tqdm(
            total=book.budget,
            initial=min(book.done, book.budget),
            unit="trial",
            disable=not self.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._update_bar(bar)
        backend = None
        done_before = book.done
        try:
            if book.done < book.budget:
                backend = BACKENDS.get(self.p.config["backend"])(self.p)
                backend.drive(book, lambda n: self._after_trials(bar, n))
                book.check_held()
                if book.exhausted:
                    bar.write(f"search space exhausted after {book.done} distinct architectures")
            self.log.append({"event": "run_end", "t": time.time()})
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the CLI says what was kept
            exc.trials_finished = (book.done - done_before, book.done)  # type: ignore[attr-defined]
            raise
        finally:
            if backend is not None:
                backend.close()
            bar.close()
            self.log.close()
            self._final_outputs()
        return book.trials

    def _final_outputs(self) -> None:
        """Derived files and report at the end (also after Ctrl-C / SIGTERM); a failure
        here (a full disk) is a warning: the records are already safe."""
        import signal

        # A second SIGTERM / Ctrl-C must not leave half-written files: finish these first.
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in old:
            _set_signal(sig, None)
        try:
            self.write_derived()
            from cellblock.pareto.report import write_report

            write_report(self.p.run_dir)
        except Exception as exc:  # noqa: BLE001  (the HTML report is a convenience)
            warnings.warn(
                f"derived files or report.html not written ({exc})", CellblockWarning, stacklevel=2
            )
        finally:
            for sig, handler in old.items():
                _set_signal(sig, signal.SIG_DFL if handler is None else handler)

    def _after_trials(self, bar: Any, n: int) -> None:
        bar.update(n)
        self._update_bar(bar)
        if time.time() - self._last_derived > DERIVED_EVERY_S:
            self.write_derived()

    def _update_bar(self, bar: Any) -> None:
        values = [t.value("accuracy") for t in self.book.trials if t.feasible_complete]
        accs = [float(a) for a in values if a is not None]
        failed = sum(t.status == FAILED for t in self.book.trials)
        infeasible = sum(t.status == INFEASIBLE for t in self.book.trials)
        bar.set_postfix(
            best_acc=f"{max(accs):.4f}" if accs else "-",
            failed=failed,
            infeasible=infeasible,
            refresh=False,
        )

    def write_derived(self) -> None:
        """Rewrite trials.csv, pareto.csv and pareto.png from the records."""
        from cellblock.pareto.results import write_outputs

        if self.p.run_dir.exists():
            write_outputs(self.p.run_dir, self.p.objectives)
        self._last_derived = time.time()


def _set_signal(sig: Any, handler: Any) -> None:
    """Set a signal's handler (None: ignore it) when in the main thread."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(sig, signal.SIG_IGN if handler is None else handler)
