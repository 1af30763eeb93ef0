"""``cellblock bench``: strategies compared on a tabular benchmark (NAS-Bench-201...).

Every strategy x seed is run once to the largest budget through the ask/tell interface,
twice: with the single objective ``accuracy`` (for ``best``) and with the multi-objective
set (default ``accuracy,macs``, for ``hv_ratio``). Proposals go through the run loop's
:class:`~cellblock.run.asking.AskLoop` and candidates are evaluated in-process by the
pipeline of ``cellblock search --evaluator table`` (:func:`table_components`): the
``table`` evaluator's look-up and its cached MACs/params. At each budget ``b``:

* ``best``: the highest table value (raw table units) among the first ``b`` evaluations
  of the single-objective run;
* ``hv_ratio``: hypervolume of the first ``b`` evaluations of the multi-objective run over
  the hypervolume of the true front (all architectures of the space found in the table).
  Objectives are normalised by the true front's ideal and nadir points (minimisation
  space), and the reference point is nadir + 10% of the range, i.e. 1.1 per objective.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellblock.core import config as config_mod
from cellblock.core.errors import ConfigError
from cellblock.core.objectives import Objective, objective_matrix, parse_objectives
from cellblock.evaluators.pipeline import Outcome, trial_seed
from cellblock.pareto import hypervolume, nondominated_mask
from cellblock.pareto.volume import REF_OFFSET
from cellblock.records import COMPLETE, Trial
from cellblock.run.asking import AskLoop
from cellblock.run.components import Components, build_components
from cellblock.search_spaces.api import SearchSpace, arch_id

BENCH_METRICS = ("accuracy", "macs", "params")  # what a table look-up + cost count provides
CSV_COLUMNS = ("strategy", "seed", "budget", "best", "hv_ratio")
#: ``evaluate(arch, seed) -> Outcome``: a :class:`~cellblock.evaluators.pipeline.Pipeline`, or
#: anything answering as one (e.g. its answers looked up once).
Evaluate = Callable[[Mapping[str, Any], int], Outcome]


# ---- evaluation ---------------------------------------------------------------------------------
def check_objectives(objectives: Sequence[Objective]) -> None:
    """Fail on an objective a table look-up plus a cost count cannot provide."""
    for o in objectives:
        if o.name not in BENCH_METRICS:
            raise ConfigError(
                f"bench objective {o.name!r} is not available; choose among: "
                f"{', '.join(BENCH_METRICS)}")


def table_components(space: str, space_args: Mapping[str, Any] | None, table: str | Path,
                     metric: str | None, objectives: Sequence[Objective]) -> Components:
    """The components of ``cellblock search --evaluator table`` for ``space`` on the CPU.

    Its pipeline evaluates a candidate as a search trial does: MACs/params from the table
    evaluator's :class:`~cellblock.evaluators.cost_cache.CostCache`, then the table look-up
    (an architecture missing from the table makes a FAILED outcome).

    Raises:
        CellblockError: for an objective the bench cannot provide, a missing or bad table,
            an unknown metric column or a space without a table key.
    """
    check_objectives(objectives)
    cfg = config_mod.resolve({"space": space, "space_args": dict(space_args or {}),
                              "evaluator": "table",
                              "table": str(table), "metric": metric, "device": "cpu",
                              "objectives": [o.name for o in objectives]})
    return build_components(cfg)


def table_of(comps: Components) -> Any:
    """The :class:`~cellblock.evaluators.table.Table` of table components."""
    return comps.pipeline.evaluator.table


def evaluate_all(comps: Components, archs: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    """The outcomes of ``archs`` through the components' pipeline (trial seeds of seed 0)."""
    return [comps.pipeline(a, trial_seed(0, arch_id(a))) for a in archs]


@dataclass
class TrueFront:
    """The exact front of the whole space: its ideal/nadir (minimisation) and hypervolume."""

    objectives: list[Objective]
    ideal: np.ndarray
    nadir: np.ndarray
    hv: float
    size: int
    n_archs: int
    seconds: float
    costs_log: list[dict[str, Any]] = field(default_factory=list)

    def normalize(self, F: np.ndarray) -> np.ndarray:
        """Minimisation values scaled so that ideal -> 0 and nadir -> 1."""
        span = np.where(self.nadir > self.ideal, self.nadir - self.ideal, 1.0)
        return (F - self.ideal) / span

    @property
    def ref(self) -> np.ndarray:
        """Reference point in normalised space (1 + REF_OFFSET per objective)."""
        return np.full(len(self.objectives), 1.0 + REF_OFFSET)

    def hv_of(self, F: np.ndarray) -> float:
        """Hypervolume of minimisation values ``F`` in the normalised space."""
        if F.shape[0] == 0:
            return 0.0
        return hypervolume(self.normalize(F), self.ref)


def true_front(comps: Components, objectives: Sequence[Objective], workers: int = 1,
               log: Callable[[str], None] | None = None) -> TrueFront:
    """Evaluate every architecture of the space (costs cached on disk) and find the front."""
    t0 = time.perf_counter()
    archs = list(comps.space.enumerate())
    costs = comps.pipeline.evaluator.cost_cache
    built = costs.fill(archs, workers=workers)
    if log:
        log(f"costs of {len(archs)} architectures: {built} new, cache {costs.path}")
    rows = [o.metrics for o in evaluate_all(comps, archs) if o.status == COMPLETE]
    if not rows:
        raise ConfigError(
            f"no architecture of space {comps.space.name!r} is in table "
            f"{str(table_of(comps).path)!r}")
    F = objective_matrix(rows, objectives)
    front = F[nondominated_mask(F)]
    ideal, nadir = front.min(axis=0), front.max(axis=0)
    tf = TrueFront(list(objectives), ideal, nadir, 0.0, int(front.shape[0]), len(rows),
                   0.0, costs.fill_log())
    tf.hv = tf.hv_of(front)
    tf.seconds = time.perf_counter() - t0
    return tf


# ---- one run --------------------------------------------------------------------------------
def run_strategy(name: str, space: SearchSpace, objectives: Sequence[Objective], seed: int,
                 budget: int, evaluate: Evaluate, options: Mapping[str, Any] | None = None,
                 ask_seconds: list[float] | None = None) -> list[Trial]:
    """Ask/tell ``name`` for ``budget`` distinct evaluations; return the trials in order.

    Proposals go through the run loop's :class:`~cellblock.run.asking.AskLoop`: a repeated
    proposal is answered with the earlier trial and does not count; the run stops early
    when the space looks exhausted. ``evaluate(arch, trial_seed)`` gives each outcome.
    When ``ask_seconds`` is a list, the wall time of every ``ask`` is appended to it.
    """
    from cellblock.strategies.base import make_strategy

    strategy = make_strategy(name, space, objectives, seed, options)
    asks = AskLoop(ask_seconds=ask_seconds)
    trials: list[Trial] = []
    by_id: dict[str, Trial] = {}
    while len(trials) < budget:
        proposal = asks.propose(strategy, by_id)
        if proposal is None:
            break
        aid, arch = proposal
        outcome = evaluate(arch, trial_seed(seed, aid))
        trial = Trial(number=len(trials), arch_id=aid, arch=dict(arch), status=outcome.status,
                      metrics=outcome.metrics, error=outcome.error, violation=outcome.violation)
        trials.append(trial)
        by_id[aid] = trial
        strategy.tell(trial)
    return trials


def best_at(trials: Sequence[Trial], budgets: Sequence[int], metric: str) -> list[float]:
    """Highest ``metric`` among the first ``b`` trials, for each budget (nan if none)."""
    values = [t.value(metric) if t.status == COMPLETE else None for t in trials]
    out = []
    for b in budgets:
        seen = [v for v in values[:b] if v is not None]
        out.append(max(seen) if seen else math.nan)
    return out


def hv_ratio_at(trials: Sequence[Trial], budgets: Sequence[int], front: TrueFront) -> list[float]:
    """Hypervolume of the first ``b`` trials over the true front's, for each budget."""
    ok = [t.metrics for t in trials if t.status == COMPLETE]
    ranks = [i for i, t in enumerate(trials) if t.status == COMPLETE]
    F = objective_matrix(ok, front.objectives)
    out = []
    for b in budgets:
        n = sum(1 for r in ranks if r < b)
        out.append(front.hv_of(F[:n]) / front.hv if front.hv > 0 else math.nan)
    return out


# ---- the whole benchmark -------------------------------------------------------------------------
@dataclass
class BenchResult:
    """Rows of bench.csv plus what the report needs."""

    rows: list[dict[str, Any]]
    front: TrueFront
    optimum: tuple[str, float]
    metric: str
    seconds: float


def parse_budgets(text: str) -> list[int]:
    """``"25,50,100"`` -> ``[25, 50, 100]`` (sorted, distinct, positive)."""
    try:
        budgets = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(
            f"--budgets must be comma-separated positive integers, got {text!r}") from None
    if not budgets or budgets[0] <= 0:
        raise ConfigError(f"--budgets must be comma-separated positive integers, got {text!r}")
    return budgets


def check_strategies(strategies: Sequence[str], space: SearchSpace,
                     objectives: Sequence[Objective]) -> None:
    """Fail early on an unknown strategy or an objective a table look-up cannot provide."""
    from cellblock.strategies.base import make_strategy

    check_objectives(objectives)
    single = parse_objectives("accuracy")
    for name in strategies:
        make_strategy(name, space, single, 0)
        make_strategy(name, space, objectives, 0)


def run_bench(comps: Components, strategies: Sequence[str], seeds: Sequence[int],
              budgets: Sequence[int], objectives: Sequence[Objective], workers: int = 1,
              log: Callable[[str], None] | None = None) -> BenchResult:
    """Run every strategy x seed (two passes each) and collect ``best``/``hv_ratio`` per budget.

    Raises:
        CellblockError: for an unknown strategy or an objective a table cannot provide,
            before anything runs.
    """
    space, table = comps.space, table_of(comps)
    check_strategies(strategies, space, objectives)
    single = parse_objectives("accuracy")
    t0 = time.perf_counter()
    front = true_front(comps, objectives, workers, log)
    if log:
        log(f"true front: {front.size} points of {front.n_archs} architectures, hv {front.hv:.6f} "
            f"({front.seconds:.1f} s)")
    top = max(budgets)
    rows: list[dict[str, Any]] = []
    for name in strategies:
        t1 = time.perf_counter()
        for seed in seeds:
            so = run_strategy(name, space, single, seed, top, comps.pipeline)
            mo = run_strategy(name, space, objectives, seed, top, comps.pipeline)
            bests = best_at(so, budgets, table.metric)
            ratios = hv_ratio_at(mo, budgets, front)
            for b, best, ratio in zip(budgets, bests, ratios):
                rows.append(
                    {"strategy": name, "seed": seed, "budget": b, "best": best, "hv_ratio": ratio})
        if log:
            log(f"{name}: {len(seeds)} seeds x 2 runs in {time.perf_counter() - t1:.1f} s")
    return BenchResult(rows, front, table.best(), table.metric, time.perf_counter() - t0)


# ---- outputs --------------------------------------------------------------------------------
def summarize(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str,
                                                                   dict[int, tuple[float, float]]]:
    """strategy -> budget -> (mean, std) of ``key`` over seeds (std with ddof=0)."""
    groups: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        groups.setdefault(r["strategy"], {}).setdefault(int(r["budget"]), []).append(float(r[key]))
    return {s: {b: (float(np.nanmean(v)), float(np.nanstd(v))) for b, v in d.items()}
            for s, d in groups.items()}


def summarize_regret(rows: Sequence[Mapping[str, Any]], optimum: float) -> list[dict[str, Any]]:
    """``rows`` with ``best`` replaced by the regret ``optimum - best``."""
    return [{**r, "best": optimum - float(r["best"])} for r in rows]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """bench.csv with columns ``strategy, seed, budget, best, hv_ratio``."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "best": f"{r['best']:.6g}", "hv_ratio": f"{r['hv_ratio']:.6f}"})


def _table(stats: Mapping[str, Mapping[int, tuple[float, float]]], budgets: Sequence[int],
           fmt: str) -> str:
    head = "| strategy | " + " | ".join(f"b={b}" for b in budgets) + " |"
    sep = "|---|" + "---:|" * len(budgets)
    lines = [head, sep]
    for s, d in stats.items():
        cells = [f"{d[b][0]:{fmt}} ± {d[b][1]:{fmt}}" for b in budgets]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, result: BenchResult, budgets: Sequence[int], command_line: str,
                   n_seeds: int) -> None:
    """bench.md: command, table optimum, true front, mean ± std tables per budget.

    The tables hold ``best``, ``regret`` and ``hv_ratio``.
    """
    seed_values = sorted({int(r["seed"]) for r in result.rows})
    seed_text = f"{seed_values[0]}..{seed_values[-1]}" if seed_values else "none"
    key, value = result.optimum
    f = result.front
    names = ", ".join(o.name for o in f.objectives)
    fills = "; ".join(
        f"{e['archs']} archs ({e.get('built', e['archs'])} networks built) in {e['seconds']} s "
        f"with {e['workers']} worker(s)"
        for e in f.costs_log
    ) or "(no fill logged)"
    text = f"""# Strategy benchmark on a tabular benchmark

Command (from the repository root):

```
{command_line}
```

- Table metric `{result.metric}`; optimum of the table: **{value:.4f}** (`{key}`).
- Seeds: {n_seeds} per strategy ({seed_text}); each strategy x seed runs once to
  {max(budgets)} evaluations with the objective `accuracy` (for `best`) and once with
  `{names}` (for `hv_ratio`).
- `best`: highest `{result.metric}` (raw table units) within the first b evaluations.
- `hv_ratio`: hypervolume of the first b evaluations / hypervolume of the true front
  ({f.size} points among {f.n_archs} architectures), objectives `{names}` normalised by the
  true front's ideal and nadir, reference point nadir + {REF_OFFSET:.0%} of the range (1.1
  per normalised objective).
- Cost cache fills logged for this space: {fills}.
- True front (enumeration, look-ups, costs from the cache): {f.seconds:.1f} s; whole bench:
  {result.seconds:.1f} s.
- Std is over seeds (ddof=0).

## best {result.metric} (mean ± std)

{_table(summarize(result.rows, "best"), budgets, ".2f")}

## mean regret: table optimum - best (mean ± std; the anytime curve)

{_table(summarize(summarize_regret(result.rows, value), "best"), budgets, ".3f")}

## hv_ratio (mean ± std)

{_table(summarize(result.rows, "hv_ratio"), budgets, ".4f")}
"""
    path.write_text(text, encoding="utf-8")


def write_plot(path: Path, result: BenchResult, budgets: Sequence[int]) -> None:
    """bench.png: mean best and mean hv_ratio vs budget per strategy, with std bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "best", f"best {result.metric}"),
                           (axes[1], "hv_ratio", "hv_ratio")):
        for name, d in summarize(result.rows, key).items():
            mean = np.array([d[b][0] for b in budgets])
            std = np.array([d[b][1] for b in budgets])
            ax.plot(budgets, mean, marker="o", label=name)
            ax.fill_between(budgets, mean - std, mean + std, alpha=0.2)
        ax.set_xlabel("evaluations")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].axhline(result.optimum[1], color="k", ls="--", lw=1, label="table optimum")
    axes[1].axhline(1.0, color="k", ls="--", lw=1, label="true front")
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "BenchResult",
    "TrueFront",
    "best_at",
    "check_objectives",
    "check_strategies",
    "evaluate_all",
    "hv_ratio_at",
    "parse_budgets",
    "run_bench",
    "run_strategy",
    "table_components",
    "table_of",
    "true_front",
]
