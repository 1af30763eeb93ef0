"""The run loop: owns evaluation, records and files; strategies only ask and tell.

Everything is validated before the run directory is created or touched. An existing
run directory with the same config is continued: completed trials are kept, in-flight
ones are re-run, and the strategy is rebuilt from the records.
"""

from __future__ import annotations

import math
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
from cellblock.evaluators.pipeline import Outcome, Pipeline, trial_seed
from cellblock.objectives import Constraint, Objective, parse_objectives
from cellblock.records import (
    COMPLETE,
    RUNNING,
    RecordLog,
    Trial,
    read_events,
    replay_trials,
    trial_end_event,
    trial_start_event,
)
from cellblock.search_spaces.api import SearchSpace, arch_id
from cellblock.strategies.base import Strategy, make_strategy

# Consecutive already-evaluated proposals after which a (small) space counts as exhausted.
EXHAUSTED_AFTER = 200
DERIVED_EVERY_S = 10.0


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


def prepare(config: Mapping[str, Any]) -> Prepared:
    """Validate a resolved config and build every component; writes nothing.

    Raises:
        CellblockError: for any bad input (unknown names, bad options, missing data,
            a run directory holding a different run).
    """
    import cellblock.evaluators  # noqa: F401  (registers the built-in evaluators)
    from cellblock.data import load_dataset

    cfg = dict(config)
    objectives = parse_objectives(cfg["objectives"])
    constraints = [Constraint.parse(c) for c in cfg["constraints"]]
    evaluator_cls = EVALUATORS.get(cfg["evaluator"])
    device = resolve_device(cfg["device"])
    if device.type == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    data = load_dataset(cfg["dataset"], cfg["data_dir"], cfg["download"], seed=0) if evaluator_cls.needs_data else None
    space_kwargs: dict[str, Any] = dict(cfg["space_args"])
    if data is not None:
        space_kwargs.setdefault("input_shape", tuple(data.input_shape))
        space_kwargs.setdefault("num_classes", data.num_classes)
    space = SearchSpace(cfg["space"], **space_kwargs)
    space.sample(__import__("numpy").random.default_rng(cfg["seed"]))  # fails early on a broken space
    strategy = make_strategy(cfg["strategy"], space, objectives, cfg["seed"], cfg["strategy_args"])
    ctx = EvalContext(cfg, space, data, device)
    pipeline = Pipeline(ctx, evaluator_cls(ctx), objectives, constraints)
    run_dir = Path(cfg["out"]) if cfg["out"] else config_mod.default_run_dir(cfg)
    _check_run_dir(run_dir, cfg)
    return Prepared(cfg, run_dir, space, objectives, constraints, strategy, pipeline)


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


class Runner:
    """Executes a prepared run: ask, evaluate, record, tell, until the budget is spent."""

    def __init__(self, prepared: Prepared, progress: bool = True) -> None:
        self.p = prepared
        self.progress = progress
        self.log = RecordLog(prepared.run_dir / "trials.jsonl")
        self.trials: list[Trial] = []
        self._last_derived = 0.0

    # ---- state --------------------------------------------------------------------------
    def _resume(self) -> list[Trial]:
        """Load recorded trials; tell the finished ones to the strategy; return in-flight ones."""
        self.trials = replay_trials(read_events(self.log.path))
        finished = sorted((t for t in self.trials if t.done), key=lambda t: (t.end_t or 0, t.number))
        self.p.strategy.replay(finished)
        return [t for t in self.trials if t.status == RUNNING]

    def _write_start(self) -> None:
        self.p.run_dir.mkdir(parents=True, exist_ok=True)
        (self.p.run_dir / "config.yaml").write_text(config_mod.dump(self.p.config), encoding="utf-8")
        self.log.append({"event": "run_start", "t": time.time(), "config": _comparable(self.p.config)})

    def _evaluate(self, trial: Trial) -> None:
        trial.status, trial.start_t = RUNNING, time.time()
        self.log.append(trial_start_event(trial))
        outcome: Outcome = self.p.pipeline(trial.arch, trial_seed(self.p.config["seed"], trial.arch_id))
        trial.status, trial.metrics = outcome.status, outcome.metrics
        trial.error, trial.violation = outcome.error, outcome.violation
        trial.end_t = time.time()
        self.log.append(trial_end_event(trial))
        self.p.strategy.tell(trial)

    # ---- loop ---------------------------------------------------------------------------
    def run(self) -> list[Trial]:
        """Run until ``config['trials']`` trials have finished; return all trials."""
        from tqdm.auto import tqdm

        self._write_start()
        in_flight = self._resume()
        budget = self.p.config["trials"]
        by_id = {t.arch_id: t for t in self.trials if t.done}
        done = sum(t.done for t in self.trials)
        bar = tqdm(total=budget, initial=min(done, budget), unit="trial", disable=not self.progress,
                   file=sys.stderr, dynamic_ncols=True)
        self._update_bar(bar)
        try:
            for trial in in_flight:  # re-run what a crash interrupted, same number and arch
                if done >= budget:
                    break
                self._evaluate(trial)
                by_id[trial.arch_id] = trial
                done += 1
                self._after_trial(bar)
            repeats = 0
            while done < budget:
                arch = self.p.strategy.ask()
                aid = arch_id(arch)
                if aid in by_id:  # never evaluate an architecture twice
                    self.p.strategy.tell(by_id[aid])
                    repeats += 1
                    if repeats >= EXHAUSTED_AFTER:
                        bar.write(f"search space exhausted after {done} distinct architectures")
                        break
                    continue
                repeats = 0
                trial = Trial(number=len(self.trials), arch_id=aid, arch=arch)
                self.trials.append(trial)
                self._evaluate(trial)
                by_id[aid] = trial
                done += 1
                self._after_trial(bar)
            self.log.append({"event": "run_end", "t": time.time()})
        finally:
            bar.close()
            self.log.close()
            self.write_derived()
        return self.trials

    def _after_trial(self, bar: Any) -> None:
        bar.update(1)
        self._update_bar(bar)
        if time.time() - self._last_derived > DERIVED_EVERY_S:
            self.write_derived()

    def _update_bar(self, bar: Any) -> None:
        accs = [t.value("accuracy") for t in self.trials if t.status == COMPLETE]
        accs = [a for a in accs if a is not None]
        failed = sum(t.status not in (COMPLETE, RUNNING) for t in self.trials)
        bar.set_postfix(best_acc=f"{max(accs):.4f}" if accs else "-", not_complete=failed, refresh=False)

    def write_derived(self) -> None:
        """Rewrite trials.csv, pareto.csv and pareto.png from the records."""
        from cellblock.results import write_outputs

        if self.p.run_dir.exists():
            write_outputs(self.p.run_dir, self.p.objectives)
        self._last_derived = time.time()


def finite(x: Any) -> bool:
    """True for a finite number."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
