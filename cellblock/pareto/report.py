"""``cellblock report``: one self-contained interactive HTML file of a run (``RUN/report.html``).

Plotly's JavaScript is embedded in the file (``include_plotlyjs=True``), so the page works
offline: Pareto fronts (accuracy vs MACs, accuracy vs latency; hover shows the arch and
metrics), hypervolume over trials (objectives normalised by the ideal and nadir of all
completed feasible trials, reference point 1.1 in each), best accuracy over wall time,
and a sortable table of every trial.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.core.fileio import atomic_write_text
from cellblock.records import TABLE_METRICS
from cellblock.records.rundir import RunDir

#: Hypervolume reference point in normalised objective space.
HV_REF = 1.1

_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = th.dataset.order !== 'asc';
    table.querySelectorAll('th').forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.grid > div { flex: 0 0 660px; }
table.sortable { border-collapse: collapse; font-size: 0.85em; }
table.sortable th { cursor: pointer; background: #eee; position: sticky; top: 0; }
table.sortable th, table.sortable td { border: 1px solid #ccc; padding: 2px 6px; }
td.arch { font-family: monospace; font-size: 0.8em; max-width: 48em; overflow-wrap: anywhere; }
tr.pareto { background: #fff3e0; }
"""


def _hover(t: Any) -> str:
    metrics = "<br>".join(
        f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
        for k, v in sorted(t.metrics.items()) if k in TABLE_METRICS
    )
    arch = "<br>".join(f"{k} = {v}" for k, v in t.arch.items())
    return f"<b>trial {t.number}</b> ({t.arch_id})<br>{metrics}<br>{arch}"


def _scatter(trials: Sequence[Any], front_ids: set[str], x: str, title: str, log_x: bool) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for on_front, name, color in ((False, "other trials", "#9e9e9e"),
                                  (True, "Pareto front", "#e65100")):
        pts = [t for t in trials if (t.arch_id in front_ids) == on_front
               and t.value(x) is not None and t.value("accuracy") is not None]
        if on_front:
            pts.sort(key=lambda t: t.value(x))
        fig.add_trace(go.Scatter(
            x=[t.value(x) for t in pts], y=[t.value("accuracy") for t in pts], name=name,
            mode="lines+markers" if on_front else "markers",
            line={"shape": "hv", "color": color},
            marker={"color": color, "size": 9 if on_front else 7},
            text=[_hover(t) for t in pts], hovertemplate="%{text}<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title="validation accuracy",
                      height=420, width=650, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def hypervolume_curve(trials: Sequence[Any], objectives: Sequence[Any]) -> tuple[list[int],
                                                                                 list[float]]:
    """(trial numbers, hypervolume of the feasible completed trials up to each), normalised."""
    from cellblock.pareto import hypervolume, normalize
    from cellblock.pareto.results import trial_matrix

    done = sorted((t for t in trials if t.done), key=lambda t: (t.end_t or 0, t.number))
    ok = [t.feasible_complete for t in done]
    F = trial_matrix(done, objectives)
    finite = np.isfinite(F).all(axis=1) & np.array(ok, dtype=bool)
    if not finite.any():
        return [], []
    G = normalize(F[finite])
    ref = np.full(F.shape[1], HV_REF)
    numbers, values, rows = [], [], []
    k = 0
    for t, use in zip(done, finite):
        if use:
            rows.append(G[k])
            k += 1
        numbers.append(t.number)
        values.append(hypervolume(np.array(rows), ref) if rows else 0.0)
    return numbers, values


def best_over_time(trials: Sequence[Any]) -> tuple[list[float], list[float]]:
    """(seconds since the first trial started, best feasible accuracy so far)."""
    ok = sorted((t for t in trials if t.feasible_complete and t.end_t
                 and t.value("accuracy") is not None),
                key=lambda t: t.end_t)
    starts = [t.start_t for t in trials if t.start_t]
    if not ok or not starts:
        return [], []
    t0, best, xs, ys = min(starts), -1.0, [], []
    for t in ok:
        best = max(best, t.value("accuracy"))
        xs.append(t.end_t - t0)
        ys.append(best)
    return xs, ys


def _line(x: Sequence[float], y: Sequence[float], title: str, xt: str, yt: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=list(x), y=list(y), mode="lines+markers", line={"shape": "hv"}))
    fig.update_layout(title=title, xaxis_title=xt, yaxis_title=yt, height=380, width=650,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def _shown(column: str, v: Any, extra: Sequence[str]) -> Any:
    """A table cell's text: accuracy to 4 decimals, times to 3, other floats whole."""
    if v is None:
        return "-"
    if column == "accuracy":
        return f"{v:.4f}"
    if column in extra:
        return f"{v:.4g}"
    if isinstance(v, float) and column in ("latency_ms", "train_s"):
        return f"{v:,.3f}"
    if isinstance(v, float):
        return f"{v:,.0f}"
    return v


def _table(trials: Sequence[Any], front_ids: set[str], extra: Sequence[str] = ()) -> str:
    from cellblock.core.load import unstable_latency

    metrics = (*TABLE_METRICS, *extra)
    flags = unstable_latency(trials)
    measured = any(t.value("latency_ms") is not None for t in trials)
    cols = ("trial", "status", *metrics, *(("latency_unstable",) if measured else ()), "arch_id",
            "arch")
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = []
    for t in trials:
        flag = (f"yes: {flags[t.number]}" if t.number in flags
                else "no") if t.value("latency_ms") is not None else None
        vals: list[Any] = [t.number, t.status, *(t.value(c) for c in metrics),
                           *([flag] if measured else []),
                           t.arch_id, json.dumps(t.arch, sort_keys=True)]
        cells = []
        for c, v in zip(cols, vals):
            shown = _shown(c, v, extra)
            attr = ' class="arch"' if c == "arch" else ""
            key = "" if v is None else v
            cells.append(
                f'<td{attr} data-v="{html.escape(str(key))}">{html.escape(str(shown))}</td>')
        cls = ' class="pareto"' if t.arch_id in front_ids else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def is_report(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a report this module wrote."""
    return head.startswith(b"<!DOCTYPE html>") and b"<title>cellblock run " in head


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's interactive HTML report (``RUN/report.html`` by default); return its path.

    Raises:
        RunError: if ``run_dir`` is not a run directory.
        ConfigError: if plotly is not installed, or ``out`` would write over a record file
            or a file that is not a cellblock report.
    """
    try:
        import plotly.io as pio
    except ImportError:
        raise ConfigError(
            "the HTML report needs plotly; install it with 'pip install plotly'") from None
    from cellblock.pareto.results import extra_metrics, load_run, summary
    from cellblock.records.rundir import check_out_file

    if out is not None:
        check_out_file(out, is_report)
    data = load_run(run_dir)
    front = data.pareto
    front_ids = {t.arch_id for t in front}
    figs = [_scatter(data.trials, front_ids, "macs",
                     "Accuracy vs MACs (hover for arch and metrics)", True)]
    if any(t.value("latency_ms") is not None for t in data.trials):
        figs.append(_scatter(data.trials, front_ids, "latency_ms", "Accuracy vs latency", True))
    hv_x, hv_y = hypervolume_curve(data.trials, data.objectives)
    figs.append(_line(hv_x, hv_y,
                      f"Hypervolume over trials ({', '.join(o.name for o in data.objectives)}, "
                      f"normalised, ref {HV_REF})", "trial", "hypervolume"))
    bx, by = best_over_time(data.trials)
    figs.append(
        _line(bx, by, "Best accuracy over wall time", "seconds since start",
              "best validation accuracy"))
    divs = [pio.to_html(f, full_html=False, include_plotlyjs=(i == 0),
                        div_id=f"plot{i}") for i, f in enumerate(figs)]
    title = f"cellblock run {data.run_dir.name}"
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<pre>{html.escape(summary(data))}</pre>",
        '<h2>Pareto fronts</h2><div class="grid">', *[f"<div>{d}</div>" for d in divs[:-2]],
        "</div>",
        '<h2>Progress</h2><div class="grid">', *[f"<div>{d}</div>" for d in divs[-2:]], "</div>",
        "<h2>Trials (click a header to sort; Pareto trials highlighted)</h2>",
        _table(data.trials, front_ids, extra_metrics(data)),
        f"<script>{_SORT_JS}</script>", "</body></html>",
    ])
    return atomic_write_text(Path(out) if out else RunDir(data.run_dir).report, page)
