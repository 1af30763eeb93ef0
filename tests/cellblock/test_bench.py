"""``cellblock bench``: harness math, a tiny end-to-end run and bad inputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cellblock.cli import main
from cellblock.core.errors import ConfigError
from cellblock.core.objectives import parse_objectives
from cellblock.records import COMPLETE, FAILED, Trial
from cellblock.run.bench import TrueFront, best_at, hv_ratio_at, parse_budgets


def trial(i: int, acc: float | None, macs: float, status: str = COMPLETE) -> Trial:
    metrics = {"macs": macs} if acc is None else {"accuracy": acc, "macs": macs}
    return Trial(number=i, arch_id=str(i), arch={}, status=status, metrics=metrics)


def test_parse_budgets():
    assert parse_budgets("50, 25,25,100") == [25, 50, 100]
    for bad in ("", "0,5", "a,5", "-3"):
        with pytest.raises(ConfigError, match="budgets"):
            parse_budgets(bad)


def test_best_and_hv_ratio():
    objs = parse_objectives("accuracy,macs")
    # True front in minimisation space: (-0.9, 10) and (-0.5, 2): ideal (-0.9, 2), nadir (-0.5, 10).
    front = TrueFront(objs, np.array([-0.9, 2.0]), np.array([-0.5, 10.0]), 0.0, 2, 2, 0.0)
    front.hv = front.hv_of(np.array([[-0.9, 10.0], [-0.5, 2.0]]))
    # normalised: (0, 1) and (1, 0), ref 1.1: area 1.1*0.1 + 0.1*1.1 - 0.1*0.1 = 0.21
    assert front.hv == pytest.approx(0.21)
    trials = [trial(0, 0.5, 2.0), trial(1, None, 1.0, FAILED), trial(2, 0.9, 10.0),
              trial(3, 0.95, 50.0)]
    assert best_at(trials, [1, 2, 3, 4], "accuracy") == [0.5, 0.5, 0.9, 0.95]
    ratios = hv_ratio_at(trials, [1, 2, 3], front)
    assert ratios[0] == pytest.approx(0.1 * 1.1 / 0.21)
    assert ratios[1] == ratios[0]  # the failed trial adds nothing
    assert ratios[2] == pytest.approx(1.0)


def test_bench_tiny_end_to_end(tmp_path, monkeypatch, capsys, nb201_table):
    monkeypatch.setenv("CELLBLOCK_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    code = main(["bench", "--space", "nb201", "--space-arg", "C=4", "--space-arg", "N=1", "--table",
                 str(nb201_table),
                 "--metric", "cifar100_test_acc", "--strategies", "random,evolution", "--seeds",
                 "2",
                 "--budgets", "10,20", "--out", str(out), "--workers", "1"])
    assert code == 0, capsys.readouterr().err
    with (out / "bench.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["strategy", "seed", "budget", "best", "hv_ratio"]
        rows = list(reader)
    assert len(rows) == 2 * 2 * 2
    with nb201_table.open() as fh:
        optimum = max(float(r["cifar100_test_acc"]) for r in csv.DictReader(fh))
    for r in rows:
        assert 0 < float(r["best"]) <= optimum
        assert 0 < float(r["hv_ratio"]) <= 1.0 + 1e-9
    by = {(r["strategy"], r["seed"], r["budget"]): float(r["best"]) for r in rows}
    assert by[("random", "0", "20")] >= by[("random", "0", "10")]
    md = (out / "bench.md").read_text()
    assert "cellblock bench" in md and f"**{optimum:.4f}**" in md and "hv_ratio" in md
    assert (out / "bench.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--strategies", "random,nope"], "unknown strategy 'nope'"),
        (["--budgets", "10,x"], "budgets"),
        (["--metric", "no_such_column"], "no column"),
        (["--table", "/nonexistent/t.csv"], "not found"),
        (["--objectives", "accuracy,latency_ms"], "not available"),
    ],
)
def test_bench_bad_inputs(tmp_path, capsys, extra, needle, nb201_table):
    args = ["bench", "--table", str(nb201_table), "--metric", "cifar100_test_acc", "--seeds", "1",
            "--budgets", "5", "--out", str(tmp_path / "b")]
    for i in range(0, len(extra), 2):  # later options override earlier ones
        args += extra[i:i + 2]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "b").exists()


def test_regret_and_seed_start():
    import argparse

    from cellblock.cli.bench import command_line
    from cellblock.run.bench import summarize, summarize_regret

    rows = [{"strategy": "s", "seed": 100 + i, "budget": 10, "best": b, "hv_ratio": 0.5}
            for i, b in enumerate((72.0, 73.0))]
    stats = summarize(summarize_regret(rows, 73.5), "best")
    assert stats["s"][10] == pytest.approx((1.0, 0.5))
    args = argparse.Namespace(space="nb201", space_arg=None, table="t.csv", metric=None,
                              strategies="predictive",
                              seeds=20, seed_start=100, budgets="25,50", objectives="accuracy,macs",
                              out="o")
    assert "--seeds 20 --seed-start 100" in command_line(args)
    args.seed_start = 0
    assert "--seed-start" not in command_line(args)


def test_bench_asks_and_evaluates_as_a_table_search(tmp_path, monkeypatch):
    """The bench's pipeline is the table evaluator's, and its ask loop the run loop's: a bench
    run and ``cellblock search --evaluator table`` with the same strategy and seed record the
    same architectures in the same order, with the same outcomes."""
    from cellblock.core import config as config_mod
    from cellblock.evaluators.table import TableEvaluator
    from cellblock.run.bench import run_strategy, table_components, table_of
    from cellblock.run.runner import Runner, prepare
    from cellblock.search_spaces.api import SearchSpace
    from cellblock.search_spaces.nb201 import to_nb201_string

    monkeypatch.setenv("CELLBLOCK_CACHE_DIR", str(tmp_path / "cache"))
    table = tmp_path / "t.csv"  # every 7th architecture missing (its trials fail)
    keys = [to_nb201_string(a) for a in SearchSpace("nb201").enumerate()]
    table.write_text("arch,test_acc\n" + "".join(f"{k},{40 + (i * 7919) % 500 / 10}\n"
                                                  for i, k in enumerate(keys) if i % 7),
                                                  encoding="utf-8")
    objectives = parse_objectives("accuracy,macs")
    comps = table_components("nb201", {"C": 4, "N": 1}, table, "test_acc", objectives)
    assert isinstance(comps.pipeline.evaluator,
                      TableEvaluator) and table_of(comps).metric == "test_acc"
    nsga = {"population_size": 4}
    bench = run_strategy("nsga2", comps.space, objectives, 3, 14, comps.pipeline, nsga)

    cfg = config_mod.resolve({"space": "nb201", "space_args": {"C": 4, "N": 1},
                              "evaluator": "table",
                              "table": str(table), "metric": "test_acc", "strategy": "nsga2",
                              "strategy_args": nsga, "objectives": "accuracy,macs", "seed": 3,
                              "trials": 14, "device": "cpu", "backend": "local",
                              "out": str(tmp_path / "run")})
    searched = Runner(prepare(cfg), progress=False).run()
    assert [t.arch_id for t in bench] == [t.arch_id for t in searched]
    names = ("accuracy", "test_acc", "macs", "params")
    assert [(t.status, t.error, {k: t.metrics.get(k) for k in names}) for t in bench] == \
        [(t.status, t.error, {k: t.metrics.get(k) for k in names}) for t in searched]
    assert len(bench) == 14 and {t.status for t in bench} == {COMPLETE, FAILED}
    assert all(t.metrics["macs"] > 0 for t in bench)
