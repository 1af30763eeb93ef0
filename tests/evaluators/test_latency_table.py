"""Latency units, runtimes, tables (profile, resume, predict, check) and the search objective."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cellblock.cli import main
from cellblock.core.errors import ConfigError, EvaluationError, RegistryError
from cellblock.evaluators.latency.check import check
from cellblock.evaluators.latency.runtimes import get_runtime
from cellblock.evaluators.latency.table import LatencyTable, profile
from cellblock.evaluators.latency.timing import Timing
from cellblock.evaluators.latency.units import trace_units, unit_modules
from cellblock.search_spaces import SearchSpace

# A tiny blocks skeleton: 2 stages, 2 block types (one of them builds a stage as one module).
TINY = {"stages": 2, "widths": [[4, 8], [8]], "strides": [1, 2], "depth": [1, 2],
        "block_types": ["basic", "dense"], "kernels": [3], "growths": [4], "attentions": ["none"]}
TINY_ARGS = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
FAST = {"warmup": 1, "repeats": 3, "calibration": 2, "progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "lut.json"
    torch.set_num_threads(1)
    profile(SearchSpace("blocks", **TINY), "torch", path, **FAST)
    return path


def _keys(space: SearchSpace, arch: dict) -> set[str]:
    return {c.key for c in trace_units(space.build(arch), tuple(space.arguments()["input_shape"]))}


def test_blocks_network_units_are_stem_blocks_and_head():
    space = SearchSpace("blocks", **TINY)
    arch = space.sample(np.random.default_rng(0))
    arch = {k: v for k, v in arch.items() if not k.startswith("stage1.")}
    arch.update({"stage1.block": "basic", "stage1.depth": 2, "stage1.width": 8, "stage1.kernel": 3,
                 "stage1.attention": "none"})
    paths = [p for p, _ in unit_modules(space.build(arch))]
    assert paths[:3] == ["stem", "stages.0.0", "stages.0.1"]
    assert paths[-2:] == ["pool", "fc"]
    calls = trace_units(space.build(arch), (1, 8, 8))
    assert [c.path for c in calls] == paths
    assert "BasicBlock 1x8x8x8 -> 1x" in calls[1].label and calls[1].args[0] == ("tensor",
                                                                                 (1, 8, 8, 8),
                                                                                 "float32")


def test_nb201_cells_are_cut_into_their_operations():
    space = SearchSpace("nb201", C=4, N=1, input_shape=(3, 8, 8))
    arch = {name: "nor_conv_3x3" for name in space.sample(np.random.default_rng(0))}
    calls = trace_units(space.build(arch), (3, 8, 8))
    convs = [c for c in calls if "[nor_conv_3x3]" in c.label]
    assert len(convs) == 3 * 6  # 6 edges in each of the 3 cells
    assert len({c.key for c in convs}) == 3  # one unit per stage (width, resolution)
    assert any(c.path == "stem" for c in calls) and calls[-1].path == "classifier"


def test_unit_keys_follow_structure_and_inputs():
    a = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU())
    b = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU())
    c = nn.Sequential(nn.Conv2d(2, 4, 5, padding=2), nn.ReLU())
    key = {n: [u.key for u in trace_units(m, (2, 6, 6))]
           for n, m in {"a": a, "b": b, "c": c}.items()}
    assert key["a"] == key["b"] and key["a"][0] != key["c"][0] and key["a"][1] == key["c"][1]
    assert trace_units(a, (2, 6, 6))[0].key != trace_units(a, (2, 7, 7))[0].key


def test_profile_covers_every_architecture_of_the_space(tiny_table):
    table = LatencyTable(tiny_table)
    space = SearchSpace("blocks", **TINY)
    archs = list(space.enumerate())
    needed = set().union(*(_keys(space, a) for a in archs))
    assert needed <= set(table.units), "the blocks cover missed a unit"
    assert table.data["complete"] and table.data["coverage"].startswith("exact")
    fp = table.data["fingerprint"]
    assert fp["runtime"] == "torch" and fp["threads"] == 1
    assert fp["torch"] == torch.__version__ and fp["name"]
    assert len(table.data["calibration"]) == 2
    arch = archs[0]
    model = space.build(arch)
    total = sum(table.units[k]["ms"] for k in (c.key for c in trace_units(model, (1, 8, 8))))
    assert table.predict(model, (1, 8, 8)) == pytest.approx(total + table.constant_ms)


def test_interrupted_profile_continues_where_it_stopped(tmp_path, monkeypatch):
    space = SearchSpace("blocks", **TINY)
    out = tmp_path / "lut.json"
    real = Timing.time_one
    calls = {"n": 0}

    def flaky(self, run):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(self, run)

    monkeypatch.setattr(Timing, "time_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        profile(space, "torch", out, **FAST)
    partial = json.loads(out.read_text())
    # overhead + 4 units, 6th call stopped
    assert not partial["complete"] and len(partial["units"]) == 4
    assert partial["reference"]["ms"] > 0 and partial["settings"]["normalise"] == "reference"
    with pytest.raises(ConfigError, match="unfinished profile"):
        LatencyTable(out)
    timed = []
    monkeypatch.setattr(Timing, "time_one", lambda self, run: timed.append(1) or real(self, run))
    table = profile(space, "torch", out, **FAST)
    # the overhead is kept too
    assert table["complete"] and len(timed) == table["expected_units"] - 4
    for key, unit in partial["units"].items():
        assert table["units"][key] == unit
    assert table[
        "reference"] == partial["reference"] and table["overhead_ms"] == partial["overhead_ms"]
    with pytest.raises(ConfigError, match="another runtime"):
        profile(space, "onnxruntime", out, **FAST)
    with pytest.raises(ConfigError, match="another settings"):
        profile(space, "torch", out, **FAST, normalise="none")


def test_table_missing_unit_is_named_before_the_search(tiny_table):
    table = LatencyTable(tiny_table)
    wider = SearchSpace("blocks", **{**TINY, "widths": [[4, 8], [8, 12]]})
    with pytest.raises(ConfigError,
                       match=r"unit .*\(at .*key [0-9a-f]{16}\).* is not in latency table"):
        table.check_space(wider)
    table.check_space(SearchSpace("blocks", **TINY))  # same skeleton: accepted
    model = wider.build({**wider.sample(np.random.default_rng(0)), "stage2.width": 12})
    with pytest.raises(EvaluationError, match="is not in latency table"):
        table.predict(model, (1, 8, 8))


def test_unknown_runtime_and_thread_clock_are_user_errors():
    with pytest.raises(RegistryError,
                       match="unknown latency runtime 'tvm'; known: onnxruntime, torch"):
        get_runtime("tvm")
    torch.set_num_threads(2)
    with pytest.raises(ConfigError, match="one compute thread"):
        profile(SearchSpace("blocks", **TINY), "torch", "unused.json", clock="thread", **FAST)


def _tau(a, b):
    """Kendall's tau by counting pairs (no ties among measured times)."""
    n = len(a)
    signs = [np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i in range(n) for j in range(i)]
    return sum(signs) / len(signs)


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_check_reports_rank_and_error_metrics(tiny_table):
    result = check(LatencyTable(tiny_table), SearchSpace("blocks", **TINY), 6, warmup=1, repeats=3,
                   passes=2, progress=False)
    rows = result["rows"]
    assert result["n"] == 6 and len(rows) == 6
    assert all(len(r["measured_passes_ms"]) == 2 for r in rows)
    assert all(r["measured_ms"] == pytest.approx(np.mean(r["measured_passes_ms"])) for r in rows)
    # the metrics compare each network's prediction with its own measurement
    pred = [r["predicted_ms"] for r in rows]
    meas = [r["measured_ms"] for r in rows]
    assert result["kendall_tau"] == pytest.approx(_tau(pred, meas))
    assert result["spearman"] == pytest.approx(_spearman(pred, meas))
    mape = 100 * np.mean([abs(p - m) / m for p, m in zip(pred, meas)])
    assert result["mape_pct"] == pytest.approx(mape)
    # and the measurement noise compares the second pass with the first
    first = [r["measured_passes_ms"][0] for r in rows]
    second = [r["measured_passes_ms"][1] for r in rows]
    assert result["repeat_kendall_tau"] == pytest.approx(_tau(second, first))
    row = rows[0]
    assert row["predicted_ms"] > 0 and row["measured_ms"] > 0


def test_cli_profile_and_check(tmp_path, capsys):
    out = tmp_path / "lut.json"
    args = ["--space", "blocks", *sum((["--space-arg", a] for a in TINY_ARGS), [])]
    assert main(["latency", "profile", *args, "--runtime", "torch", "--out", str(out), "--threads",
                 "1",
                 "--warmup", "1", "--repeats", "3", "--calibration", "2", "--no-progress"]) == 0
    assert "units" in capsys.readouterr().out
    assert main(["latency", "check", "--table", str(out), *args, "--samples", "5", "--warmup", "1",
                 "--repeats", "3", "--no-progress", "--out", str(tmp_path / "check.json")]) == 0
    captured = capsys.readouterr()
    assert ("5 networks in torch (1 threads, wall clock, median, relative to the reference "
            "network): Kendall tau") in captured.out
    assert "; raw timings: Kendall tau" in captured.out
    result = json.loads((tmp_path / "check.json").read_text())
    if result["kendall_tau"] < 0.8:
        assert "warning: Kendall tau" in captured.err


def test_search_uses_the_table_and_records_it(tiny_table, tmp_path):
    run = tmp_path / "run"
    args = ["search", *sum((["--space-arg", a] for a in TINY_ARGS), []), "--trials", "2",
            "--epochs", "1",
            "--device", "cpu", "--latency-table", str(tiny_table), "--out", str(run),
            "--no-progress"]
    assert main(args) == 0
    table = LatencyTable(tiny_table)
    space = SearchSpace("blocks", **TINY)
    events = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    archs = {e["trial"]: e["arch"] for e in events if "arch" in e}
    done = [e for e in events if (e.get("metrics") or {}).get("latency_source")]
    assert len(done) == 2
    for e in done:
        m = e["metrics"]
        assert m["latency_source"] == "table"
        assert m["latency_table"]["table_sha256"] == table.sha256[:16]
        assert m["latency_table"]["runtime"] == "torch"
        assert m["latency_ms"] == pytest.approx(table.predict(space.build(archs[e["trial"]]),
                                                              (1, 8, 8)))


def test_search_with_a_table_lacking_a_unit_exits_2(tiny_table, tmp_path, capsys):
    run = tmp_path / "run"
    wider = [a if not a.startswith("widths=") else "widths=[[4, 8], [8, 16]]" for a in TINY_ARGS]
    rc = main(["search", *sum((["--space-arg", a] for a in wider), []), "--trials", "1", "--epochs",
               "1",
               "--device", "cpu", "--latency-table", str(tiny_table), "--out", str(run),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("cellblock: error: unit ") and "not in latency table" in err
    assert len(err.strip().splitlines()) == 1 and not run.exists()
    rc = main(["search", "--latency-table", str(tiny_table), "--latency-runtime", "torch", "--out",
               str(run)])
    assert rc == 2 and "give one of them" in capsys.readouterr().err
    rc = main(["search", "--latency-runtime", "tvm", "--out", str(run)])
    assert rc == 2 and "unknown latency runtime 'tvm'" in capsys.readouterr().err


def test_nb201_cover_holds_the_units_of_random_networks(tmp_path):
    space = SearchSpace("nb201", C=4, N=1, input_shape=(3, 8, 8))
    table = profile(space, "torch", tmp_path / "lut.json", **FAST)
    assert table["coverage"].startswith("exact") and table["expected_units"] == 21
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert _keys(space, space.sample(rng)) <= set(table["units"])


CUSTOM = '''
from torch import nn


def tiny(s, input_shape=(1, 6, 6), num_classes=3):
    w = s.choice("width", [2, 4])
    k = s.choice("kernel", [1, 3])
    if not s.build:
        return None
    return nn.Sequential(nn.Conv2d(1, w, k, padding=k // 2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(w * 36, num_classes))
'''


def test_custom_space_without_marks_is_cut_at_its_containers(tmp_path):
    (tmp_path / "tiny_space.py").write_text(CUSTOM)
    space = SearchSpace(f"{tmp_path / 'tiny_space.py'}:tiny")
    paths = [p for p, _ in unit_modules(space.build({"width": 2, "kernel": 3}))]
    assert paths == ["0", "1", "2", "3"]
    table = profile(space, "torch", tmp_path / "lut.json", **FAST)
    assert table["coverage"] == "exact: all 4 architectures"
    assert set().union(*(_keys(space, a) for a in space.enumerate())) == set(table["units"])


def test_search_measures_latency_in_the_runtime_asked_for(tmp_path):
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert main(["search", *sum((["--space-arg", a] for a in TINY_ARGS), []), "--trials", "1",
                 "--epochs", "1",
                 "--device", "cpu", "--latency-runtime", "onnxruntime", "--out", str(run),
                 "--no-progress"]) == 0
    events = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    m = next(e["metrics"] for e in events if (e.get("metrics") or {}).get("latency_ms"))
    assert m["latency_runtime"] == "onnxruntime" and m["latency_device"]["onnxruntime"]
    assert m["latency_ms"] > 0 and "latency_source" not in m


def test_normalised_table_is_checked_on_its_own_scale(tiny_table):
    table = LatencyTable(tiny_table)
    assert table.data["settings"]["normalise"] == "reference" and table.data["reference"]["ms"] > 0
    result = check(table, SearchSpace("blocks", **TINY), 4, warmup=1, repeats=3, progress=False)
    assert result["normalise"] == "reference" and -1 <= result["raw_kendall_tau"] <= 1
    assert all(r["raw_measured_ms"] > 0 and r["measured_ms"] > 0 for r in result["rows"])
    with pytest.raises(ConfigError, match="use --runtime torch"):
        check(table, SearchSpace("blocks", **TINY), 4, runtime="torchscript", progress=False)
    data = {**table.data, "reference": {**table.data["reference"], "network": "old/0"}}
    with pytest.raises(ConfigError, match="profile the table again"):
        lt_timing(data)


def lt_timing(data):
    from cellblock.evaluators.latency.table import table_timing

    return table_timing(data, torch.device("cpu"))


def test_cli_measures_an_onnx_file_on_a_tables_scale(tmp_path, tiny_table, capsys):
    pytest.importorskip("onnxruntime")
    from cellblock.evaluators.latency.runtimes import onnx_bytes

    space = SearchSpace("blocks", **TINY)
    lut = tmp_path / "lut.json"
    profile(space, "onnxruntime", lut, **FAST)
    model = space.build(space.sample(np.random.default_rng(0))).eval()
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes(model, (torch.zeros(1, 1, 8, 8),)))
    assert main(["latency", "measure", "--onnx", str(path), "--table", str(lut), "--warmup", "1",
                 "--repeats", "10"]) == 0
    out = capsys.readouterr().out
    assert "relative to the table's reference network" in out
    assert "comparable with the predictions" in out
    assert main(["latency", "measure", "--onnx", str(path), "--table", str(tiny_table)]) == 2
    assert "measure --onnx compares with an onnxruntime table" in capsys.readouterr().err


def test_prediction_adds_each_kinds_fitted_cost(tiny_table, tmp_path):
    data = json.loads(tiny_table.read_text())
    # 2 networks: too few
    assert data["calibration_fit"]["model"] == "constant" and data["kind_ms"] == {}
    space = SearchSpace("blocks", **TINY)
    model = space.build(space.sample(np.random.default_rng(1)))
    calls = trace_units(model, (1, 8, 8))
    kind = calls[1].label.split(" ")[0]
    data["kind_ms"] = {kind: 0.5}
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(data))
    extra = 0.5 * sum(c.label.split(" ")[0] == kind for c in calls)
    assert LatencyTable(path).predict(model, (1, 8, 8)) == pytest.approx(
        LatencyTable(tiny_table).predict(model, (1, 8, 8)) + extra)


def test_a_table_from_before_normalisation_is_measured_raw(tiny_table):
    data = json.loads(tiny_table.read_text())
    data["settings"].pop("normalise")
    data.pop("reference")
    timing = lt_timing(data)
    assert not timing.normalised and timing.normalise == "none" and timing.clock == "wall"
