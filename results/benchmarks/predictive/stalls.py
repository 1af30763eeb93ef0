"""Stalls of single-objective search on rougher tables (issue 31): best@100, optimum hits, stall
counts.

Variants of the NAS-Bench-201 CIFAR-100 table (``--table``; values in table units, %),
each fixed by its own seed so every strategy and seed sees the same landscape:

* ``c100``: the table itself;
* ``noise``: plus seeded Gaussian noise of sd ``NOISE_SD`` (0.5 points, the scale of
  NB201's seed-to-seed spread of one cell's CIFAR-100 accuracy);
* ``noise2``: a second, independent noise draw;
* ``rank``: rank-transformed (``100 * rank / n``, ties averaged): every gap the same size;
* ``quant``: rounded to 1 point (plateaus of near-ties);
* ``darts``: the DARTS space through a synthetic surrogate of our own (additive effects
  per decision value, pairwise effects within a node, hash noise); its optimum is unknown,
  so only best@b is compared there.

Per run (single objective ``accuracy``, ``--budget`` evaluations) it records best-so-far
after every evaluation and, for ``predictive``, stall counts: an evaluation *stalls* when
it does not improve the best and the model (as fitted at that ask) gives a higher expected
improvement than the asked candidate's to some unseen candidate of a fixed probe set
(1,000 random architectures, the same for every run of a variant) that is more than one
decision away from the incumbent. ``stall_evals`` counts them; ``stalls`` counts runs of
at least ``STALL_RUN`` consecutive stalled evaluations; ``stall_evals_mean`` counts the
non-improving evaluations where some such probe even has a better predicted *mean* than
the incumbent's value.
Also the wall time of every ask. One JSON line per strategy x tag x variant x seed;
lines already in ``--out`` are not run again.

Usage (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/predictive/stalls.py \\
        --strategies predictive,optuna:tpe --variants c100,noise,rank,quant,darts --seeds 0:20 \\
        --out results/benchmarks/predictive/stalls.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cellblock.core.objectives import parse_objectives
from cellblock.records import COMPLETE, Trial
from cellblock.run.asking import AskLoop
from cellblock.run.bench import evaluate_all, table_components
from cellblock.search_spaces.api import SearchSpace, arch_id
from cellblock.strategies.base import make_strategy

NOISE_SD = 0.5  # points of accuracy: NB201's seed-to-seed spread of one cell (CIFAR-100)
PROBES = 1000  # unseen candidates the model is asked about (stall counting)
STALL_RUN = 10  # consecutive stalled evaluations that make one stall


def _unit(key: str) -> float:
    """A uniform number in [0, 1) from a string (stable across runs and machines)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12


def _normal(key: str) -> float:
    """A standard normal number from a string."""
    from scipy.special import ndtri

    return float(ndtri(min(max(_unit(key), 1e-12), 1 - 1e-12)))


def nb201_values(table: str, metric: str, variant: str) -> tuple[SearchSpace, dict[str, float]]:
    """The NB201 space and arch_id -> value of one table variant."""
    comps = table_components("nb201", {"num_classes": 100}, table, metric,
                             parse_objectives("accuracy"))
    archs = list(comps.space.enumerate())
    ids = [arch_id(a) for a in archs]
    raw = np.array([o.metrics[metric] if o.status == COMPLETE else np.nan
                    for o in evaluate_all(comps, archs)], dtype=float)
    if variant in ("noise", "noise2"):
        raw = raw + NOISE_SD * np.array([_normal(f"{variant}:{aid}") for aid in ids])
    elif variant == "rank":
        from scipy.stats import rankdata

        ok = np.isfinite(raw)
        raw[ok] = 100.0 * rankdata(raw[ok]) / ok.sum()
    elif variant == "quant":
        raw = np.round(raw)
    elif variant != "c100":
        raise SystemExit(f"unknown variant {variant!r}")
    return comps.space, {aid: float(v) for aid, v in zip(ids, raw) if np.isfinite(v)}


def darts_value(arch: Mapping[str, Any]) -> float:
    """Synthetic DARTS accuracy (%): additive value effects, within-node pairs, hash noise."""
    names = sorted(arch)
    f = sum(_normal(f"a:{n}={arch[n]}") for n in names)
    nodes: dict[str, list[str]] = {}
    for n in names:
        nodes.setdefault(n.rsplit(".", 1)[0], []).append(f"{n}={arch[n]}")
    for group in nodes.values():
        f += sum(1.5 * _normal(f"p:{a}&{b}") for i, a in enumerate(group) for b in group[i + 1:])
    return 80.0 + 0.25 * f + NOISE_SD * _normal(f"n:{arch_id(arch)}")


def run(name: str, space: SearchSpace, value: Callable[[Mapping[str, Any]], float], seed: int,
        budget: int,
        options: Mapping[str, Any], probes: list[dict[str, Any]]) -> dict[str, Any]:
    """One single-objective run with per-ask wall times and, for ``predictive``, stall counts."""
    from cellblock.strategies.predictive.acquisition import expected_improvement, hamming
    from cellblock.strategies.predictive.models import objective_predictions

    objs = parse_objectives("accuracy")
    strategy = make_strategy(name, space, objs, seed, dict(options))
    asks: list[float] = []
    loop = AskLoop(ask_seconds=asks)
    probe_ids = [arch_id(a) for a in probes]
    trials: list[Trial] = []
    by_id: dict[str, Trial] = {}
    best, bests, stalled, stalled_mean = -np.inf, [], [], 0
    while len(trials) < budget:
        proposal = loop.propose(strategy, by_id)
        if proposal is None:
            break
        aid, arch = proposal
        acc = value(arch)
        models = getattr(strategy, "_models", None)
        elsewhere = better_mean = False
        if models and "accuracy" in models and np.isfinite(best):
            top = max(trials, key=lambda t: t.metrics["accuracy"]).arch
            keep = [i for i, p in enumerate(probe_ids) if p not in strategy.seen
                    and hamming(probes[i], top) > 1]
            X = strategy.encoder.encode([probes[i] for i in keep] + [arch],
                                        ids=[probe_ids[i] for i in keep] + [aid])
            M, S = objective_predictions(models, objs, X)
            ei = expected_improvement(M, S, -best)
            elsewhere = bool(len(keep)) and float(ei[:-1].max()) > float(ei[-1])
            better_mean = bool(len(keep)) and float(-M[:-1, 0].max()) > best
        improved = acc > best
        stalled.append(bool(elsewhere and not improved))
        stalled_mean += bool(better_mean and not improved)
        best = max(best, acc)
        bests.append(best)
        trial = Trial(number=len(trials), arch_id=aid, arch=dict(arch), status=COMPLETE,
                      metrics={"accuracy": acc}, error=None, violation=0.0)
        trials.append(trial)
        by_id[aid] = trial
        strategy.tell(trial)
    runs, length = 0, 0
    for s in stalled:
        length = length + 1 if s else 0
        runs += length == STALL_RUN
    return {"best": bests, "stall_evals": int(sum(stalled)), "stalls": runs,
            "stall_evals_mean": stalled_mean,
            "ask_ms_mean": 1e3 * float(np.mean(asks))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", required=True, help="comma-separated names")
    ap.add_argument("--variants", default="c100,noise,rank,quant,darts")
    ap.add_argument("--seeds", default="0:20", help="range start:stop")
    ap.add_argument("--options", default="{}", help="strategy options as JSON (predictive only)")
    ap.add_argument("--tag", default="",
                    help="label stored with each line (code versions, options)")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--table", default="/work/shared/nb201_cifar100.csv")
    ap.add_argument("--metric", default="cifar100_test_acc")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    start, stop = (int(x) for x in args.seeds.split(":"))
    options = json.loads(args.options)
    out = Path(args.out)
    done = set()
    if out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["strategy"], r["tag"], r["variant"], r["seed"], r["budget"]))
    for variant in args.variants.split(","):
        if variant == "darts":
            space = SearchSpace("darts")
            value: Callable[[Mapping[str, Any]], float] = darts_value
            optimum = None
        else:
            space, values = nb201_values(args.table, args.metric, variant)
            optimum = max(values.values())
            value = (lambda vals: lambda a: vals[arch_id(a)])(values)
        rng = np.random.default_rng(12345)
        probes = [space.sample(rng) for _ in range(PROBES)]
        for name in args.strategies.split(","):
            for seed in range(start, stop):
                if (name, args.tag, variant, seed, args.budget) in done:
                    continue
                t0 = time.perf_counter()
                row = run(name, space, value, seed, args.budget,
                          options if name == "predictive" else {}, probes)
                row.update(strategy=name, tag=args.tag, variant=variant, seed=seed,
                           budget=args.budget,
                           optimum=optimum, wall_s=round(time.perf_counter() - t0, 2))
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"{variant} {name} {args.tag} seed {seed}: best@100 "
                      f"{row['best'][min(99, len(row['best']) - 1)]:.2f}"
                      f" stalls {row['stalls']} ({row['stall_evals']} evals) {row['wall_s']} s",
                      flush=True)


if __name__ == "__main__":
    main()
