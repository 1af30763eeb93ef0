"""Export round trips: JSON, torch-only source (clean interpreter), TorchScript, ONNX."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import cellblock
from cellblock.cli import main
from cellblock.core.errors import ExportError
from cellblock.export import export_items, item_from_arch_file, items_from_run, select_trials
from cellblock.export.codegen import generate_source, trace
from cellblock.pareto.results import load_run

TINY = {"stages": 2, "widths": [[8], [8, 12]], "strides": [1, 2], "depth": [1, 1],
        "block_types": ["basic", "mbconv", "inception", "dense"],
        "attentions": ["none", "se", "eca"],
        "kernels": [3], "expansions": [1, 2], "growths": [4], "stem_width": 8}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    cellblock.search(space="blocks", space_args=TINY, trials=3, epochs=1,
                     objectives="accuracy,macs",
                     device="cpu", out=str(out), seed=1, strategy="random")
    return out


@pytest.mark.slow
def test_all_formats_round_trip(run_dir, tmp_path):
    data = load_run(run_dir)
    trials = select_trials(data)
    report = export_items(items_from_run(run_dir, trials), tmp_path,
                          ["json", "pytorch", "torchscript", "onnx"])
    saved = json.loads((tmp_path / "roundtrip.json").read_text())
    assert saved["ok"] and report["ok"]
    fmts = saved["exports"][0]["formats"]
    for name, r in fmts.items():
        assert r["params_ok"] and r["macs_ok"] and r["outputs_ok"], name
        assert r["max_abs_diff"] <= 1e-5
    assert fmts["pytorch"]["imports"] == ["from __future__ import annotations", "import torch"]
    assert fmts["pytorch"]["cellblock_imported"] is False
    assert fmts["onnx"]["opset"] >= 17 and fmts["onnx"]["initializers_ok"]
    src = (tmp_path / saved["exports"][0]["label"] / "model.py").read_text()
    assert "cellblock" not in src.split('"""', 2)[2].split("META")[0]  # no cellblock import


def test_every_block_and_attention_traces_to_source():
    from cellblock.search_spaces.api import SearchSpace

    space = SearchSpace("blocks")
    import numpy as np

    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        arch = space.sample(rng)
        model = space.build(arch).eval()
        seen |= {arch[k] for k in arch if k.endswith((".block", ".attention"))}
        ns: dict = {}
        exec(compile(generate_source(model, (1, 8, 8)), "model.py", "exec"), ns)
        net = ns["Net"]()
        net.load_state_dict(model.state_dict())
        x = torch.randn(2, 1, 8, 8)
        assert torch.equal(net.eval()(x), model(x))
    assert {"se", "eca", "dense", "inception"} <= seen


def test_untraceable_module_is_named():
    class Bad(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    net = nn.Sequential(nn.Conv2d(1, 2, 3), Bad())
    with pytest.raises(ExportError, match=r"'1' \(Bad\)"):
        trace(net)


def test_filters_and_selection_cli(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--max-params", "10", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no completed, feasible trial" in err[0]
    data = load_run(run_dir)
    knee = select_trials(data, knee=True)
    assert len(knee) == 1 and knee[0] in data.pareto
    assert main(["export", str(run_dir), "--trial", "99", "--out", str(tmp_path / "y")]) == 2


@pytest.mark.slow
def test_arch_file_export_and_mismatch_is_an_error(tmp_path, monkeypatch):
    arch_json = tmp_path / "a.json"
    import numpy as np

    from cellblock.search_spaces.api import SearchSpace

    space = SearchSpace("blocks", **TINY)
    arch_json.write_text(json.dumps(space.sample(np.random.default_rng(3))))
    args = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
    argv = ["export", "--arch", str(arch_json), "--space", "blocks", "--format", "json,pytorch",
            "--out", str(tmp_path / "o")]
    for a in args:
        argv += ["--space-arg", a]
    assert main(argv) == 0
    # a wrong reference output must fail the round trip (exit 2), not warn
    item = item_from_arch_file(arch_json, "blocks", TINY)
    import cellblock.export.exporter as ex

    real = ex.make_reference

    def skewed(it):
        ref = real(it)
        ref.y = ref.y + 1e-3
        return ref

    monkeypatch.setattr(ex, "make_reference", skewed)
    with pytest.raises(ExportError, match="outputs_ok"):
        export_items([item], tmp_path / "bad", ["pytorch"])
    assert json.loads((tmp_path / "bad" / "roundtrip.json").read_text())["ok"] is False


@pytest.mark.slow
def test_reexport_after_train_is_refused_then_replaces_the_directory_whole(run_dir, tmp_path,
                                                                           capsys):
    """Issue 16: a second export into a used directory never mixes files, and picks up the
    weights that ``cellblock train`` wrote in between."""
    from cellblock.export.final_train import final_train, weights_path

    out = tmp_path / "exp"
    assert main(
        ["export", str(run_dir), "--trial", "1", "--format", "json,pytorch", "--out",
         str(out)]) == 0
    stale = out / "left_over.txt"
    stale.write_text("from an earlier export")
    first = json.loads((out / "roundtrip.json").read_text())
    assert first["exports"][0]["weights"].startswith("untrained")
    assert "cellblock train" in capsys.readouterr().out  # tells how to get trained weights
    final_train(run_dir, 1, 1, device="cpu", log=lambda s: None)
    assert weights_path(run_dir, 1).is_file()
    argv = ["export", str(run_dir), "--trial", "1", "--format", "json,pytorch", "--out", str(out)]
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err and stale.exists()  # refused: nothing touched
    assert main(argv + ["--force"]) == 2  # issue 28: --force replaces only what the export wrote
    assert "left_over.txt" in capsys.readouterr().err and stale.exists()
    stale.unlink()
    assert main(
        ["export", str(run_dir), "--trial", "1", "--format", "json", "--out", str(out),
         "--force"]) == 0
    second = json.loads((out / "roundtrip.json").read_text())
    assert second["ok"] and second["exports"][0]["weights"].startswith("trained")
    assert not (out / "trial_1" / "model.py").exists()  # the old directory was replaced as a whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exp.")]  # no temp dirs left


@pytest.mark.slow
def test_format_with_missing_package_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys,
                                                                    monkeypatch):
    from cellblock.export import formats

    monkeypatch.setitem(formats.REQUIRES, "onnx", (("no_such_package_cellblock",), "onnx"))
    out = tmp_path / "o"
    assert main(
        ["export", str(run_dir), "--trial", "0", "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'cellblock[onnx]'" in err
    assert not out.exists()
    # by default, formats whose packages are missing are skipped with a note
    assert main(["export", str(run_dir), "--trial", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "skipping onnx" in text
    assert "onnx" not in json.loads((out / "roundtrip.json").read_text())["exports"][0]["formats"]


def test_one_clean_interpreter_serves_every_check_and_names_a_file_that_fails(tmp_path):
    """A broken file is an error naming it; the next check runs in the same interpreter, which
    cannot import cellblock."""
    from cellblock.export.clean_check import CleanInterpreter
    from cellblock.export.verify import Reference

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.randn(2, 1, 4, 4)
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.jit.script(net).save(str(good))
    bad.write_bytes(b"not a torchscript file")
    with torch.no_grad():
        ref = Reference(None, net, (1, 4, 4), 0, 0, x, net(x), "")
    with CleanInterpreter() as interp:
        with pytest.raises(ExportError, match="torchscript export failed to load in a clean "
                                              "interpreter: .*Error"):
            interp.check("torchscript", bad, ref)
        info, y = interp.check("torchscript", good, ref)
        proc = interp._proc
        info2, _ = interp.check("torchscript", good, ref)
        assert interp._proc is proc and proc.poll() is None  # the same one, still running
    assert proc.poll() == 0  # closed: it ended at the end of its input
    assert torch.allclose(y, ref.y, atol=1e-6) and info == info2
    assert info["params"] == sum(p.numel() for p in net.parameters())
    assert info["macs"] == 2 * 2 * 2 * 9 + 8 * 3 and info["cellblock_modules"] == []
