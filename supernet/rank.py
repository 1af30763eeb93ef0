"""How well does a supernet rank children? Kendall tau against stand-alone training.

Samples ``K`` distinct architectures (seeded), trains each stand-alone with the
supernet's recipe for ``E`` epochs (:func:`~cellblock.evaluators.training.train_and_evaluate`),
evaluates each with the supernet with and without BN re-calibration, and writes
``DIR/rank.json`` (``kendall_tau``, ``spearman``, ``kendall_tau_no_recal``, ``n``,
``supernet_s``, ``standalone_s``...) and ``DIR/rank.csv`` (one row per architecture).
Stand-alone results are appended to ``DIR/standalone.jsonl`` as they finish and reused by
a later call with the same recipe, so an interrupted ranking continues.
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
from cellblock.evaluators.pipeline import trial_seed
from cellblock.evaluators.training import TrainConfig, evaluate_accuracy, train_and_evaluate
from cellblock.search_spaces.api import arch_id, canonical_json
from cellblock.supernet.evaluator import recalibrate_bn
from cellblock.supernet.model import Supernet

#: Below this Kendall tau the supernet's ranking is not worth searching over.
TAU_WARNING = 0.3


def sample_distinct(space: Any, k: int, seed: int) -> list[dict[str, Any]]:
    """``k`` distinct architectures drawn with ``seed`` (fewer if the space is smaller)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for _ in range(50 * k):
        arch = space.sample(rng)
        out.setdefault(arch_id(arch), arch)
        if len(out) >= k:
            break
    return list(out.values())


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def supernet_accuracy(supernet: Supernet, arch: Mapping[str, Any], data: Dataset,
                      device: torch.device, recal: bool = True) -> float:
    """Validation accuracy of ``arch`` with inherited weights (BN re-calibrated or not)."""
    model = supernet.extract(arch).to(device)
    if recal:
        recalibrate_bn(model, data.x_train)
    return evaluate_accuracy(model.eval(), data.x_val, data.y_val, device=device)


def rank_supernet(
    supernet: Supernet,
    ckpt: Mapping[str, Any],
    data: Dataset,
    *,
    samples: int,
    epochs: int,
    out: str | Path,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    batch_size: int | None = None,
    seeds: int = 1,
) -> dict[str, Any]:
    """Rank correlation of the supernet's accuracies with stand-alone ones (see module doc).

    Stand-alone training uses the supernet's recipe with ``epochs`` epochs and, when
    given, ``batch_size``. With ``seeds > 1`` every architecture is trained that many
    times: the reference is the mean accuracy, ``standalone_seed_tau`` (the mean Kendall
    tau between two stand-alone seeds) is the noise ceiling of the reference, and
    ``standalone_s`` stays the cost of training each architecture once.

    Raises:
        ConfigError: for ``samples < 3``, ``epochs < 1``, ``batch_size < 1`` or ``seeds < 1``.
    """
    if samples < 3:
        raise ConfigError(f"--samples must be at least 3 to rank, got {samples}")
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    say = log or (lambda _line: None)
    dev = torch.device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space = supernet.space
    recipe = {k: v for k, v in ckpt["recipe"].items() if k != "sampling"}
    if batch_size is not None:
        recipe["batch_size"] = batch_size
    base = TrainConfig(**{**recipe, "epochs": epochs, "device": str(dev)})
    recipe_hash = hashlib.sha256(canonical_json(
        {**dataclasses.asdict(base), "device": None, "seed": seed, "dataset": data.name,
         "val_fraction": ckpt.get("val_fraction")}
    ).encode()).hexdigest()[:12]
    cache_path = out / "standalone.jsonl"
    cached: dict[tuple[str, int], dict[str, Any]] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if row.get("recipe") == recipe_hash:
                cached[(row["arch_id"], row.get("repeat", 0))] = row
    archs = sample_distinct(space, samples, seed)
    input_shape = tuple(space.kwargs.get("input_shape") or data.input_shape)
    rows = []
    for i, arch in enumerate(archs):
        aid = arch_id(arch)
        runs = []
        for rep in range(seeds):
            row = cached.get((aid, rep))
            if row is None:
                s = trial_seed(seed + rep * 7919, aid)  # repeat 0 keeps the single-seed seed
                torch.manual_seed(s)
                model = space.build(arch)
                costs = cost_metrics(model, input_shape)
                res = train_and_evaluate(model, data, dataclasses.replace(base, seed=s))
                row = {"arch_id": aid, "recipe": recipe_hash, "repeat": rep, "arch": arch,
                       "standalone_accuracy": res["accuracy"], "standalone_train_s": res["train_s"],
                       "params": costs.get("params"), "macs": costs.get("macs")}
                with open(cache_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                say(f"[{i + 1}/{len(archs)}] {aid} seed {rep}: stand-alone accuracy "
                    f"{row['standalone_accuracy']:.4f} ({row['standalone_train_s']:.1f} s)")
            runs.append(row)
        rows.append({**runs[0], "standalone_accuracy": float(np.mean([r["standalone_accuracy"] for r in runs])),
                     "standalone_train_s": float(np.mean([r["standalone_train_s"] for r in runs])),
                     "standalone_runs": [r["standalone_accuracy"] for r in runs]})
    supernet.to(dev).eval()
    t0 = time.perf_counter()
    for row in rows:
        row["supernet_accuracy"] = supernet_accuracy(supernet, row["arch"], data, dev, True)
    eval_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for row in rows:
        row["supernet_accuracy_no_recal"] = supernet_accuracy(supernet, row["arch"], data, dev, False)
    eval_no_recal_s = time.perf_counter() - t0
    sa = [r["standalone_accuracy"] for r in rows]
    tau, rho = correlations([r["supernet_accuracy"] for r in rows], sa)
    tau_nr, rho_nr = correlations([r["supernet_accuracy_no_recal"] for r in rows], sa)
    standalone_s = sum(r["standalone_train_s"] for r in rows)
    seed_taus = [correlations([r["standalone_runs"][a] for r in rows],
                              [r["standalone_runs"][b] for r in rows])[0]
                 for a in range(seeds) for b in range(a + 1, seeds)]
    supernet_s = float(ckpt["train_s"]) + eval_s
    result = {
        "kendall_tau": _finite(tau), "spearman": _finite(rho),
        "kendall_tau_no_recal": _finite(tau_nr), "spearman_no_recal": _finite(rho_nr),
        "n": len(rows), "supernet_s": supernet_s, "standalone_s": standalone_s,
        "supernet_train_s": float(ckpt["train_s"]), "supernet_eval_s": eval_s,
        "supernet_eval_no_recal_s": eval_no_recal_s,
        "children_per_s": len(rows) / eval_s if eval_s > 0 else None,
        "cost_ratio": supernet_s / standalone_s if standalone_s > 0 else None,
        "seeds": seeds, "standalone_total_s": standalone_s * seeds,
        "standalone_seed_tau": _finite(float(np.mean(seed_taus))) if seed_taus else None,
        "params_tau": _finite(correlations([float(r["params"]) for r in rows], sa)[0]),
        "epochs": epochs, "batch_size": base.batch_size, "val_fraction": ckpt.get("val_fraction"),
        "seed": seed, "supernet_epochs": ckpt["recipe"]["epochs"],
        "sampling": ckpt["recipe"]["sampling"], "space": ckpt["space"], "dataset": data.name,
    }
    (out / "rank.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with open(out / "rank.csv", "w", newline="", encoding="utf-8") as fh:
        fields = ["arch_id", "standalone_accuracy", "supernet_accuracy",
                  "supernet_accuracy_no_recal", "params", "macs", "standalone_train_s",
                  "standalone_runs", "arch"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**{k: r.get(k) for k in fields}, "arch": canonical_json(r["arch"]),
                             "standalone_runs": " ".join(f"{a:.6f}" for a in r["standalone_runs"])})
    return result


def tau_warning(result: Mapping[str, Any]) -> str | None:
    """A warning line when the Kendall tau is below :data:`TAU_WARNING` (or undefined)."""
    tau = result.get("kendall_tau")
    if tau is not None and tau >= TAU_WARNING:
        return None
    shown = "undefined" if tau is None else f"{tau:.3f}"
    return (f"warning: Kendall tau {shown} < {TAU_WARNING}: this supernet ranks children poorly; "
            "search by training candidates instead (--evaluator train), or train the supernet "
            "longer or with another --sampling")
