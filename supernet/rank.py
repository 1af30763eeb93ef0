"""How well does a supernet rank children? Kendall tau against stand-alone training.

Samples ``K`` distinct architectures (seeded; by default one per parameter-count
quantile bin), trains each stand-alone with the supernet's recipe for ``E`` epochs
(:func:`~cellblock.evaluators.training.train_and_evaluate`, ``--seeds`` times: the
reference is the mean, the seeds' agreement is its noise ceiling), evaluates each with
the supernet (its own sub-supernet for a few-shot one) with and without BN
re-calibration, scores the same architectures with the equal-cost baselines of
:mod:`~cellblock.supernet.baselines`, and writes ``DIR/rank.json`` (``kendall_tau``,
``spearman``, ``standalone_seed_tau``, ``baselines``, ``verdict``, ``cost_ratio``...)
and ``DIR/rank.csv`` (one row per architecture).
Stand-alone results are appended to ``DIR/standalone.jsonl`` (the equal-cost trainings to
``DIR/equal_cost.jsonl``) as they finish and reused by a later call with the same
recipe, so an interrupted ranking continues and several supernets share one reference.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellblock.core.errors import ConfigError
from cellblock.core.stats import rank_correlations as correlations
from cellblock.data import Dataset
from cellblock.evaluators.cost import cost_metrics
from cellblock.evaluators.loop import step_schedule
from cellblock.evaluators.pipeline import trial_seed
from cellblock.evaluators.training import TrainConfig, train_and_evaluate
from cellblock.search_spaces.api import arch_id, canonical_json, sample_distinct
from cellblock.supernet.baselines import (
    ZERO_COST,
    equal_cost_steps,
    proxy_batch,
    proxy_scores,
    sample_stratified,
    verdict,
)
from cellblock.supernet.checkpoint import SupernetCheckpoint, plain, train_config_of
from cellblock.supernet.evaluator import supernet_accuracy
from cellblock.supernet.model import Supernet
from cellblock.supernet.prior import FusedScore, check_prior


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _cached_rows(cache_path: Path, recipe_hash: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The trainings of ``recipe_hash`` already in ``cache_path``, by (arch id, repeat)."""
    cached: dict[tuple[str, int], dict[str, Any]] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if row.get("recipe") == recipe_hash:
                cached[(row["arch_id"], row.get("repeat", 0))] = row
    return cached


def _train_row(space: Any, arch: dict[str, Any], aid: str, rep: int, data: Dataset,
               base: TrainConfig, seed: int, recipe_hash: str, input_shape: tuple) -> dict[str,
                                                                                           Any]:
    """One stand-alone training of ``arch`` (repeat ``rep``) as a cache row."""
    s = trial_seed(seed + rep * 7919, aid)  # repeat 0 keeps the single-seed seed
    torch.manual_seed(s)
    model = space.build(arch)
    costs = cost_metrics(model, input_shape)
    res = train_and_evaluate(model, data, dataclasses.replace(base, seed=s))
    return {"arch_id": aid, "recipe": recipe_hash, "repeat": rep, "arch": arch,
            "standalone_accuracy": res["accuracy"], "standalone_train_s": res["train_s"],
            "steps": res.get("steps"), "params": costs.get("params"), "macs": costs.get("macs")}


def _train_rows(space: Any, archs: list[dict[str, Any]], data: Dataset, base: TrainConfig,
                seed: int, seeds: int, cache_path: Path, recipe_hash: str, input_shape: tuple,
                say: Callable[[str], None],
                what: str = "stand-alone") -> list[list[dict[str, Any]]]:
    """Per architecture, ``seeds`` stand-alone trainings (cached in ``cache_path`` by recipe)."""
    cached = _cached_rows(cache_path, recipe_hash)
    out = []
    for i, arch in enumerate(archs):
        aid = arch_id(arch)
        runs = []
        for rep in range(seeds):
            row = cached.get((aid, rep))
            if row is None:
                row = _train_row(space, arch, aid, rep, data, base, seed, recipe_hash, input_shape)
                with open(cache_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                say(f"[{i + 1}/{len(archs)}] {aid} {what} seed {rep}: accuracy "
                    f"{row['standalone_accuracy']:.4f} ({row['standalone_train_s']:.1f} s)")
            runs.append(row)
        out.append(runs)
    return out


def _recipe_hash(base: TrainConfig, seed: int, data: Dataset, ckpt: SupernetCheckpoint) -> str:
    return hashlib.sha256(canonical_json(
        {**dataclasses.asdict(base), "device": None, "seed": seed, "dataset": data.name,
         "val_fraction": ckpt.val_fraction}
    ).encode()).hexdigest()[:12]


def rank_supernet(
    supernet: Supernet,
    ckpt: SupernetCheckpoint,
    data: Dataset,
    *,
    samples: int,
    epochs: int,
    out: str | Path,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seeds: int = 1,
    stratified: bool = True,
    baselines: bool = True,
    search_candidates: int | None = None,
    prior: str | None = "macs",
) -> dict[str, Any]:
    """Rank correlation of the supernet's accuracies with stand-alone ones (see module doc).

    Stand-alone training uses the supernet's recipe with ``epochs`` epochs and, when
    given, ``batch_size`` and ``lr``. With ``seeds > 1`` every architecture is trained that many
    times: the reference is the mean accuracy, ``standalone_seed_tau`` (the mean Kendall
    tau between two stand-alone seeds) is the noise ceiling of the reference, and
    ``standalone_s`` stays the cost of training each architecture once.

    With ``stratified`` the architectures are one per parameter-count quantile bin
    (:func:`~cellblock.supernet.baselines.sample_stratified`), else uniform. With
    ``baselines`` the same architectures are also ranked by the equal-cost baselines
    (params, MACs, synflow, naswot, and stand-alone training for the steps whose total
    time equals the supernet's training plus evaluation), each with its Kendall tau in
    ``baselines``, and ``verdict`` says whether the supernet beats all of them.

    ``search_candidates`` N sets the budget of the equal-cost stand-alone training to that
    of a search scoring N candidates: the supernet's time is paid once for all N, so each
    architecture gets ``samples / N`` of the steps it gets by default (N = ``samples``).

    Raises:
        ConfigError: for ``samples < 3``, ``epochs < 1``, ``batch_size < 1``, ``seeds < 1``,
            ``lr`` not positive, ``search_candidates < 1`` or an unknown ``prior``.
    """
    _check_rank_args(samples, epochs, seeds, batch_size, lr)
    prior = check_prior(prior)
    if search_candidates is not None and search_candidates < 1:
        raise ConfigError(f"--search-candidates must be at least 1, got {search_candidates}")
    say = log or (lambda _line: None)
    dev = torch.device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space = supernet.space
    base = _standalone_recipe(ckpt, epochs, dev, batch_size, lr)
    cache_path = out / "standalone.jsonl"
    archs = (sample_stratified(space, samples, seed) if stratified
             else sample_distinct(space, samples, seed))
    input_shape = tuple(space.kwargs.get("input_shape") or data.input_shape)
    runs = _train_rows(space, archs, data, base, seed, seeds, cache_path,
                       _recipe_hash(base, seed, data, ckpt), input_shape, say)
    rows = _reference_rows(runs)
    eval_s, eval_no_recal_s = _score_with_supernet(supernet, rows, data, dev)
    result = {
        **_supernet_taus(rows),
        **_costs(rows, ckpt, eval_s, eval_no_recal_s, seeds),
        **_reference_taus(rows, seeds),
        "epochs": epochs, "batch_size": base.batch_size, "lr": base.lr,
        "val_fraction": ckpt.val_fraction,
        "seed": seed, "supernet_epochs": ckpt.recipe.train.epochs,
        "sampling": ckpt.recipe.sampling, "split": plain(ckpt.recipe.split),
        "split_groups": ckpt.recipe.split_groups,
        "stratified": stratified, "space": ckpt.space, "dataset": data.name,
    }
    if prior is not None:
        result["fused"] = {**_fused(rows, prior), "cost_s": result["supernet_s"]}
    if baselines:
        candidates = search_candidates or len(rows)
        budget_s = result["supernet_s"] * len(rows) / candidates  # this sample's share
        result.update(_baselines(space, rows, data, base, seed, budget_s, cache_path,
                                 ckpt, input_shape, say))
        result["baselines"]["standalone_equal_cost"]["search_candidates"] = candidates
        fused = result.get("fused") or {}
        result["verdict"] = verdict(result["kendall_tau"],
                                    {k: v["kendall_tau"] for k, v in result["baselines"].items()},
                                    fused.get("prior"), fused.get("kendall_tau"))
    _write_report(out, result, rows)
    return result


def _check_rank_args(samples: int, epochs: int, seeds: int, batch_size: int | None,
                     lr: float | None = None) -> None:
    """Raise ConfigError naming the first out-of-range argument of :func:`rank_supernet`."""
    if samples < 3:
        raise ConfigError(f"--samples must be at least 3 to rank, got {samples}")
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr must be a positive number, got {lr}")


def _standalone_recipe(ckpt: SupernetCheckpoint, epochs: int, device: torch.device,
                       batch_size: int | None, lr: float | None = None) -> TrainConfig:
    """The supernet's recipe with the stand-alone ``epochs``, device, batch size and rate."""
    changes: dict[str, Any] = {"epochs": epochs, "device": str(device)}
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if lr is not None:
        changes["lr"] = lr
    return train_config_of(ckpt.recipe, **changes)


def _reference_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per architecture: the mean stand-alone accuracy and time over its seeds."""
    return [{**r[0], "standalone_accuracy": float(np.mean([x["standalone_accuracy"] for x in r])),
             "standalone_train_s": float(np.mean([x["standalone_train_s"] for x in r])),
             "standalone_runs": [x["standalone_accuracy"] for x in r]} for r in runs]


def _score_with_supernet(supernet: Supernet, rows: list[dict[str, Any]], data: Dataset,
                         device: torch.device) -> tuple[float, float]:
    """Fill each row's supernet accuracy (BN re-calibrated, and not) and group; the seconds
    each of the two passes took."""
    supernet.to(device).eval()
    t0 = time.perf_counter()
    for row in rows:
        row["supernet_accuracy"] = supernet_accuracy(supernet, row["arch"], data, device, True)
        row["supernet_group"] = supernet.group(row["arch"])
    eval_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for row in rows:
        row["supernet_accuracy_no_recal"] = supernet_accuracy(supernet, row["arch"], data, device,
                                                              False)
    return eval_s, time.perf_counter() - t0


def _fused(rows: list[dict[str, Any]], prior: str) -> dict[str, Any]:
    """Each row's ``supernet_score`` against this sample, and its Kendall tau."""
    accuracies, costs = [r["supernet_accuracy"] for r in rows], [float(r[prior]) for r in rows]
    for row, score in zip(rows, FusedScore.of(prior, accuracies, costs).scores(accuracies, costs),
                          strict=True):
        row["supernet_score"] = score
    tau = correlations([r["supernet_score"] for r in rows],
                       [r["standalone_accuracy"] for r in rows])[0]
    return {"prior": prior, "kendall_tau": _finite(tau)}


def _supernet_taus(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Kendall tau and Spearman rho of the supernet's accuracies (with and without BN
    re-calibration) against the stand-alone reference."""
    sa = [r["standalone_accuracy"] for r in rows]
    tau, rho = correlations([r["supernet_accuracy"] for r in rows], sa)
    tau_nr, rho_nr = correlations([r["supernet_accuracy_no_recal"] for r in rows], sa)
    return {"kendall_tau": _finite(tau), "spearman": _finite(rho),
            "kendall_tau_no_recal": _finite(tau_nr), "spearman_no_recal": _finite(rho_nr),
            "n": len(rows)}


def _costs(rows: list[dict[str, Any]], ckpt: SupernetCheckpoint, eval_s: float,
           eval_no_recal_s: float, seeds: int) -> dict[str, Any]:
    """Seconds spent by the supernet (training and evaluation) and by the stand-alone reference."""
    standalone_s = sum(r["standalone_train_s"] for r in rows)
    supernet_s = float(ckpt.train_s) + eval_s
    return {
        "supernet_s": supernet_s, "standalone_s": standalone_s,
        "supernet_train_s": float(ckpt.train_s), "supernet_eval_s": eval_s,
        "supernet_eval_no_recal_s": eval_no_recal_s,
        "children_per_s": len(rows) / eval_s if eval_s > 0 else None,
        "cost_ratio": supernet_s / standalone_s if standalone_s > 0 else None,
        "seeds": seeds, "standalone_total_s": standalone_s * seeds,
    }


def _reference_taus(rows: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    """The reference's noise ceiling (mean tau between two seeds) and the params ranking's tau."""
    sa = [r["standalone_accuracy"] for r in rows]
    seed_taus = [correlations([r["standalone_runs"][a] for r in rows],
                              [r["standalone_runs"][b] for r in rows])[0]
                 for a in range(seeds) for b in range(a + 1, seeds)]
    return {"standalone_seed_tau": _finite(float(np.mean(seed_taus))) if seed_taus else None,
            "params_tau": _finite(correlations([float(r["params"]) for r in rows], sa)[0])}


def _write_report(out: Path, result: Mapping[str, Any], rows: list[dict[str, Any]]) -> None:
    """``out/rank.json`` (the result) and ``out/rank.csv`` (one row per architecture)."""
    (out / "rank.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with open(out / "rank.csv", "w", newline="", encoding="utf-8") as fh:
        fields = ["arch_id", "standalone_accuracy", "supernet_accuracy",
                  "supernet_accuracy_no_recal", "supernet_score", "supernet_group", "params",
                  "macs", "synflow",
                  "naswot", "equal_cost_accuracy", "standalone_train_s", "standalone_runs", "arch"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**{k: r.get(k) for k in fields}, "arch": canonical_json(r["arch"]),
                             "standalone_runs": " ".join(f"{a:.6f}" for a in r["standalone_runs"])})


def _baselines(space: Any, rows: list[dict[str, Any]], data: Dataset, base: TrainConfig,
               seed: int, supernet_s: float, cache_path: Path, ckpt: SupernetCheckpoint,
               input_shape: tuple, say: Callable[[str], None]) -> dict[str, Any]:
    """Scores and Kendall taus of the equal-cost baselines on ``rows`` (filled in place)."""
    out = _zero_cost_baselines(space, rows, data, seed, input_shape)
    out["standalone_equal_cost"] = _equal_cost_baseline(space, rows, data, base, seed, supernet_s,
                                                        cache_path, ckpt, input_shape, say)
    return {"baselines": out}


def _zero_cost_baselines(space: Any, rows: list[dict[str, Any]], data: Dataset, seed: int,
                         input_shape: tuple) -> dict[str, dict[str, Any]]:
    """Kendall tau of params, MACs, synflow and naswot (scores filled into ``rows``)."""
    x = proxy_batch(data.x_train, seed)
    proxy_s = 0.0
    for row in rows:
        torch.manual_seed(trial_seed(seed, row["arch_id"]))
        scores = proxy_scores(space.build(row["arch"]), input_shape, x)
        proxy_s += scores["synflow_s"] + scores["naswot_s"]
        row.update({k: scores[k] for k in ("synflow", "naswot", "synflow_error", "naswot_error")})
    sa = [r["standalone_accuracy"] for r in rows]
    out: dict[str, dict[str, Any]] = {
        name: {"kendall_tau": _finite(correlations([float(r[name]) for r in rows], sa)[0]),
               "cost_s": proxy_s if name in ("synflow", "naswot") else 0.0}
        for name in ZERO_COST
    }
    for name in ("synflow", "naswot"):
        errors = [r[f"{name}_error"] for r in rows if r.get(f"{name}_error")]
        if errors:  # those architectures were ranked last by this proxy
            out[name].update({"failed": len(errors), "first_error": errors[0]})
    return out


def _equal_cost_baseline(space: Any, rows: list[dict[str, Any]], data: Dataset, base: TrainConfig,
                         seed: int, supernet_s: float, cache_path: Path, ckpt: SupernetCheckpoint,
                         input_shape: tuple, say: Callable[[str], None]) -> dict[str, Any]:
    """Stand-alone training for the steps the supernet's seconds buy, and its Kendall tau."""
    sa = [r["standalone_accuracy"] for r in rows]
    _, _, total_steps, _ = step_schedule(base, len(data.y_train))
    step_s = [r["standalone_train_s"] / max(1, r.get("steps") or total_steps) for r in rows]
    steps = equal_cost_steps(supernet_s, step_s)
    entry: dict[str, Any] = {"kendall_tau": None, "steps": steps, "cost_s": 0.0,
                             "epochs": steps / max(1, total_steps // base.epochs)}
    if steps < 1:
        entry["note"] = "the supernet's time buys less than one stand-alone step per architecture"
        return entry
    short = dataclasses.replace(base, epochs=math.ceil(steps / max(1, total_steps // base.epochs)),
                                max_steps=steps)
    runs = _train_rows(space, [r["arch"] for r in rows], data, short, seed, 1,
                       cache_path.with_name("equal_cost.jsonl"),
                       _recipe_hash(short, seed, data, ckpt), input_shape, say,
                       f"equal-cost ({steps} steps)")
    for row, r in zip(rows, runs, strict=True):
        row["equal_cost_accuracy"] = r[0]["standalone_accuracy"]
    entry["cost_s"] = float(sum(r[0]["standalone_train_s"] for r in runs))
    entry["kendall_tau"] = _finite(correlations([r["equal_cost_accuracy"] for r in rows], sa)[0])
    return entry
