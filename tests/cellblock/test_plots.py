"""Tests of cellblock.pareto.plots: PNGs are written for typical and degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest

from cellblock.core.errors import ConfigError
from cellblock.pareto import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_rows(n: int = 30, latency: bool = True, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        macs = float(10 ** rng.uniform(6, 9))
        acc = float(0.5 + 0.4 * np.log10(macs / 1e6) / 3 + rng.normal(0, 0.05))
        rows.append(
            {
                "arch_id": f"a{i:03d}",
                "status": "COMPLETE",
                "accuracy": acc,
                "macs": macs,
                "latency_ms": macs / 1e7 + rng.uniform(0, 2) if latency else None,
            }
        )
    rows.append({"arch_id": "bad1", "status": "FAILED", "accuracy": None, "macs": 5e7})
    rows.append({"arch_id": "bad2", "status": "RUNNING", "accuracy": None, "macs": None})
    rows.append({"arch_id": "bad3", "status": "INFEASIBLE", "accuracy": 0.99, "macs": 1e6})
    return rows


def read_png(path):
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return imread(path)


def colour_pixels(img, hex_colour, tol=0.08):
    """Pixels of ``img`` (RGB(A) floats) within ``tol`` of ``hex_colour`` in every channel."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img[..., :3] - rgb) < tol).all(axis=-1).sum())


def test_typical_input_writes_png(tmp_path):
    rows = make_rows()
    front = {r["arch_id"] for r in rows[:5]}
    out = plots.plot_pareto(rows, tmp_path / "sub" / "pareto.png", front)
    img = read_png(out)
    assert img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 0.01  # something was drawn
    # the front (red) and the other trials (grey) are really plotted, not just empty axes
    assert colour_pixels(img, plots._FRONT) > 100
    assert colour_pixels(img, plots._GREY) > 100
    empty = read_png(plots.plot_pareto([], tmp_path / "empty.png", []))
    assert colour_pixels(empty, plots._FRONT) == 0


def test_without_latency_and_default_front(tmp_path):
    rows = make_rows(latency=False)
    for r in rows:
        r.pop("latency_ms", None)
    out = plots.plot_pareto(rows, tmp_path / "p.png")
    assert read_png(out).std() > 0.01
    assert colour_pixels(read_png(out), plots._FRONT) > 50  # the computed front is drawn
    done = plots._completed(rows)
    assert {r["arch_id"] for r in done} == {f"a{i:03d}" for i in range(30)}
    front = plots._default_front(done)
    # the computed front is exactly the non-dominated (max accuracy, min MACs) set
    for r in done:
        dominated = any(
            o["accuracy"] >= r["accuracy"]
            and o["macs"] <= r["macs"]
            and (o["accuracy"] > r["accuracy"] or o["macs"] < r["macs"])
            for o in done
        )
        assert (r["arch_id"] in front) == (not dominated)


def test_failed_only_and_empty_input_write_placeholder(tmp_path):
    failed = [{"arch_id": "x", "status": "FAILED", "accuracy": None, "macs": None}]
    a = plots.plot_pareto(failed, tmp_path / "failed.png", set())
    b = plots.plot_pareto([], tmp_path / "empty.png", [])
    for p in (a, b):
        assert p.stat().st_size > 0
        assert read_png(p).std() > 0.001


def test_partial_latency_and_front_without_macs(tmp_path):
    rows = make_rows(n=6)
    rows[0]["latency_ms"] = None
    rows[1]["macs"] = None  # drawn only in the latency panel
    rows[2]["accuracy"] = float("nan")  # not drawn at all
    out = plots.plot_pareto(rows, tmp_path / "partial.png", {"a000", "a001", "zzz"})
    assert read_png(out).std() > 0.01


def test_staircase_is_monotone_envelope():
    sx, sy = plots._staircase([3.0, 1.0, 2.0, 2.0, 4.0], [0.7, 0.5, 0.6, 0.4, 0.65])
    assert sx == [1.0, 2.0, 3.0]
    assert sy == [0.5, 0.6, 0.7]


def test_bad_rows_raise(tmp_path):
    with pytest.raises(ConfigError):
        plots.plot_pareto([("a", 1)], tmp_path / "x.png")
