"""The ``table`` evaluator: accuracy looked up in a tabular benchmark, no training.

A table (CSV or parquet) has one row per architecture, keyed by the official
architecture string of its space (NAS-Bench-201: ``|nor_conv_3x3~0|+|...``), with one
or more metric columns. Spaces provide their key with :func:`register_table_key`.

Units: a metric column whose values lie in 0..100 with a maximum above 1 is taken as a
percentage; the trial's ``accuracy`` is then the fraction (value / 100) and the raw
value is kept under the column's own name. A column in 0..1 is used as is.

MACs and parameters come from :class:`~cellblock.evaluators.cost_cache.CostCache` (on
disk, so that the thousands of look-ups of a benchmark do not rebuild networks); its
names are re-exported here. The parsed table is kept once per process (:func:`load_table`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from cellblock.core.errors import ConfigError, EvaluationError
from cellblock.core.registry import Registry
from cellblock.evaluators.base import EvalContext, Evaluator, register_evaluator
from cellblock.evaluators.cost_cache import (
    COST_REPRESENTATIVES,
    CostCache,
    compute_costs,
    default_cache_dir,
    register_cost_representative,
    space_arguments,
    space_cost_key,
)
from cellblock.search_spaces.api import SearchSpace

TableKeyFn = Callable[[Mapping[str, Any]], str]
TABLE_KEYS: Registry[TableKeyFn] = Registry("table key")
# Column names recognised as the architecture key, in order of preference.
ARCH_COLUMNS = ("arch", "arch_str", "arch_string", "architecture")


def register_table_key(space_name: str, fn: TableKeyFn | None = None) -> Any:
    """Register ``fn(arch) -> str``, the official table key of the space ``space_name``.

    Usable as a decorator (``@register_table_key("name")``) or called with ``fn``.
    """
    return TABLE_KEYS.register(space_name, fn)


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
            raise ConfigError(
                f"table file {str(self.path)!r} not found; pass an existing CSV or parquet file "
                "with --table")
        try:
            if self.path.suffix.lower() in (".parquet", ".pq"):
                df = pd.read_parquet(self.path)
            else:
                df = pd.read_csv(self.path)
        except Exception as exc:  # any reader failure is a bad input file
            raise ConfigError(
                f"cannot read table {str(self.path)!r}: {type(exc).__name__}: {exc}") from None
        columns = [str(c) for c in df.columns]
        arch_cols = [c for c in ARCH_COLUMNS if c in columns]
        if not arch_cols:
            raise ConfigError(
                f"table {str(self.path)!r} has no architecture-string column (one of "
                f"{', '.join(ARCH_COLUMNS)}); its columns: {', '.join(columns)}"
            )
        self.arch_column = arch_cols[0]
        numeric = [c for c in columns if c != self.arch_column
                   and pd.api.types.is_numeric_dtype(df[c])]
        if metric is None:
            if len(numeric) != 1:
                raise ConfigError(
                    f"table {str(self.path)!r} needs --metric to choose a column; numeric columns: "
                    f"{', '.join(numeric) or '(none)'}"
                )
            metric = numeric[0]
        if metric not in columns:
            raise ConfigError(
                f"table {str(self.path)!r} has no column {metric!r}; numeric columns: "
                f"{', '.join(numeric) or '(none)'}"
            )
        if metric not in numeric:
            raise ConfigError(
                f"column {metric!r} of table {str(self.path)!r} is not numeric; choose one of: "
                f"{', '.join(numeric)}")
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
            raise EvaluationError(
                f"architecture {key!r} has no finite {self.metric!r} in table {str(self.path)!r}")
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
        key = max((k for k, v in self.values.items() if math.isfinite(v)),
                  key=self.values.__getitem__)
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


# ---- the evaluator ------------------------------------------------------------------------------
@register_evaluator("table")
class TableEvaluator(Evaluator):
    """Looks the candidate's metric up in ``config.table`` (column ``config.metric``).

    ``accuracy`` is the metric as a fraction; the raw value is kept under the column's
    name. An architecture missing from the table raises :class:`EvaluationError` (the
    trial is FAILED). MACs and params come from the :class:`CostCache` (counted on the
    built network the first time), so the pipeline builds no network for a cached one.

    Raises:
        ConfigError: at construction (before the run starts) for a missing table, a
            table without an architecture column or without the metric column, or a
            space without a table key.
    """

    needs_data = False
    needs_model = False

    def __init__(self, ctx: EvalContext) -> None:
        super().__init__(ctx)
        path = ctx.config.table
        if not path:
            raise ConfigError(
                "the table evaluator needs a table file: pass --table PATH (CSV or parquet)")
        self.key_fn = table_key_fn(ctx.space)
        self.table = load_table(path, ctx.config.metric)
        self.cost_cache = CostCache(ctx.space)  # raises a ConfigError without an input_shape
        self._calls = 0

    def costs(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """Cached MACs/params (counted on the built network the first time)."""
        costs = self.cost_cache.get(arch)
        self._calls += 1
        if self._calls % 50 == 0:
            self.cost_cache.save()  # persist new counts now and then (a no-op when none)
        return costs

    def evaluate(self, model: nn.Module | None, arch: Mapping[str, Any], seed: int) -> dict[str,
                                                                                            Any]:
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
