"""Which architectures ``cellblock export`` exports: trials of a run (one, the Pareto front,
its knee or the most accurate, within filters) or an arch file, as export items."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cellblock.core.errors import ConfigError, ExportError
from cellblock.export.preprocess import check_record, preprocessing_of
from cellblock.export.verify import ExportItem


def parse_filters(max_latency_ms: str | None, max_macs: str | None, max_params: str | None) -> list:
    """Filters as :class:`cellblock.core.objectives.Constraint` (``5M``-style suffixes allowed)."""
    from cellblock.core.objectives import Constraint

    pairs = (("latency_ms", max_latency_ms), ("macs", max_macs), ("params", max_params))
    return [Constraint.parse(f"{name}<={value}") for name, value in pairs if value is not None]


def select_trials(
    data: Any,
    *,
    trial: int | None = None,
    pareto: bool = False,
    knee: bool = False,
    filters: Sequence[Any] = (),
) -> list[Any]:
    """Trials of a run to export.

    ``trial``: that trial. ``pareto``: the Pareto front of the trials within ``filters``.
    ``knee``: the knee point of that front. Otherwise the most accurate completed,
    feasible trial within ``filters``.

    Raises:
        ExportError: if nothing is left (unknown trial, no completed trial, filters too tight).
    """
    from cellblock.pareto import knee_point
    from cellblock.pareto.results import pareto_trials, trial_matrix

    if trial is not None:
        match = [t for t in data.trials if t.number == trial]
        if not match:
            raise ExportError(f"run has no trial {trial}; trials are 0..{len(data.trials) - 1}")
        if match[0].status != "COMPLETE":
            raise ExportError(
                f"trial {trial} is {match[0].status}, not COMPLETE; pick a completed trial")
        return match
    pool = [t for t in data.trials if t.feasible_complete and t.value("accuracy") is not None]
    for f in filters:
        pool = [t for t in pool
                if (f.violation(t.metrics) is not None and f.violation(t.metrics) <= 0)]
    if not pool:
        what = ", ".join(str(f) for f in filters) or "none"
        raise ExportError(
            f"no completed, feasible trial is left after the filters ({what}); relax them "
            "or check the run with 'cellblock show'"
        )
    if not (pareto or knee):
        return [max(pool, key=lambda t: (t.value("accuracy"), -t.number))]
    front = pareto_trials(pool, data.objectives, bool(data.config.allow_unstable_latency))
    if not front:  # every candidate's latency was unstable (kept off the front)
        raise ExportError(
            "the run has no Pareto front: every completed trial's latency_ms was unstable (a busy "
            "machine) and is kept off the front; export one with --trial N, or continue the run "
            "with --allow-unstable-latency"
        )
    if knee:
        return [front[knee_point(trial_matrix(front, data.objectives))]]
    return front


def items_from_run(run_dir: str | Path, trials: Sequence[Any]) -> list[ExportItem]:
    """Export items of ``trials`` of a run (trained weights from ``cellblock train`` if present)."""
    from cellblock.evaluators.pipeline import trial_seed
    from cellblock.export.final_train import run_inputs, weights_path
    from cellblock.pareto.results import load_run
    from cellblock.records.meta import remapped_labels
    from cellblock.run.components import build_space, run_data

    data = load_run(run_dir)
    cfg = run_inputs(data)
    dataset = run_data(cfg)
    space = build_space(cfg, dataset)
    prep = preprocessing_of(dataset, space)
    labels = remapped_labels(data.run_dir) if data.config.remap_labels else ()
    items = []
    for t in trials:
        w = weights_path(data.run_dir, t.number)
        items.append(ExportItem(
            f"trial_{t.number}", dict(t.arch), space,
            trial_seed(data.config.seed, t.arch_id),
            t, w if w.is_file() else None, labels, preprocessing=prep,
        ))
    return items


def item_from_arch_file(path: str | Path, space: str | None,
                        space_args: Mapping[str, Any]) -> ExportItem:
    """An export item from an arch JSON (a plain arch dict, or an ``arch.json`` of an export).

    Raises:
        ConfigError: if the file is unreadable or names no space.
    """
    from cellblock.search_spaces.api import SearchSpace, arch_id

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read arch file {str(path)!r} ({exc}); give a JSON object") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"arch file {str(path)!r} must hold a JSON object")
    arch = doc.get("arch", doc) if isinstance(doc.get("arch"), dict) else doc
    kwargs = dict(doc.get("space_kwargs") or {}) if "arch" in doc else {}
    kwargs.update(space_args)
    ref = space or doc.get("space")
    if not ref:
        raise ConfigError(
            "the arch file names no space; pass --space NAME (and --space-arg KEY=VALUE)")
    sp = SearchSpace(ref, **kwargs)
    sp.validate(arch)
    prep = doc.get("preprocessing") if "arch" in doc else None
    return ExportItem(f"arch_{arch_id(arch)}", dict(arch), sp, 0,
                      preprocessing=check_record(prep) if prep else None)
