"""Reading a run back: trials, Pareto front, derived files and text tables.

Everything here is derived from ``trials.jsonl`` (``config.yaml`` is only its copy).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cellblock.core.config import RunConfig
from cellblock.core.errors import ConfigError, RunError
from cellblock.core.load import remedy, unstable_latency
from cellblock.core.objectives import Objective, objective_matrix, parse_objectives
from cellblock.pareto import nondominated_mask
from cellblock.records import (
    COMPLETE,
    FAILED,
    INFEASIBLE,
    PRUNED,
    RUNNING,
    Trial,
    replay_trials,
    write_csv,
)
from cellblock.records.rundir import RunDir


@dataclass
class RunData:
    """A run as read from its directory."""

    run_dir: Path
    config: RunConfig
    trials: list[Trial]
    objectives: list[Objective]
    #: Where the search ran (its last ``run_start``; None in older logs).
    cwd: str | None = None
    #: Input fingerprints of the last ``run_start`` (:mod:`cellblock.run.fingerprint`).
    inputs: dict[str, Any] | None = None

    @property
    def pareto(self) -> list[Trial]:
        """Non-dominated completed, feasible trials (by the run's objectives)."""
        return pareto_trials(self.trials, self.objectives,
                             bool(self.config.allow_unstable_latency))


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory; its config is the log's last run_start (a config.yaml that is
    missing, damaged or disagrees is reported on stderr and rewritten from the log).

    Raises:
        RunError: if it is not a cellblock run directory, or its records are damaged.
    """
    from cellblock.records.meta import log_notices, read_run_meta, rewrite_stale_config, run_cwd

    run_dir = Path(run_dir)
    cfg_path, log_path = RunDir(run_dir).config, RunDir(run_dir).log
    if not cfg_path.is_file() and not log_path.is_file():
        raise RunError(
            f"{str(run_dir)!r} is not a cellblock run directory (expected config.yaml and "
            "trials.jsonl); runs live under results/runs/"
        )
    meta = read_run_meta(run_dir)
    if meta.config is None:
        raise RunError(
            f"{str(run_dir)!r} has no trial records yet (trials.jsonl is missing or empty)")
    log_notices(meta)
    trials = replay_trials(meta.events)
    rewrite_stale_config(meta, run_dir)
    try:
        config = RunConfig.from_record(meta.config)
    except ConfigError as exc:
        raise RunError(f"the config recorded in {str(run_dir)!r} cannot be read by this version "
                       f"of cellblock: {exc}") from None
    objectives = parse_objectives(config.objectives)
    from cellblock.records.meta import last_fingerprint

    return RunData(run_dir, config, trials, objectives, run_cwd(meta.events),
                   last_fingerprint(meta.events))


def trial_matrix(trials: Sequence[Trial], objectives: Sequence[Objective]) -> np.ndarray:
    """(n, m) minimisation values of ``trials`` (see :func:`objective_matrix`)."""
    return objective_matrix([t.metrics for t in trials], objectives)


def pareto_trials(trials: Sequence[Trial], objectives: Sequence[Objective],
                  allow_unstable_latency: bool = False) -> list[Trial]:
    """The non-dominated completed, feasible trials with finite objective values.

    With latency as an objective, trials whose latency is not trusted (measurement noise
    over the spread limit, or a busy machine: :func:`cellblock.core.load.unstable_latency`)
    are left out unless allowed.
    """
    ok = [t for t in trials if t.feasible_complete]
    if not allow_unstable_latency and any(o.name == "latency_ms" for o in objectives):
        unstable = unstable_latency(trials)
        ok = [t for t in ok if t.number not in unstable]
    if not ok:
        return []
    F = trial_matrix(ok, objectives)
    finite = np.isfinite(F).all(axis=1)
    ok = [t for t, f in zip(ok, finite) if f]
    if not ok:
        return []
    mask = nondominated_mask(F[finite])
    front = [t for t, m in zip(ok, mask) if m]
    return sorted(front, key=lambda t: -(t.value("accuracy") or 0.0))


def write_outputs(run_dir: str | Path, objectives: Sequence[Objective] | None = None) -> RunData:
    """Rewrite trials.csv, pareto.csv and pareto.png of a run from its records."""
    from cellblock.pareto.plots import plot_pareto
    from cellblock.records import trial_row

    data = load_run(run_dir)
    if objectives is not None:
        data.objectives = list(objectives)
    front = data.pareto
    rd = RunDir(data.run_dir)
    extra = extra_metrics(data)
    measured = any(t.value("latency_ms") is not None for t in data.trials)
    flags = unstable_latency(data.trials) if measured else None  # the columns with latency only
    write_csv(rd.trials_csv, data.trials, extra, flags)
    write_csv(rd.pareto_csv, front, extra, flags)
    rows = [trial_row(t) for t in data.trials]
    plot_pareto(rows, rd.pareto_png, {t.arch_id for t in front})
    return data


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "count":
        return f"{value / 1e6:.3f}M" if value >= 1e5 else f"{int(value):,}"
    if kind == "g":
        return f"{value:.4g}"
    return f"{value:.3f}"


def extra_metrics(data: RunData) -> tuple[str, ...]:
    """The run's objective and constraint metrics that the trials tables do not show by
    default (``synflow``, ``supernet_score``...), in config order."""
    from cellblock.core.objectives import Constraint
    from cellblock.records import TABLE_METRICS

    names = [o.name for o in data.objectives]
    names += [Constraint.parse(c).metric for c in data.config.constraints or []]
    return tuple(n for n in dict.fromkeys(names) if n not in TABLE_METRICS)


def format_table(trials: Sequence[Trial], limit: int | None = None,
                 extra: Sequence[str] = ()) -> str:
    """A fixed-width text table of trials (trial, arch_id, accuracy, macs, params,
    latency_ms, train_s, then the ``extra`` metrics)."""
    header = ("trial", "arch_id", "accuracy", "macs", "params", "latency_ms", "train_s", *extra)
    rows = [header]
    for t in list(trials)[:limit]:
        rows.append((
            str(t.number), t.arch_id, _fmt(t.value("accuracy"), "acc"),
            _fmt(t.value("macs"), "count"),
            _fmt(t.value("params"), "count"), _fmt(t.value("latency_ms"), "f"),
            _fmt(t.value("train_s"), "f"), *(_fmt(t.value(n), "g") for n in extra),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def busy_seconds(trials: Sequence[Trial]) -> float:
    """Seconds during which at least one trial ran (the union of their start-end intervals).

    Idle gaps, such as the time between two invocations of an extended run, do not count.
    """
    spans = sorted(
        (t.start_t, t.end_t) for t in trials if t.start_t is not None and t.end_t is not None)
    total = 0.0
    current: tuple[float, float] | None = None  # the union interval being extended
    for start, end in spans:
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = (start, end)
        else:
            current = (current[0], max(current[1], end))
    if current is not None:
        total += current[1] - current[0]
    return total


def next_steps(data: RunData) -> str:
    """Where the derived files are, and the commands a user runs next."""
    run = shlex.quote(str(data.run_dir))
    rd = RunDir(data.run_dir)
    written = [f"{name}: {path}" for name, path in (("report", rd.report), ("plot", rd.pareto_png))
               if path.is_file()]
    again = {rd.report: f"cellblock report {run}", rd.pareto_png: f"cellblock repair {run}"}
    missing = [f"{path.name} ('{cmd}' writes it again)" for path, cmd in again.items()
               if not path.is_file()]
    lines = ["   ".join(written)] if written else []
    if missing:
        lines.append(f"not written: {', '.join(missing)}")
    lines += ["next:",
             f"  cellblock show {run}                      # this summary again",
             f"  cellblock export {run} --knee --out export/  # the knee architecture, verified"]
    front = data.pareto
    if front:
        lines.append(f"  cellblock train {run} --trial {front[0].number} --epochs 30   "
                     "# train the most accurate front trial fully; export then uses its weights")
    return "\n".join(lines)


def _source(cfg: RunConfig) -> str:
    """``dataset: NAME``, or ``table: FILE`` for a benchmark-table run (which reads no dataset)."""
    if cfg.evaluator == "table" and cfg.table:
        return f"table: {Path(str(cfg.table)).name}"
    return f"dataset: {cfg.dataset}"


def _in_table_units(data: RunData, best: float) -> str:
    """`` (= 70.83 in the table's 'valid_acc' column)`` when a table run's metric is a percentage,
    the units ``cellblock bench`` reports in."""
    if data.config.evaluator != "table":
        return ""
    for t in data.trials:
        if not (t.feasible_complete and t.value("accuracy") == best):
            continue
        for key, value in t.metrics.items():
            if (key != "accuracy" and isinstance(value, (int, float)) and value != best
                    and math.isclose(value, best * 100, rel_tol=1e-9)):
                return (f" (= {value:.2f} in the table's {key!r} column, as 'cellblock bench' "
                        "reports it)")
    return ""


def summary(data: RunData) -> str:
    """A short text summary of a run and its Pareto table."""
    counts = {s: sum(t.status == s for t in data.trials)
              for s in (COMPLETE, FAILED, INFEASIBLE, PRUNED, RUNNING)}
    accs = [a for a in (t.value("accuracy") for t in data.trials if t.feasible_complete)
            if a is not None]
    span = busy_seconds(data.trials)
    front = data.pareto
    cfg = data.config
    lines = [
        f"run: {data.run_dir}",
        f"space: {cfg.space}  strategy: {cfg.strategy}  {_source(cfg)}  "
        f"objectives: {', '.join(o.name for o in data.objectives)}",
        f"trials: {len(data.trials)} ({counts[COMPLETE]} complete, {counts[FAILED]} failed, "
        f"{counts[INFEASIBLE]} infeasible, {counts[PRUNED]} stopped early, {counts[RUNNING]} in "
        f"flight)  time with trials running: {span:.1f} s",
        f"best validation accuracy: {max(accs):.4f}{_in_table_units(data, max(accs))}" if accs
        else "best validation accuracy: -",
        f"Pareto front ({len(front)} trials):",
        format_table(front, extra=extra_metrics(data)) if front else
        "(empty: no completed, feasible trial)",
    ]
    failed = [t for t in data.trials if t.status == FAILED]
    if failed:
        lines.append(f"first failure: trial {failed[0].number}: {failed[0].error}")
    lines += _latency_lines(data)
    return "\n".join(lines)


def _latency_lines(data: RunData) -> list[str]:
    """The trials whose latency is not trusted, each with why, and what to do."""
    flags = unstable_latency(data.trials)
    if not flags:
        return []
    kept_off = (not data.config.allow_unstable_latency
                and any(o.name == "latency_ms" for o in data.objectives))
    done = [t.number for t in data.trials if t.feasible_complete and t.number in flags]
    head = (f"latency_unstable: {len(flags)} trial(s); {len(done)} completed one(s) kept off the "
            "Pareto front for it" if kept_off else
            f"latency_unstable: {len(flags)} trial(s) (allowed onto the front, or latency is no "
            "objective)")
    lines = [head]
    lines += [f"  trial {n}: {why}" for n, why in sorted(flags.items())]
    if kept_off and done:
        lines.append(f"  what to do: {remedy(shlex.quote(str(data.run_dir)))}")
    return lines
