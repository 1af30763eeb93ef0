"""Latency units, runtimes, tables (profile, resume, predict, check) and the search objective."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cellblock.cli import main
from cellblock.core.errors import ConfigError, EvaluationError, RegistryError
from cellblock.evaluators import latency_table as lt
from cellblock.evaluators.latency_table import LatencyTable, check, profile
from cellblock.evaluators.latency_units import trace_units, unit_modules
from cellblock.evaluators.runtimes import RUNTIMES, get_runtime, measure_runtime_latency
from cellblock.search_spaces import SearchSpace

# A tiny blocks skeleton: 2 stages, 2 block types (one of them builds a stage as one module).
TINY = {"stages": 2, "widths": [[4, 8], [8]], "strides": [1, 2], "depth": [1, 2],
        "block_types": ["basic", "dense"], "kernels": [3], "growths": [4], "attentions": ["none"]}
TINY_ARGS = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
FAST = {"warmup": 1, "repeats": 3, "calibration": 2, "progress": False}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    assert "BasicBlock 1x8x8x8 -> 1x" in calls[1].label and calls[1].args[0] == ("tensor", (1, 8, 8, 8), "float32")


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
    key = {n: [u.key for u in trace_units(m, (2, 6, 6))] for n, m in {"a": a, "b": b, "c": c}.items()}
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
    assert fp["runtime"] == "torch" and fp["threads"] == 1 and fp["torch"] == torch.__version__ and fp["name"]
    assert len(table.data["calibration"]) == 2
    arch = archs[0]
    model = space.build(arch)
    total = sum(table.units[k]["ms"] for k in (c.key for c in trace_units(model, (1, 8, 8))))
    assert table.predict(model, (1, 8, 8)) == pytest.approx(total + table.constant_ms)


def test_interrupted_profile_continues_where_it_stopped(tmp_path, monkeypatch):
    space = SearchSpace("blocks", **TINY)
    out = tmp_path / "lut.json"
    real = lt.time_call
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(lt, "time_call", flaky)
    with pytest.raises(KeyboardInterrupt):
        profile(space, "torch", out, **FAST)
    partial = json.loads(out.read_text())
    assert not partial["complete"] and len(partial["units"]) == 4  # overhead + 4 units, 6th call stopped
    with pytest.raises(ConfigError, match="unfinished profile"):
        LatencyTable(out)
    calls["n"] = -10**9
    timed = []
    monkeypatch.setattr(lt, "time_call", lambda *a, **k: timed.append(1) or real(*a, **k))
    table = profile(space, "torch", out, **FAST)
    rounds = 5  # the calibration networks are timed in 5 interleaved rounds
    assert table["complete"] and len(timed) == table["expected_units"] - 4 + rounds * FAST["calibration"]
    for key, unit in partial["units"].items():
        assert table["units"][key] == unit
    with pytest.raises(ConfigError, match="another runtime"):
        profile(space, "onnxruntime", out, **FAST)


def test_table_missing_unit_is_named_before_the_search(tiny_table):
    table = LatencyTable(tiny_table)
    wider = SearchSpace("blocks", **{**TINY, "widths": [[4, 8], [8, 12]]})
    with pytest.raises(ConfigError, match=r"unit .*\(at .*key [0-9a-f]{16}\).* is not in latency table"):
        table.check_space(wider)
    table.check_space(SearchSpace("blocks", **TINY))  # same skeleton: accepted
    model = wider.build({**wider.sample(np.random.default_rng(0)), "stage2.width": 12})
    with pytest.raises(EvaluationError, match="is not in latency table"):
        table.predict(model, (1, 8, 8))


@pytest.mark.parametrize("runtime", ["torch", "torchscript", "onnxruntime"])
def test_runtimes_run_the_same_network(runtime):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(1, 1, 6, 6)
    out = get_runtime(runtime)(model, (x,), torch.device("cpu"))()
    out = out.detach().numpy() if isinstance(out, torch.Tensor) else out[0]
    assert np.allclose(out, model(x).detach().numpy(), atol=1e-5)
    res = measure_runtime_latency(model, (1, 6, 6), runtime, warmup=1, repeats=3)
    assert res["latency_ms"] > 0 and res["latency_runtime"] == runtime
    assert res["latency_device"]["runtime" if runtime != "torch" else "torch"]
    assert model.training is False and set(RUNTIMES.names()) >= {"torch", "torchscript", "onnxruntime"}


def test_unknown_runtime_and_thread_clock_are_user_errors():
    with pytest.raises(RegistryError, match="unknown latency runtime 'tvm'; known: onnxruntime, torch"):
        get_runtime("tvm")
    torch.set_num_threads(2)
    with pytest.raises(ConfigError, match="one compute thread"):
        profile(SearchSpace("blocks", **TINY), "torch", "unused.json", clock="thread", **FAST)


def test_check_reports_rank_and_error_metrics(tiny_table):
    result = check(LatencyTable(tiny_table), SearchSpace("blocks", **TINY), 6, warmup=1, repeats=3,
                   passes=2, progress=False)
    assert result["n"] == 6 and len(result["rows"]) == 6 and -1 <= result["repeat_kendall_tau"] <= 1
    assert all(len(r["measured_passes_ms"]) == 2 for r in result["rows"])
    assert -1 <= result["kendall_tau"] <= 1 and -1 <= result["spearman"] <= 1 and result["mape_pct"] >= 0
    row = result["rows"][0]
    assert row["predicted_ms"] > 0 and row["measured_ms"] > 0


def test_cli_profile_and_check(tmp_path, capsys):
    out = tmp_path / "lut.json"
    args = ["--space", "blocks", *sum((["--space-arg", a] for a in TINY_ARGS), [])]
    assert main(["latency", "profile", *args, "--runtime", "torch", "--out", str(out), "--threads", "1",
                 "--warmup", "1", "--repeats", "3", "--calibration", "2", "--no-progress"]) == 0
    assert "units" in capsys.readouterr().out
    assert main(["latency", "check", "--table", str(out), *args, "--samples", "5", "--warmup", "1",
                 "--repeats", "3", "--no-progress", "--out", str(tmp_path / "check.json")]) == 0
    captured = capsys.readouterr()
    assert "5 networks in torch (1 threads, wall clock, median): Kendall tau" in captured.out
    result = json.loads((tmp_path / "check.json").read_text())
    if result["kendall_tau"] < 0.8:
        assert "warning: Kendall tau" in captured.err


def test_search_uses_the_table_and_records_it(tiny_table, tmp_path):
    run = tmp_path / "run"
    args = ["search", *sum((["--space-arg", a] for a in TINY_ARGS), []), "--trials", "2", "--epochs", "1",
            "--device", "cpu", "--latency-table", str(tiny_table), "--out", str(run), "--no-progress"]
    assert main(args) == 0
    table = LatencyTable(tiny_table)
    space = SearchSpace("blocks", **TINY)
    events = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    archs = {e["trial"]: e["arch"] for e in events if "arch" in e}
    done = [e for e in events if (e.get("metrics") or {}).get("latency_source")]
    assert len(done) == 2
    for e in done:
        m = e["metrics"]
        assert m["latency_source"] == "table" and m["latency_table"]["table_sha256"] == table.sha256[:16]
        assert m["latency_table"]["runtime"] == "torch"
        assert m["latency_ms"] == pytest.approx(table.predict(space.build(archs[e["trial"]]), (1, 8, 8)))


def test_search_with_a_table_lacking_a_unit_exits_2(tiny_table, tmp_path, capsys):
    run = tmp_path / "run"
    wider = [a if not a.startswith("widths=") else "widths=[[4, 8], [8, 16]]" for a in TINY_ARGS]
    rc = main(["search", *sum((["--space-arg", a] for a in wider), []), "--trials", "1", "--epochs", "1",
               "--device", "cpu", "--latency-table", str(tiny_table), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("cellblock: error: unit ") and "not in latency table" in err
    assert len(err.strip().splitlines()) == 1 and not run.exists()
    rc = main(["search", "--latency-table", str(tiny_table), "--latency-runtime", "torch", "--out", str(run)])
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
    assert main(["search", *sum((["--space-arg", a] for a in TINY_ARGS), []), "--trials", "1", "--epochs", "1",
                 "--device", "cpu", "--latency-runtime", "onnxruntime", "--out", str(run), "--no-progress"]) == 0
    events = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    m = next(e["metrics"] for e in events if (e.get("metrics") or {}).get("latency_ms"))
    assert m["latency_runtime"] == "onnxruntime" and m["latency_device"]["onnxruntime"]
    assert m["latency_ms"] > 0 and "latency_source" not in m


def test_cli_measures_an_exported_onnx_file(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from cellblock.evaluators.runtimes import onnx_bytes

    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()).eval()
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes(model, (torch.zeros(1, 1, 6, 6),)))
    assert main(["latency", "measure", "--onnx", str(path), "--warmup", "1", "--repeats", "5", "--threads", "1",
                 "--clock", "thread"]) == 0
    assert "ms median" in capsys.readouterr().out
    assert main(["latency", "measure", "--onnx", str(tmp_path / "missing.onnx")]) == 2
