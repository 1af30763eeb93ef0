"""The ranking report: stratified sample, equal-cost baselines, verdict; few-shot routing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cellblock.cli import main
from cellblock.search_spaces import SearchSpace
from cellblock.supernet.baselines import (
    equal_cost_steps,
    param_count,
    sample_stratified,
    verdict,
)
from cellblock.supernet.rank import sample_distinct

SPACE_ARGS = ["stages=2", "widths=[[4,8],[8,12]]", "strides=[1,2]", "stem_width=4",
              "depth=[1,2]", "block_types=[basic,mbconv]", "kernels=[3]", "expansions=[1,2]",
              "attentions=[none]"]
SPACE = dict(stages=2, widths=[[4, 8], [8, 12]], strides=[1, 2], stem_width=4, depth=[1, 2],
             block_types=["basic", "mbconv"], kernels=[3], expansions=[1, 2], attentions=["none"])


def _space_argv() -> list[str]:
    return [x for a in SPACE_ARGS for x in ("--space-arg", a)]


@pytest.fixture(scope="module")
def split_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("few") / "few.pt"
    assert main(["supernet", "train", "--space", "blocks", *_space_argv(), "--epochs", "2",
                 "--batch-size", "256", "--device", "cpu", "--split", "auto",
                 "--split-groups", "4", "--out", str(out)]) == 0
    return out


def test_stratified_sample_spans_the_parameter_range():
    space = SearchSpace("blocks", input_shape=(1, 8, 8), num_classes=10, **SPACE)
    archs = sample_stratified(space, 6, seed=0)
    assert len({json.dumps(a, sort_keys=True) for a in archs}) == 6
    sizes = [param_count(space, a) for a in archs]
    assert sizes == sorted(sizes)  # one per quantile bin, in bin order
    pool = sorted(param_count(space, a) for a in sample_distinct(space, 30, 0))
    # the smallest pick lies in the lowest sixth of the pool, the largest in the highest
    assert sizes[0] <= pool[len(pool) // 6] and sizes[-1] >= pool[-(len(pool) // 6) - 1]
    assert param_count(space,
                       archs[0]) == sum(p.numel() for p in space.build(archs[0]).parameters())


def test_equal_cost_steps_and_verdict():
    assert equal_cost_steps(10.0, [0.5, 0.5]) == 10  # 1 s per step over both architectures
    assert equal_cost_steps(0.5, [0.5, 0.5]) == 0
    line = verdict(0.6, {"params": 0.2, "naswot": None, "standalone_equal_cost": 0.5})
    assert "beats every equal-cost baseline" in line and "search with it" in line
    line = verdict(0.3, {"params": 0.2, "synflow": 0.4, "standalone_equal_cost": 0.5})
    assert "does NOT beat" in line
    assert "standalone_equal_cost instead (tau 0.500: --evaluator train" in line
    assert "search with params instead" in verdict(None, {"params": 0.1})


def test_rank_reports_baselines_noise_ceiling_and_verdict(tmp_path, split_checkpoint, capsys):
    out = tmp_path / "rank"
    argv = ["supernet", "rank", "--supernet", str(split_checkpoint), "--samples", "4",
            "--epochs", "1", "--seeds", "2", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    r = json.loads((out / "rank.json").read_text())
    assert r["stratified"] and r["split_groups"] == 4 and r["split"]
    assert set(r["baselines"]) == {"params", "macs", "synflow", "naswot", "standalone_equal_cost"}
    eq = r["baselines"]["standalone_equal_cost"]
    # its step count is what the supernet's time buys (measured step times of the reference)
    rows = list(csv.DictReader(open(out / "rank.csv", encoding="utf-8")))
    assert eq["steps"] >= 1 and eq["kendall_tau"] is not None or "note" in eq
    assert eq["cost_s"] <= 2.0 * r["supernet_s"] + 1.0
    assert r["verdict"].startswith("verdict: the supernet") and r["verdict"] in err
    assert "noise ceiling" in err and "kendall_tau" in err
    assert "standalone_seed_tau" in r and r["seeds"] == 2
    assert {row["supernet_group"] for row in rows} <= {"0", "1", "2", "3"}
    for row in rows:
        assert row["synflow"] and row["naswot"] and row["equal_cost_accuracy"]
    assert len((out / "equal_cost.jsonl").read_text().splitlines()) == 4
    assert len((out / "standalone.jsonl").read_text().splitlines()) == 8


def test_search_candidates_share_the_supernet_cost_out(tmp_path, split_checkpoint, capsys):
    out = tmp_path / "rank"
    argv = ["supernet", "rank", "--supernet", str(split_checkpoint), "--samples", "4",
            "--epochs", "1", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    default = json.loads((out / "rank.json").read_text())["baselines"]["standalone_equal_cost"]
    assert default["search_candidates"] == 4
    # a search of 4,000 candidates: each of the 4 gets a thousandth of the budget
    assert main([*argv, "--search-candidates", "4000"]) == 0
    eq = json.loads((out / "rank.json").read_text())["baselines"]["standalone_equal_cost"]
    assert eq["search_candidates"] == 4000 and eq["steps"] <= default["steps"] // 1000
    assert eq["steps"] > 0 or "less than one stand-alone step" in eq["note"]
    capsys.readouterr()
    assert main([*argv, "--search-candidates", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cellblock: error: --search-candidates must be at least 1, got 0"]


def test_rank_lr_sets_the_reference_recipe(tmp_path, split_checkpoint, capsys):
    """``--lr`` trains the reference at its own rate (a new cached reference), so supernets
    trained at other rates can be ranked against one reference."""
    out = tmp_path / "rank"
    argv = ["supernet", "rank", "--supernet", str(split_checkpoint), "--samples", "3",
            "--epochs", "1", "--out", str(out), "--device", "cpu", "--no-baselines"]
    assert main(argv) == 0
    first = json.loads((out / "rank.json").read_text())
    assert first["lr"] == torch.load(split_checkpoint, weights_only=True)["recipe"]["lr"]
    assert main([*argv, "--lr", "0.01"]) == 0
    assert json.loads((out / "rank.json").read_text())["lr"] == 0.01
    rows = [json.loads(x) for x in (out / "standalone.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and len({r["recipe"] for r in rows}) == 2  # a second reference
    capsys.readouterr()
    assert main([*argv, "--lr", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr" in err[0] and "positive" in err[0], err


def test_the_evaluator_routes_children_to_their_sub_supernet(tmp_path, split_checkpoint):
    import cellblock
    from cellblock.data import load_dataset
    from cellblock.supernet.checkpoint import load_checkpoint
    from cellblock.supernet.rank import supernet_accuracy
    from cellblock.supernet.train import supernet_from_checkpoint

    run = cellblock.search(
        space="blocks", space_args=SPACE, evaluator="supernet", supernet=str(split_checkpoint),
        strategy="random", trials=4, objectives=["accuracy", "macs"], dataset="digits",
        device="cpu", out=str(tmp_path / "run"), seed=1,
    )
    supernet = supernet_from_checkpoint(load_checkpoint(split_checkpoint))
    data = load_dataset("digits")
    groups = set()
    for t in run.trials:
        assert t.status == "COMPLETE", t.error
        groups.add(supernet.group(t.arch))
        want = supernet_accuracy(supernet, t.arch, data, torch.device("cpu"))
        assert t.metrics["accuracy"] == pytest.approx(want, abs=1e-9)
    assert supernet.split_active and len(supernet.banks) == 4


def test_export_and_train_start_from_the_inherited_weights(tmp_path, split_checkpoint, monkeypatch):
    import cellblock
    from cellblock.export import final_train as ft
    from cellblock.supernet.checkpoint import load_checkpoint
    from cellblock.supernet.train import supernet_from_checkpoint

    supernet = supernet_from_checkpoint(load_checkpoint(split_checkpoint))
    space = SearchSpace("blocks", input_shape=(1, 8, 8), num_classes=10, **SPACE)
    arch = space.sample(np.random.default_rng(4))
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(arch))
    out = tmp_path / "export"
    assert main(["export", "--arch", str(arch_file), "--space", "blocks", *_space_argv(),
                 "--format", "json", "--supernet", str(split_checkpoint), "--out", str(out)]) == 0
    (label,) = [p.name for p in out.iterdir() if p.is_dir()]
    exported = torch.load(out / label / "weights.pt", weights_only=True)
    want = supernet.extract(arch).state_dict()
    assert exported.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(exported[k], v), k
    report = json.loads((out / "roundtrip.json").read_text())
    assert "inherited.pt" in report["exports"][0]["weights"]

    run = tmp_path / "run"
    cellblock.search(space="blocks", space_args=SPACE, trials=1, epochs=1, device="cpu",
                     objectives="accuracy,macs", out=str(run), seed=0, strategy="random")
    seen = {}
    from cellblock.evaluators import training

    real = training.train_and_evaluate

    def spy(model, data, cfg, **kwargs):  # the weights training starts from
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, data, cfg, **kwargs)

    monkeypatch.setattr(training, "train_and_evaluate", spy)
    m = ft.final_train(run, 0, 1, device="cpu", log=lambda s: None,
                       init=f"supernet:{split_checkpoint}")
    assert m["identity"]["init"] == f"supernet:{split_checkpoint}"
    trial_arch = json.loads(json.dumps(m["arch"]))
    for k, v in supernet.extract(trial_arch).state_dict().items():
        assert torch.equal(seen[k], v), k
    assert main(["train", str(run), "--trial", "0", "--epochs", "1", "--init", "ckpt.pt"]) == 2
    assert Path(split_checkpoint).is_file()


def test_a_proxy_that_fails_on_a_network_ranks_it_last():
    from cellblock.supernet.baselines import WORST, proxy_scores

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)

        def forward(self, x):
            raise RuntimeError("no forward here")

    scores = proxy_scores(Broken(), (1, 8, 8), torch.randn(4, 1, 8, 8))
    assert scores["synflow"] == WORST and scores["naswot"] == WORST
    assert scores["synflow_error"] == "RuntimeError: no forward here"
