"""The run loop: owns evaluation, records and files; strategies only ask and tell.

Everything is validated before the run directory is created or touched. An existing
run directory with the same config is continued: completed trials are kept, in-flight
ones are re-run, and the strategy is rebuilt from the records.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cellblock import config as config_mod
from cellblock.errors import ConfigError, RunError
from cellblock.evaluators.base import EVALUATORS, EvalContext, resolve_device
from cellblock.evaluators.pipeline import Outcome, Pipeline
from cellblock.fileio import atomic_write_text
from cellblock.objectives import Constraint, Objective, parse_objectives
from cellblock.records import (
    FAILED,
    INFEASIBLE,
    RUNNING,
    RecordLog,
    Trial,
    read_events,
    replay_trials,
    trial_end_event,
    trial_start_event,
)
from cellblock.search_spaces.api import SearchSpace, arch_id, resolve_space_fn
from cellblock.strategies.base import Strategy, make_strategy

# Consecutive already-evaluated proposals after which a (small) space counts as exhausted.
EXHAUSTED_AFTER = 200
DERIVED_EVERY_S = 10.0


@dataclass
class Components:
    """What evaluating a candidate needs; built the same way in the search process and workers."""

    space: SearchSpace
    objectives: list[Objective]
    constraints: list[Constraint]
    pipeline: Pipeline


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
    slots: Any = None  # cellblock.devices.SlotPlan: where trials run and why


def build_components(config: Mapping[str, Any]) -> Components:
    """Space, objectives, constraints and evaluation pipeline of a resolved config.

    Raises:
        CellblockError: for unknown names, bad options or missing data.
    """
    import numpy as np

    import cellblock.evaluators  # noqa: F401  (registers the built-in evaluators)
    from cellblock.data import load_dataset

    cfg = dict(config)
    resolve_space_fn(cfg["space"])  # import a custom space's module first: it may register evaluators
    objectives = parse_objectives(cfg["objectives"])
    constraints = [Constraint.parse(c) for c in cfg["constraints"]]
    evaluator_cls = EVALUATORS.get(cfg["evaluator"])
    device = resolve_device(cfg["device"])
    if device.type == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    data = None
    if evaluator_cls.needs_data:
        data = load_dataset(cfg["dataset"], cfg["data_dir"], cfg["download"], seed=0,
                            val_fraction=cfg.get("val_fraction"))
    space_kwargs: dict[str, Any] = dict(cfg["space_args"])
    if data is not None:
        space_kwargs.setdefault("input_shape", tuple(data.input_shape))
        space_kwargs.setdefault("num_classes", data.num_classes)
    space = SearchSpace(cfg["space"], **space_kwargs)
    if data is None:  # no dataset: the input shape and classes are the space's own defaults
        defaults = space.arguments()
        for name in SearchSpace.CONTEXT_ARGS:
            if name in defaults and name not in space.kwargs:
                space.kwargs[name] = defaults[name]
    space.sample(np.random.default_rng(cfg["seed"]))  # fails early on a broken space
    ctx = EvalContext(cfg, space, data, device)
    pipeline = Pipeline(ctx, evaluator_cls(ctx), objectives, constraints)
    return Components(space, objectives, constraints, pipeline)


def prepare(config: Mapping[str, Any]) -> Prepared:
    """Validate a resolved config and build every component; writes nothing.

    Raises:
        CellblockError: for any bad input (unknown names, bad options, missing data,
            a run directory holding a different run).
    """
    from cellblock.backends import BACKENDS
    from cellblock.devices import apply_slots

    cfg, slots = apply_slots(config)
    BACKENDS.get(cfg["backend"]).check_config(cfg)
    comps = build_components(cfg)
    run_dir = Path(cfg["out"]) if cfg["out"] else config_mod.default_run_dir(cfg)
    options = {**_run_options(cfg, run_dir), **cfg["strategy_args"]}
    strategy = make_strategy(cfg["strategy"], comps.space, comps.objectives, cfg["seed"], options)
    _check_run_dir(run_dir, cfg)
    return Prepared(cfg, run_dir, comps.space, comps.objectives, comps.constraints, strategy, comps.pipeline,
                    slots)


def _run_options(cfg: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """Strategy options owned by the run (a strategy class declares them with a
    ``run_options(config, run_dir)`` hook, e.g. the Optuna storage inside the run directory)."""
    from cellblock.strategies import STRATEGIES

    hook = getattr(STRATEGIES.get(cfg["strategy"]), "run_options", None)
    if hook is None:
        if cfg.get("storage") is not None:
            raise ConfigError(f"storage is used by optuna:* strategies only, not {cfg['strategy']!r}; "
                              "remove --storage or choose an optuna:* strategy")
        return {}
    return dict(hook(cfg, run_dir))


def _check_run_dir(run_dir: Path, cfg: Mapping[str, Any]) -> None:
    saved_path = run_dir / "config.yaml"
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"run directory {str(run_dir)!r} exists and is not a directory; choose another --out")
    if not saved_path.exists():
        if (run_dir / "trials.jsonl").exists():
            raise RunError(f"{str(run_dir)!r} has trials.jsonl but no config.yaml; choose another --out")
        return
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
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
        self.repeats = 0
        self.exhausted = False

    @property
    def done(self) -> int:
        """Finished trials (complete, failed or infeasible)."""
        return len(self.by_id)

    def resume(self) -> None:
        """Load recorded trials; tell the finished ones to the strategy; queue in-flight ones."""
        self.trials = replay_trials(read_events(self.log.path))
        finished = sorted((t for t in self.trials if t.done), key=lambda t: (t.end_t or 0, t.number))
        self.by_id = {t.arch_id: t for t in finished}
        self.p.strategy.replay(finished)
        self.rerun = [t for t in self.trials if t.status == RUNNING]

    def wants_more(self) -> bool:
        """Whether another trial should be started now."""
        return not self.exhausted and self.done + len(self.in_flight) < self.budget

    def next_trial(self) -> Trial | None:
        """The next trial to run: an interrupted one first, then a new proposal.

        Returns None when the strategy only proposes known architectures (a small space
        exhausted, or everything left is in flight).
        """
        if self.rerun:
            return self.rerun.pop(0)
        while True:
            arch = self.p.strategy.ask()
            aid = arch_id(arch)
            if aid not in self.by_id and aid not in self.in_flight:
                self.repeats = 0
                trial = Trial(number=len(self.trials), arch_id=aid, arch=arch)
                self.trials.append(trial)
                return trial
            if aid in self.by_id:  # never evaluate twice: tell the known result again
                self.p.strategy.tell(self.by_id[aid])
            self.repeats += 1
            if self.repeats >= EXHAUSTED_AFTER:
                self.exhausted = not self.in_flight
                return None

    def start(self, trial: Trial) -> None:
        """Record the start of ``trial``."""
        trial.status, trial.start_t = RUNNING, time.time()
        self.in_flight[trial.arch_id] = trial
        self.log.append(trial_start_event(trial))

    def finish(self, trial: Trial, outcome: Outcome) -> None:
        """Record the end of ``trial`` and tell the strategy."""
        self.in_flight.pop(trial.arch_id, None)
        trial.status, trial.metrics = outcome.status, outcome.metrics
        trial.error, trial.violation = outcome.error, outcome.violation
        trial.end_t = time.time()
        self.log.append(trial_end_event(trial))
        self.by_id[trial.arch_id] = trial
        self.p.strategy.tell(trial)


class Runner:
    """Executes a prepared run: ask, evaluate, record, tell, until the budget is spent."""

    def __init__(self, prepared: Prepared, progress: bool = True) -> None:
        self.p = prepared
        self.progress = progress
        self.log = RecordLog(prepared.run_dir / "trials.jsonl")
        self._last_derived = 0.0

    @property
    def trials(self) -> list[Trial]:
        """All trials of the run so far."""
        return self.book.trials

    def _write_start(self) -> None:
        self.p.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.p.run_dir / "config.yaml", config_mod.dump(self.p.config))
        self.log.append({"event": "run_start", "t": time.time(), "config": _comparable(self.p.config)})

    def run(self) -> list[Trial]:
        """Run until ``config['trials']`` trials have finished; return all trials."""
        from tqdm.auto import tqdm

        from cellblock.backends import BACKENDS

        self.book = book = TrialBook(self.p, self.log)
        self._write_start()
        book.resume()
        bar = tqdm(total=book.budget, initial=min(book.done, book.budget), unit="trial",
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        self._update_bar(bar)
        backend = None
        try:
            if book.done < book.budget:
                backend = BACKENDS.get(self.p.config["backend"])(self.p)
                backend.drive(book, lambda n: self._after_trials(bar, n))
                if book.exhausted:
                    bar.write(f"search space exhausted after {book.done} distinct architectures")
            self.log.append({"event": "run_end", "t": time.time()})
        finally:
            if backend is not None:
                backend.close()
            bar.close()
            self.log.close()
            self.write_derived()
            try:  # the HTML report is a convenience: its failure never loses results
                from cellblock.report import write_report

                write_report(self.p.run_dir)
            except Exception as exc:  # noqa: BLE001
                print(f"cellblock: warning: report.html not written ({exc})", file=sys.stderr)
        return book.trials

    def _after_trials(self, bar: Any, n: int) -> None:
        bar.update(n)
        self._update_bar(bar)
        if time.time() - self._last_derived > DERIVED_EVERY_S:
            self.write_derived()

    def _update_bar(self, bar: Any) -> None:
        accs = [t.value("accuracy") for t in self.book.trials if t.feasible_complete]
        accs = [a for a in accs if a is not None]
        failed = sum(t.status == FAILED for t in self.book.trials)
        infeasible = sum(t.status == INFEASIBLE for t in self.book.trials)
        bar.set_postfix(best_acc=f"{max(accs):.4f}" if accs else "-", failed=failed,
                        infeasible=infeasible, refresh=False)

    def write_derived(self) -> None:
        """Rewrite trials.csv, pareto.csv and pareto.png from the records."""
        from cellblock.results import write_outputs

        if self.p.run_dir.exists():
            write_outputs(self.p.run_dir, self.p.objectives)
        self._last_derived = time.time()
