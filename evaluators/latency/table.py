"""Latency tables: every unit of a space timed once on the target, then summed to predict.

``profile`` (``cellblock latency profile``) traces the space's cover (see
:mod:`~cellblock.evaluators.latency.covers`), times each distinct unit in a runtime (see
:mod:`~cellblock.evaluators.latency.runtimes`), then fits one per-network constant on a few whole
networks. The table is rewritten atomically as it grows, so an interrupted profile continues
where it stopped. A prediction is ``sum of the network's unit latencies + constant``, where a
unit's latency is its median minus the runtime's empty-call overhead. By default every timing
is relative to a fixed reference network timed alongside it (see
:mod:`~cellblock.evaluators.latency.timing`), so that a machine whose speed drifts still gives
one consistent table. How well a table predicts is checked by :mod:`.check`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellblock.core.errors import ConfigError, EvaluationError
from cellblock.core.fileio import atomic_write_text
from cellblock.evaluators.latency.covers import Probe, arch_probe, run_cover
from cellblock.evaluators.latency.fit import fit_correction, unit_kind
from cellblock.evaluators.latency.runtimes import get_runtime, runtime_fingerprint
from cellblock.evaluators.latency.timing import (
    REFERENCE_NETWORK,
    Timing,
    measure_networks,
    runtime_overhead,
)
from cellblock.evaluators.latency.units import UnitCall, make_inputs, trace_units
from cellblock.search_spaces.api import SearchSpace, arch_id

_log = logging.getLogger(__name__)

FORMAT = "cellblock-latency-table/1"
# Fingerprint keys that must match for a partial table to be continued.
SAME_DEVICE = ("type", "name", "torch", "threads", "runtime", "onnxruntime")


def space_identity(space: SearchSpace) -> dict[str, Any]:
    """The space reference and its full arguments, JSON-normalised."""
    args = json.loads(json.dumps(space.arguments(), sort_keys=True, default=repr))
    return {"ref": space.ref, "arguments": args}


def _missing_error(call: UnitCall, where: str, table: str) -> str:
    return (f"unit {call.label} (at {call.path or 'the network'}, key {call.key}) of {where} is "
            f"not in latency table {table}; profile this space and skeleton with 'cellblock "
            "latency profile' on the target device")


class LatencyTable:
    """A loaded, complete latency table.

    Raises:
        ConfigError: if the file is missing, malformed or an unfinished profile.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"latency table {str(self.path)!r} not found; make one with "
                              "'cellblock latency profile --out FILE'")
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"latency table {str(self.path)!r} is not valid JSON: {exc}") from None
        if not isinstance(self.data, dict) or self.data.get("format") != FORMAT:
            raise ConfigError(f"{str(self.path)!r} is not a cellblock latency table ({FORMAT})")
        if not self.data.get("complete"):
            raise ConfigError(f"latency table {str(self.path)!r} is an unfinished profile; run the "
                              "same 'cellblock latency profile' command again to finish it")
        self.units: dict[str, dict[str, Any]] = self.data["units"]
        self.constant_ms = float(self.data["constant_ms"])
        kind_ms = self.data.get("kind_ms") or {}
        self._unit_ms = {
            k: u["ms"] + kind_ms.get(unit_kind(u["label"]), 0.0) for k, u in self.units.items()}
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def fingerprint(self) -> dict[str, Any]:
        """What trial records carry: the device fingerprint, runtime and the table's hash."""
        return {**self.data["fingerprint"], "table_sha256": self.sha256[:16],
                "table": self.path.name}

    def missing(self, calls: list[UnitCall]) -> list[UnitCall]:
        """The calls whose unit is not in the table."""
        return [c for c in calls if c.key not in self.units]

    def predict_calls(self, calls: list[UnitCall], where: str = "the network") -> float:
        """``sum of unit latencies + constant`` in ms (each unit plus its kind's correction,
        when the table fitted one).

        Raises:
            EvaluationError: naming the first unit missing from the table.
        """
        gone = self.missing(calls)
        if gone:
            raise EvaluationError(_missing_error(gone[0], where, str(self.path)))
        return sum(self._unit_ms[c.key] for c in calls) + self.constant_ms

    def predict(self, model: nn.Module, input_shape: tuple, where: str = "the network") -> float:
        """Predicted batch-1 latency (ms) of ``model``."""
        return self.predict_calls(trace_units(model, input_shape), where)

    def metrics(self, model: nn.Module, input_shape: tuple, where: str) -> dict[str, Any]:
        """The latency metrics of a trial predicted from the table."""
        return {"latency_ms": self.predict(model, input_shape, where), "latency_source": "table",
                "latency_table": self.fingerprint()}

    def check_space(self, space: SearchSpace) -> None:
        """Fail before a search when the table cannot price every unit of ``space``.

        A table profiled for the same space and skeleton is accepted; another skeleton is
        traced (no timing) and its first unit missing from the table is named.

        Raises:
            ConfigError: naming the missing unit.
        """
        if self.data["space"] == space_identity(space):
            return
        problem: list[str] = []

        def discover(probe: Probe) -> list[UnitCall]:
            calls = trace_units(probe.build(), probe.input_shape)
            gone = self.missing(calls)
            if gone and not problem:
                problem.append(_missing_error(gone[0], probe.name, str(self.path)))
            return calls

        run_cover(space, discover)
        if problem:
            raise ConfigError(problem[0])


# ---- profiling -----------------------------------------------------------------------------
def build_real(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """The network ``build`` makes, seeded, in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return build().eval()


def table_timing(data: Mapping[str, Any], device: torch.device, *, runtime: str | None = None,
                 warmup: int = 10, repeats: int = 30, clock: str | None = None,
                 statistic: str | None = None) -> Timing:
    """Timing that measures on the scale of table ``data``: its clock, statistic and, for a
    normalised table, its reference network and ``reference_ms``.

    Raises:
        ConfigError: when a normalised table is asked for another runtime or reference.
    """
    settings = data["settings"]
    normalise = settings.get("normalise", "none")
    runtime = runtime or data["runtime"]
    ref = data.get("reference") or {}
    if normalise == "reference":
        if runtime != data["runtime"]:
            raise ConfigError("the table is normalised against its reference network in "
                              f"{data['runtime']}; measuring in {runtime} cannot use that scale: "
                              f"use --runtime {data['runtime']}")
        if ref.get("network") != REFERENCE_NETWORK:
            raise ConfigError("the table was normalised with reference network "
                              f"{ref.get('network')!r}; this "
                              f"cellblock has {REFERENCE_NETWORK!r}: profile the table again")
    return Timing(runtime, device, warmup, repeats, clock or settings.get("clock", "wall"),
                  statistic or settings.get("statistic", "median"), normalise,
                  tuple(ref.get("input_shape") or ()) or None, ref.get("ms"))


def _load_partial(out: Path, head: dict[str, Any]) -> dict[str, Any]:
    if not out.exists():
        return {**head, "units": {}, "calibration": [], "complete": False, "profile_s": 0.0}
    try:
        old = json.loads(out.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(
            f"{str(out)!r} exists and is not a latency table; choose another --out") from None
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise ConfigError(f"{str(out)!r} exists and is not a latency table; choose another --out")
    for key in ("space", "runtime", "settings"):
        if old.get(key) != head[key]:
            raise ConfigError(f"{str(out)!r} holds a table with another {key} ({old.get(key)!r}); "
                              "choose another --out or delete it")
    for key in SAME_DEVICE:
        if old["fingerprint"].get(key) != head["fingerprint"].get(key):
            raise ConfigError(f"{str(out)!r} was profiled on another device or setting ({key}: "
                              f"{old['fingerprint'].get(key)!r} there, "
                              f"{head['fingerprint'].get(key)!r} "
                              "here); choose another --out or delete it")
    return old


def profile(space: SearchSpace, runtime: str, out: str | Path, *, device: str = "cpu",
            warmup: int = 10, repeats: int = 100, calibration: int = 30, seed: int = 0,
            clock: str = "wall", statistic: str = "median", normalise: str = "reference",
            progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every distinct unit of ``space`` in ``runtime``; write the table to ``out``.

    Continues a partial table at ``out`` made with the same space, runtime, settings and
    device. With ``normalise="reference"`` (see :mod:`~cellblock.evaluators.latency.timing`)
    every value is relative to the reference network, timed first. Returns the table.
    """
    from tqdm.auto import tqdm

    from cellblock.core.devices import resolve_device

    log = log or _log.info
    get_runtime(runtime)
    if calibration < 1:
        raise ConfigError(f"calibration={calibration} is invalid; use calibration >= 1")
    dev = resolve_device(device)
    shape = tuple(space.arguments()["input_shape"])
    timing = Timing(runtime, dev, warmup, repeats, clock, statistic, normalise, shape)
    out = Path(out)
    head = {"format": FORMAT, "space": space_identity(space), "runtime": runtime,
            "fingerprint": runtime_fingerprint(runtime, dev),
            "settings": {**timing.settings(), "calibration": calibration, "seed": seed,
                         "batch_size": 1}}
    table = _load_partial(out, head)
    if table.get("complete"):
        log(f"{out} is already a complete table ({len(table['units'])} units)")
        return table
    t_start = time.perf_counter()
    spent = float(table.get("profile_s", 0.0))

    def save() -> None:
        table["profile_s"] = round(spent + time.perf_counter() - t_start, 2)
        atomic_write_text(out, json.dumps(table, indent=1, sort_keys=True))

    found: dict[str, tuple[int, UnitCall]] = {}
    probes: list[Probe] = []

    def discover(probe: Probe) -> list[UnitCall]:
        calls = trace_units(probe.build(), probe.input_shape)
        probes.append(probe)
        for c in calls:
            found.setdefault(c.key, (len(probes) - 1, c))
        if progress and len(probes) % 500 == 0:
            log(f"tracing the space: {len(probes)} probes, {len(found)} distinct units so far "
                f"({time.perf_counter() - t0:.0f} s)")
        return calls

    t0 = time.perf_counter()
    table["coverage"] = run_cover(space, discover)
    table["expected_units"] = len(found)
    todo = [k for k in found if k not in table["units"]]
    log(f"{len(found)} distinct units ({table['coverage']}); traced in "
        f"{time.perf_counter() - t0:.1f} s; "
        f"{len(found) - len(todo)} already timed, {len(todo)} to time in {runtime}")
    if timing.normalised:
        if "reference" not in table:
            table["reference"] = {"network": REFERENCE_NETWORK, "input_shape": list(shape),
                                  "ms": timing.measure_reference()}
            log(f"reference network {REFERENCE_NETWORK}: {table['reference']['ms']:.4f} ms; every "
                "latency is scaled to the speed this measured")
        timing.reference_ms = table["reference"]["ms"]
    if "overhead_ms" not in table:
        table["overhead_ms"] = runtime_overhead(timing)
    last_save = time.perf_counter()
    by_probe: dict[int, list[str]] = {}
    for k in todo:
        by_probe.setdefault(found[k][0], []).append(k)
    bar = tqdm(total=len(todo), unit="unit", desc="profile", disable=not progress, file=sys.stderr)
    try:
        for index, keys in by_probe.items():
            model = build_real(probes[index].build, seed)
            for k in keys:
                call = found[k][1]
                module = model.get_submodule(call.path) if call.path else model
                run = get_runtime(runtime)(module, make_inputs(call.args, dev, seed), dev)
                stats = timing.time_one(run)
                stats["ms"] = max(stats.pop("value_ms") - table["overhead_ms"], 0.0)
                table["units"][k] = {"label": call.label, **stats}
                bar.update(1)
                if time.perf_counter() - last_save > 5:
                    save()
                    last_save = time.perf_counter()
        bar.close()
        _calibrate(space, table, timing, calibration, seed, save, log)
    except BaseException:
        save()
        raise
    table["complete"] = True
    save()
    log(f"wrote {out}: {len(table['units'])} units, constant {table['constant_ms']:.4f} ms, "
        f"{table['profile_s']:.1f} s of profiling")
    return table


def _calibrate(space: SearchSpace, table: dict[str, Any], timing: Timing, n: int, seed: int,
               save: Callable[[], None], log: Callable[[str], None]) -> None:
    """Fit the correction to the summed units on ``n`` whole networks (see
    :mod:`~cellblock.evaluators.latency.fit`)."""
    rng = np.random.default_rng(seed + 1)
    shape = tuple(space.arguments()["input_shape"])
    models, sums, ids, kinds = [], [], [], []
    for arch in [space.sample(rng) for _ in range(n)]:
        model = build_real(arch_probe(space, arch).build, seed)
        units_ms, count = 0.0, Counter()
        for c in trace_units(model, shape):
            if c.key not in table["units"]:
                raise ConfigError(_missing_error(c, f"calibration arch {arch_id(arch)}",
                                                 "being profiled")
                                  + " (the cover missed it)")
            units_ms += table["units"][c.key]["ms"]
            count[unit_kind(table["units"][c.key]["label"])] += 1
        models.append(model)
        sums.append(units_ms)
        ids.append(arch_id(arch))
        kinds.append(dict(count))
    measured = [m["value_ms"] for m in measure_networks(models, shape, timing)]
    rows = table["calibration"] = [{"arch_id": i, "measured_ms": m, "units_ms": u, "kinds": k}
                                   for i, m, u, k in zip(ids, measured, sums, kinds, strict=True)]
    save()
    fit = fit_correction(measured, sums, kinds)
    table["constant_ms"], table["kind_ms"] = fit["constant_ms"], fit["kind_ms"]
    table["calibration_fit"] = {"model": fit["model"], "loo_mape_pct": fit["loo_mape_pct"]}
    loo = fit["loo_mape_pct"]
    errors = ", ".join(f"{k} {v:.1f}%" for k, v in loo.items() if v is not None)
    log(f"per-network constant {table['constant_ms']:.4f} ms, {fit['model']} model, from "
        f"{len(rows)} whole networks (leave-one-out error: {errors})")
