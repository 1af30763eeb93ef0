"""Where a trial's ``latency_ms`` comes from: measured in a runtime, or predicted by a table.

* ``latency_table`` set: the table's prediction (``latency_source: table`` and the table's
  fingerprint in the record); nothing is timed on the search machine. The table is checked
  against the space when the run is prepared, so a unit it lacks is one error up front.
* else measured on the search device in ``latency_runtime`` (``torch`` by default, through
  :func:`~cellblock.evaluators.latency.measure_latency`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from cellblock.core.errors import ConfigError
from cellblock.evaluators.base import EvalContext

LatencyFn = Callable[[nn.Module, Mapping[str, Any]], dict[str, Any]]


def latency_function(ctx: EvalContext, input_shape: tuple) -> LatencyFn:
    """``fn(model, arch) -> latency metrics`` for the run's config (checked here).

    Raises:
        ConfigError: both a table and a runtime given, or a table that lacks a unit of the space.
        RegistryError: an unknown runtime.
    """
    from cellblock.evaluators.latency.runtimes import get_runtime

    cfg = ctx.config
    table_path = cfg.latency_table
    runtime = cfg.latency_runtime
    if table_path:
        if runtime:
            raise ConfigError("latency_table predicts latency_ms and latency_runtime measures it; "
                              "give "
                              "one of them (the table's runtime is the one it was profiled with)")
        from cellblock.evaluators.latency.table import LatencyTable

        table = LatencyTable(table_path)
        table.check_space(ctx.space)

        def predicted(model: nn.Module, arch: Mapping[str, Any]) -> dict[str, Any]:
            from cellblock.search_spaces.api import arch_id

            return table.metrics(model, input_shape, f"arch {arch_id(arch)}")

        return predicted
    get_runtime(runtime)

    def measured(model: nn.Module, arch: Mapping[str, Any]) -> dict[str, Any]:
        from cellblock.evaluators.latency.runtimes import measure_runtime_latency

        out = measure_runtime_latency(
            model.to(ctx.device), input_shape, runtime, batch_size=cfg.latency_batch_size,
            device=ctx.device, repeats=cfg.latency_repeats,
            max_spread=cfg.latency_max_spread,
        )
        if not runtime:  # records of the default runtime stay as they were
            out.pop("latency_runtime", None)
        return out

    return measured
