"""The run loop: owns evaluation, records and files; strategies only ask and tell.

Everything is validated before the run directory is created or touched. An existing
run directory with the same config is continued: completed trials are kept, in-flight
ones are re-run, and the strategy is rebuilt from the records.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellblock.core import config as config_mod
from cellblock.core.config import RunConfig
from cellblock.core.errors import CellblockWarning, ConfigError, RunError
from cellblock.core.fileio import atomic_write_text
from cellblock.core.objectives import Constraint, Objective
from cellblock.evaluators.pipeline import Pipeline
from cellblock.records import (
    FAILED,
    INFEASIBLE,
    RecordLog,
    Trial,
)
from cellblock.records.rundir import RunDir
from cellblock.run.book import TrialBook
from cellblock.run.components import build_components
from cellblock.search_spaces.api import SearchSpace
from cellblock.strategies.base import Strategy, make_strategy

DERIVED_EVERY_S = 10.0
#: The node of trials run on this machine (``trial_end``'s ``node``).


@dataclass
class Prepared:
    """A validated run, ready to execute (nothing written yet)."""

    config: RunConfig
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


def prepare(config: RunConfig) -> Prepared:
    """Validate a resolved config and build every component; writes nothing.

    Raises:
        CellblockError: for any bad input (unknown names, bad options, missing data,
            a run directory holding a different run).
    """
    from cellblock.core.devices import apply_slots
    from cellblock.run.backends.base import BACKENDS

    cfg, slots = apply_slots(config)
    BACKENDS.get(cfg.backend).check_config(cfg)
    comps = build_components(cfg)
    from cellblock.records.meta import RunMeta, log_notices, read_run_meta
    from cellblock.run.fingerprint import check_inputs, input_fingerprint

    run_dir = Path(cfg.out) if cfg.out else config_mod.default_run_dir(cfg)
    _check_out_path(run_dir)
    meta = read_run_meta(run_dir) if run_dir.is_dir() else RunMeta()
    _check_run_dir(run_dir, cfg, meta)
    inputs = input_fingerprint(cfg)
    data = comps.pipeline.ctx.data
    if cfg.remap_labels and data is not None and data.class_names:
        inputs["labels"] = {"name": "remapped", "original_labels": list(data.class_names)}
    changes = check_inputs(run_dir, meta.events, inputs, bool(cfg.allow_changed_inputs))
    log_notices(meta)
    options = {**_run_options(cfg, run_dir), **cfg.strategy_args}

    def new_strategy() -> Strategy:
        return make_strategy(cfg.strategy, comps.space, comps.objectives, cfg.seed, options)

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


def _run_options(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Strategy options owned by the run (a strategy class declares them with a
    ``run_options(config, run_dir)`` hook, e.g. the Optuna storage inside the run directory)."""
    from cellblock.strategies import STRATEGIES

    hook = getattr(STRATEGIES.get(cfg.strategy), "run_options", None)
    if hook is None:
        if cfg.storage is not None:
            raise ConfigError(
                f"storage is used by optuna:* strategies only, not {cfg.strategy!r}; "
                "remove --storage or choose an optuna:* strategy"
            )
        return {}
    return dict(hook(cfg, run_dir))


def _check_run_dir(run_dir: Path, cfg: RunConfig, meta: Any) -> None:
    """Refuse a run directory holding another run (its config is the log's last run_start;
    config.yaml is never read)."""
    saved = meta.config
    if saved is None:
        return
    now = _comparable(cfg)
    diff = config_mod.differences(saved, now)
    if diff:
        key = diff[0]
        raise RunError(
            f"run directory {str(run_dir)!r} holds a run with a different config "
            f"({key}: {saved.get(key)!r} there, {now.get(key)!r} now); "
            "use --out for a new run, or repeat the original command to continue it"
        )


def _comparable(cfg: RunConfig) -> dict[str, Any]:
    """The config as it is saved in config.yaml (YAML-safe types)."""
    return yaml.safe_load(config_mod.dump(cfg))


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
        """Run until ``config.trials`` trials have finished; return all trials.

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
                backend = BACKENDS.get(self.p.config.backend)(self.p)
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
