"""The ``table`` evaluator: accuracy looked up in a tabular benchmark, no training.

A table (CSV or parquet) has one row per architecture, keyed by the official
architecture string of its space (NAS-Bench-201: ``|nor_conv_3x3~0|+|...``), with one
or more metric columns. Spaces provide their key with :func:`register_table_key`.

Units: a metric column whose values lie in 0..100 with a maximum above 1 is taken as a
percentage; the trial's ``accuracy`` is then the fraction (value / 100) and the raw
value is kept under the column's own name. A column in 0..1 is used as is.

:class:`CostCache` keeps MACs and parameters of built networks on disk (JSON, keyed by
the space's full arguments and source and by ``arch_id``), so that the thousands of
look-ups of a benchmark do not rebuild networks.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from torch import nn

from cellblock.core.errors import ConfigError, EvaluationError
from cellblock.core.registry import Registry
from cellblock.evaluators.base import EvalContext, Evaluator, register_evaluator
from cellblock.search_spaces.api import SearchSpace, arch_id

TableKeyFn = Callable[[Mapping[str, Any]], str]
TABLE_KEYS: Registry[TableKeyFn] = Registry("table key")
CostRepFn = Callable[[Mapping[str, Any]], dict[str, Any]]
COST_REPRESENTATIVES: Registry[CostRepFn] = Registry("cost representative")
# Column names recognised as the architecture key, in order of preference.
ARCH_COLUMNS = ("arch", "arch_str", "arch_string", "architecture")


def register_table_key(space_name: str, fn: TableKeyFn | None = None) -> Any:
    """Register ``fn(arch) -> str``, the official table key of the space ``space_name``.

    Usable as a decorator (``@register_table_key("name")``) or called with ``fn``.
    """
    return TABLE_KEYS.register(space_name, fn)


def register_cost_representative(space_name: str, fn: CostRepFn | None = None) -> Any:
    """Register ``fn(arch) -> arch2``: an architecture whose network has the same MACs and
    parameters as ``arch``'s, so that :class:`CostCache` builds one network per class."""
    return COST_REPRESENTATIVES.register(space_name, fn)


def table_key_fn(space: SearchSpace) -> TableKeyFn:
    """The table key function of ``space``.

    Raises:
        ConfigError: if the space has none, listing the spaces that have one.
    """
    if space.name in TABLE_KEYS:
        return TABLE_KEYS.get(space.name)
    known = ", ".join(TABLE_KEYS.names()) or "(none)"
    raise ConfigError(
        f"space {space.name!r} has no table key, so it cannot be looked up in a table; "
        f"spaces with one: {known} (add one with register_table_key)"
    )


# ---- tables -----------------------------------------------------------------------------------
class Table:
    """A loaded benchmark table: architecture key -> metric value.

    Args:
        path: CSV or parquet file.
        metric: Metric column; None picks the only numeric column, if there is one.

    Raises:
        ConfigError: for a missing or unreadable file, no architecture column, or an
            unknown or non-numeric metric column.
    """

    def __init__(self, path: str | Path, metric: str | None = None) -> None:
        import pandas as pd

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"table file {str(self.path)!r} not found; pass an existing CSV or parquet file with --table")
        try:
            if self.path.suffix.lower() in (".parquet", ".pq"):
                df = pd.read_parquet(self.path)
            else:
                df = pd.read_csv(self.path)
        except Exception as exc:  # any reader failure is a bad input file
            raise ConfigError(f"cannot read table {str(self.path)!r}: {type(exc).__name__}: {exc}") from None
        columns = [str(c) for c in df.columns]
        arch_cols = [c for c in ARCH_COLUMNS if c in columns]
        if not arch_cols:
            raise ConfigError(
                f"table {str(self.path)!r} has no architecture-string column (one of "
                f"{', '.join(ARCH_COLUMNS)}); its columns: {', '.join(columns)}"
            )
        self.arch_column = arch_cols[0]
        numeric = [c for c in columns if c != self.arch_column and pd.api.types.is_numeric_dtype(df[c])]
        if metric is None:
            if len(numeric) != 1:
                raise ConfigError(
                    f"table {str(self.path)!r} needs --metric to choose a column; numeric columns: "
                    f"{', '.join(numeric) or '(none)'}"
                )
            metric = numeric[0]
        if metric not in columns:
            raise ConfigError(
                f"table {str(self.path)!r} has no column {metric!r}; numeric columns: {', '.join(numeric) or '(none)'}"
            )
        if metric not in numeric:
            raise ConfigError(f"column {metric!r} of table {str(self.path)!r} is not numeric; choose one of: {', '.join(numeric)}")
        self.metric = metric
        keys = df[self.arch_column].astype(str).str.strip()
        values = df[metric].astype(float)
        self.values: dict[str, float] = dict(zip(keys.tolist(), values.tolist()))
        finite = [v for v in self.values.values() if math.isfinite(v)]
        if not finite:
            raise ConfigError(f"column {metric!r} of table {str(self.path)!r} has no finite value")
        self.percent = max(finite) > 1.0 and min(finite) >= 0.0 and max(finite) <= 100.0

    def __len__(self) -> int:
        return len(self.values)

    def lookup(self, key: str) -> float:
        """The metric of ``key``.

        Raises:
            EvaluationError: if the key is not in the table or its value is not finite.
        """
        value = self.values.get(key)
        if value is None:
            raise EvaluationError(f"architecture {key!r} is not in table {str(self.path)!r}")
        if not math.isfinite(value):
            raise EvaluationError(f"architecture {key!r} has no finite {self.metric!r} in table {str(self.path)!r}")
        return value

    def accuracy(self, value: float) -> float:
        """The table value as an accuracy fraction (0..1)."""
        return value / 100.0 if self.percent else value

    def metrics(self, key: str) -> dict[str, float]:
        """``{"accuracy": fraction, <metric column>: raw value}`` of ``key``."""
        raw = self.lookup(key)
        return {"accuracy": self.accuracy(raw), self.metric: raw}

    def best(self) -> tuple[str, float]:
        """The (key, raw value) with the highest metric."""
        key = max((k for k, v in self.values.items() if math.isfinite(v)), key=self.values.__getitem__)
        return key, self.values[key]


_TABLES: dict[tuple[str, float, str | None], Table] = {}


def load_table(path: str | Path, metric: str | None = None) -> Table:
    """A :class:`Table`, cached in memory per (file, modification time, metric)."""
    p = Path(path).expanduser()
    mtime = p.stat().st_mtime if p.is_file() else -1.0
    key = (str(p.resolve()), mtime, metric)
    if key not in _TABLES:
        _TABLES[key] = Table(p, metric)
    return _TABLES[key]


# ---- space context and cost cache --------------------------------------------------------------
def space_arguments(space: SearchSpace) -> dict[str, Any]:
    """The space function's full arguments: its defaults overridden by ``space.kwargs``."""
    return space.arguments()


def _source_digest(fn: Callable[..., Any]) -> str:
    module = sys.modules.get(getattr(fn, "__module__", ""), None)
    try:
        text = inspect.getsource(module) if module is not None else inspect.getsource(fn)
    except (OSError, TypeError):
        text = getattr(fn, "__qualname__", repr(fn))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def space_cost_key(space: SearchSpace, input_shape: Sequence[int]) -> str:
    """Hash of everything the costs of a space's networks depend on."""
    payload = {
        "ref": space.ref,
        "args": space_arguments(space),
        "input_shape": list(input_shape),
        "source": _source_digest(space.fn),
    }
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$CELLBLOCK_CACHE_DIR`` or ``~/.cache/cellblock``."""
    return Path(os.environ.get("CELLBLOCK_CACHE_DIR") or Path.home() / ".cache" / "cellblock")


def compute_costs(space: SearchSpace, arch: Mapping[str, Any], input_shape: Sequence[int]) -> dict[str, int]:
    """``{"macs", "params"}`` of the network ``arch`` builds (one input of ``input_shape``)."""
    from cellblock.evaluators.cost import count_macs, count_params

    model: nn.Module = space.build(arch)
    return {"macs": count_macs(model, input_shape), "params": count_params(model)}


_WORKER: dict[str, Any] = {}


def _worker_init(spec: Mapping[str, Any], input_shape: Sequence[int]) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["space"] = SearchSpace.from_spec(spec)
    _WORKER["shape"] = tuple(input_shape)


def _worker_costs(archs: list[dict[str, Any]]) -> list[tuple[str, dict[str, int]]]:
    return [(arch_id(a), compute_costs(_WORKER["space"], a, _WORKER["shape"])) for a in archs]


class CostCache:
    """MACs and parameter counts of a space's networks, cached on disk.

    Every cost is counted on a built network. When the space registered a cost
    representative (:func:`register_cost_representative`) and ``representatives`` is
    True, architectures of one cost class share the count of their representative.

    Args:
        space: The space (its full arguments and source are part of the cache key).
        input_shape: Input ``(C, H, W)``; default the space's own.
        directory: Cache directory; default :func:`default_cache_dir` ``/ "costs"``.
        representatives: Use the space's cost representative, if it has one.
    """

    def __init__(self, space: SearchSpace, input_shape: Sequence[int] | None = None,
                 directory: str | Path | None = None, representatives: bool = True) -> None:
        self.space = space
        self.rep_fn: CostRepFn | None = None
        if representatives and space.name in COST_REPRESENTATIVES:
            self.rep_fn = COST_REPRESENTATIVES.get(space.name)
        self.input_shape = tuple(input_shape) if input_shape is not None else space.input_shape
        folder = Path(directory) if directory is not None else default_cache_dir() / "costs"
        self.path = folder / f"{space.name}-{space_cost_key(space, self.input_shape)}.json"
        self.costs: dict[str, dict[str, int]] = {}
        self.dirty = False
        if self.path.is_file():
            try:
                self.costs = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.costs = {}  # a corrupt cache is rebuilt

    def __len__(self) -> int:
        return len(self.costs)

    def __contains__(self, arch: Mapping[str, Any]) -> bool:
        return arch_id(arch) in self.costs

    def get(self, arch: Mapping[str, Any]) -> dict[str, int]:
        """``{"macs", "params"}`` of ``arch``: from the cache, else built and counted."""
        aid = arch_id(arch)
        if aid not in self.costs:
            rep = self._representative(arch)
            rid = arch_id(rep)
            if rid not in self.costs:
                self.costs[rid] = compute_costs(self.space, rep, self.input_shape)
            self.costs[aid] = self.costs[rid]
            self.dirty = True
        return dict(self.costs[aid])

    def _representative(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        return dict(arch) if self.rep_fn is None else self.rep_fn(arch)

    def fill(self, archs: Iterable[Mapping[str, Any]], workers: int = 1, chunk: int = 64,
             progress: Callable[[int, int], None] | None = None) -> int:
        """Compute the costs of every missing arch (in ``workers`` processes); return how many."""
        missing = {arch_id(a): dict(a) for a in archs}
        wanted = [a for aid, a in missing.items() if aid not in self.costs]
        if not wanted:
            return 0
        reps = {arch_id(r): r for r in map(self._representative, wanted)}
        todo = [r for rid, r in reps.items() if rid not in self.costs]
        chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
        done = 0
        t0 = time.perf_counter()
        if workers <= 1:
            for part in chunks:
                for a in part:
                    self.get(a)
                done += len(part)
                if progress:
                    progress(done, len(todo))
        else:
            with ProcessPoolExecutor(workers, initializer=_worker_init,
                                     initargs=(self.space.spec(), self.input_shape)) as pool:
                for result in pool.map(_worker_costs, chunks):
                    self.costs.update(result)
                    done += len(result)
                    self.dirty = True
                    if progress:
                        progress(done, len(todo))
        for a in wanted:
            self.get(a)  # every rep is cached now: this only links the arch to its costs
        self.dirty = True
        self.save()
        self._log_fill(len(wanted), len(todo), time.perf_counter() - t0, workers)
        return len(wanted)

    @property
    def log_path(self) -> Path:
        """Side file recording how long each :meth:`fill` took."""
        return self.path.with_suffix(".log.jsonl")

    def _log_fill(self, n: int, built: int, seconds: float, workers: int) -> None:
        entry = {"archs": n, "built": built, "seconds": round(seconds, 2), "workers": workers,
                 "t": time.time()}
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def fill_log(self) -> list[dict[str, Any]]:
        """Entries written by :meth:`fill` (archs filled, networks built, seconds, workers)."""
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def save(self) -> None:
        """Write the cache atomically (if anything changed)."""
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.costs, fh, separators=(",", ":"))
        os.replace(tmp, self.path)
        self.dirty = False


# ---- the evaluator ------------------------------------------------------------------------------
@register_evaluator("table")
class TableEvaluator(Evaluator):
    """Looks the candidate's metric up in ``config['table']`` (column ``config['metric']``).

    ``accuracy`` is the metric as a fraction; the raw value is kept under the column's
    name. An architecture missing from the table raises :class:`EvaluationError` (the
    trial is FAILED). MACs and params are counted by the pipeline from the built network.

    Raises:
        ConfigError: at construction (before the run starts) for a missing table, a
            table without an architecture column or without the metric column, or a
            space without a table key.
    """

    needs_data = False
    needs_model = False

    def __init__(self, ctx: EvalContext) -> None:
        super().__init__(ctx)
        path = ctx.config.get("table")
        if not path:
            raise ConfigError("the table evaluator needs a table file: pass --table PATH (CSV or parquet)")
        self.key_fn = table_key_fn(ctx.space)
        self.table = load_table(path, ctx.config.get("metric"))
        self.cost_cache = CostCache(ctx.space)  # raises a ConfigError without an input_shape
        self._calls = 0

    def costs(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """Cached MACs/params (counted on the built network the first time)."""
        costs = self.cost_cache.get(arch)
        self._calls += 1
        if self._calls % 50 == 0:
            self.cost_cache.save()  # persist new counts now and then (a no-op when none)
        return costs

    def evaluate(self, model: nn.Module | None, arch: Mapping[str, Any], seed: int) -> dict[str, Any]:
        return self.table.metrics(self.key_fn(arch))


def _register_builtin_keys() -> None:
    from cellblock.search_spaces.nb201 import cost_representative, to_nb201_string

    register_table_key("nb201", to_nb201_string)
    register_cost_representative("nb201", cost_representative)


_register_builtin_keys()

__all__ = [
    "ARCH_COLUMNS",
    "COST_REPRESENTATIVES",
    "TABLE_KEYS",
    "CostCache",
    "Table",
    "TableEvaluator",
    "compute_costs",
    "default_cache_dir",
    "load_table",
    "register_cost_representative",
    "register_table_key",
    "space_arguments",
    "space_cost_key",
    "table_key_fn",
]
