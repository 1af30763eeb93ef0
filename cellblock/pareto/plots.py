"""Pareto plots of a run: accuracy vs MACs and accuracy vs latency, written as PNG.

Uses matplotlib's object-oriented API with the Agg canvas only: no display, no pyplot
global state, safe in worker processes and on headless machines.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.pareto import pareto_front
from cellblock.records import COMPLETE

__all__ = ["plot_pareto"]

_GREY = "#9e9e9e"
_FRONT = "#d62728"


def _number(v: Any) -> float | None:
    """``v`` as a finite float, or None (missing, bool, non-numeric, NaN or inf)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _completed(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Completed rows with a finite accuracy, values coerced to float (or None)."""
    out = []
    for row in rows:
        if not isinstance(row, Mapping):
            raise ConfigError(f"each trial row must be a mapping, got {type(row).__name__}")
        if row.get("status") not in (COMPLETE, "COMPLETED"):
            continue
        acc = _number(row.get("accuracy"))
        if acc is None:
            continue
        out.append(
            {
                "arch_id": row.get("arch_id"),
                "accuracy": acc,
                "macs": _number(row.get("macs")),
                "latency_ms": _number(row.get("latency_ms")),
            }
        )
    return out


def _default_front(done: list[dict[str, Any]]) -> set[Any]:
    """Pareto front of max accuracy / min MACs (and min latency when every row has it)."""
    rows = [r for r in done if r["macs"] is not None]
    if not rows:
        return set()
    cols = ["accuracy", "macs"]
    dirs = ["maximize", "minimize"]
    if all(r["latency_ms"] is not None for r in rows):
        cols.append("latency_ms")
        dirs.append("minimize")
    values = [[r[c] for c in cols] for r in rows]
    return {rows[i]["arch_id"] for i in pareto_front(values, dirs)}


def _staircase(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """Attainment staircase of points (min x, max y): best y reached at each x."""
    pts = sorted(zip(xs, ys, strict=True), key=lambda p: (p[0], -p[1]))
    sx: list[float] = []
    sy: list[float] = []
    best = -math.inf
    for x, y in pts:
        if y > best:
            sx.append(x)
            sy.append(y)
            best = y
    return sx, sy


def _panel(ax: Any, done: list[dict[str, Any]], front: set[Any], key: str, label: str) -> None:
    """Draw one accuracy-vs-cost panel, or a note when the cost was never measured."""
    pts = [r for r in done if r[key] is not None]
    ax.set_ylabel("validation accuracy")
    if not pts:
        what = "latency not measured" if key == "latency_ms" else f"{label} not available"
        ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, fontsize=12)
        ax.set_xlabel(label)
        ax.set_xticks([])
        return
    ax.grid(True, alpha=0.3, which="both")
    xs = [r[key] for r in pts]
    ys = [r["accuracy"] for r in pts]
    log_x = min(xs) > 0 and max(xs) > 10 * min(xs)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(f"{label}{' (log scale)' if log_x else ''}")
    ax.scatter(xs, ys, s=18, c=_GREY, alpha=0.7, label=f"completed trials ({len(pts)})")
    fpts = [r for r in pts if r["arch_id"] in front]
    if fpts:
        fx = [r[key] for r in fpts]
        fy = [r["accuracy"] for r in fpts]
        sx, sy = _staircase(fx, fy)
        ax.step(sx + [max(xs)], sy + [sy[-1]], where="post", color=_FRONT, lw=1.5, zorder=2)
        ax.scatter(
            fx,
            fy,
            s=40,
            c=_FRONT,
            edgecolors="black",
            linewidths=0.5,
            zorder=3,
            label=f"Pareto front ({len(fpts)})",
        )
    ax.legend(loc="lower right", fontsize=8)


def plot_pareto(
    rows: Iterable[Mapping[str, Any]],
    out_path: str | Path,
    front_ids: Collection[Any] | None = None,
    title: str | None = None,
) -> Path:
    """Write a two-panel PNG: accuracy vs MACs and accuracy vs latency.

    Args:
        rows: Trial rows with keys ``arch_id``, ``status``, ``accuracy``, ``macs`` and
            optionally ``latency_ms``. Only ``COMPLETE`` rows with a finite accuracy are
            drawn (grey); failed, infeasible and running trials are skipped.
        out_path: PNG file to write; parent folders are created.
        front_ids: ``arch_id`` values on the Pareto front, highlighted and joined by a
            staircase. None computes the front from the completed rows.
        title: Figure title (default ``"Pareto front"``).

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = _completed(rows)
    front = _default_front(done) if front_ids is None else set(front_ids)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(11, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    if not done:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no completed trials", ha="center", va="center", fontsize=16)
    else:
        ax_macs = fig.add_subplot(1, 2, 1)
        ax_lat = fig.add_subplot(1, 2, 2, sharey=ax_macs)
        _panel(ax_macs, done, front, "macs", "MACs")
        _panel(ax_lat, done, front, "latency_ms", "latency (ms)")
        ax_macs.set_title("accuracy vs MACs")
        ax_lat.set_title("accuracy vs latency")
    fig.suptitle(title or "Pareto front")
    fig.tight_layout()
    from cellblock.core.fileio import atomic_write

    atomic_write(out, lambda fh: fig.savefig(fh, format="png"), binary=True)
    return out
