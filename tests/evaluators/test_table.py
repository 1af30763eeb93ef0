"""The table evaluator, table loading and the on-disk cost cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellblock.cli import main
from cellblock.core import config as config_mod
from cellblock.core.errors import ConfigError, EvaluationError
from cellblock.evaluators.table import CostCache, Table, TableEvaluator, compute_costs, load_table
from cellblock.records import COMPLETE, FAILED
from cellblock.run.runner import Runner, prepare
from cellblock.search_spaces import SearchSpace
from cellblock.search_spaces.nb201 import EDGE_NAMES, to_nb201_string


def uniform(op: str) -> dict[str, str]:
    return {name: op for name in EDGE_NAMES}


@pytest.fixture
def small_table(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    rows = [(to_nb201_string(uniform(op)), acc) for op, acc in
            [("none", 10.0), ("skip_connect", 30.5), ("nor_conv_1x1", 60.25),
             ("nor_conv_3x3", 70.0)]]
    path.write_text("arch,test_acc,name\n" + "".join(f"{k},{v},x\n" for k, v in rows),
                    encoding="utf-8")
    return path


def test_table_percent_lookup_and_missing(small_table):
    table = Table(small_table, "test_acc")
    assert table.percent and len(table) == 4 and table.arch_column == "arch"
    key = to_nb201_string(uniform("nor_conv_1x1"))
    assert table.metrics(key) == {"accuracy": pytest.approx(0.6025), "test_acc": 60.25}
    assert table.best() == (to_nb201_string(uniform("nor_conv_3x3")), 70.0)
    with pytest.raises(EvaluationError, match="not in table"):
        table.lookup(to_nb201_string(uniform("avg_pool_3x3")))
    assert Table(small_table).metric == "test_acc"  # the only numeric column


def test_fraction_column_is_kept(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(f"arch_str,acc\n{to_nb201_string(uniform('none'))},0.5\n", encoding="utf-8")
    table = Table(path, "acc")
    assert not table.percent
    assert table.metrics(to_nb201_string(uniform("none")))["accuracy"] == 0.5


@pytest.mark.parametrize(
    ("content", "metric", "needle"),
    [
        ("key,acc\na,1\n", "acc", "architecture-string column"),
        ("arch,acc\na,1\n", "nope", "no column 'nope'"),
        ("arch,acc,name\na,1,x\n", "name", "not numeric"),
        ("arch,a,b\nx,1,2\n", None, "needs --metric"),
    ],
)
def test_bad_tables(tmp_path, content, metric, needle):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=needle):
        Table(path, metric)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_table(tmp_path / "none.csv")


def test_parquet(tmp_path, small_table):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    pd.read_csv(small_table).to_parquet(path)
    assert Table(path, "test_acc").metrics(to_nb201_string(uniform("none")))["test_acc"] == 10.0


def test_prepare_without_data_and_failed_missing_arch(tmp_path, small_table, monkeypatch):
    cfg = config_mod.resolve({
        "space": "nb201", "space_args": {"C": 4, "N": 1}, "evaluator": "table",
        "table": str(small_table), "metric": "test_acc", "strategy": "random",
        "objectives": "accuracy,macs", "trials": 2, "out": str(tmp_path / "run"),
    })
    prepared = prepare(cfg)
    assert isinstance(prepared.pipeline.evaluator, TableEvaluator)
    assert prepared.pipeline.input_shape == (3, 32, 32)
    good = prepared.pipeline(uniform("nor_conv_3x3"), seed=0)
    assert good.status == COMPLETE
    assert good.metrics["accuracy"] == pytest.approx(0.70) and good.metrics["test_acc"] == 70.0
    assert good.metrics["macs"] > 0 and good.metrics["params"] > 0
    bad = prepared.pipeline(uniform("avg_pool_3x3"), seed=0)
    assert bad.status == FAILED and "not in table" in bad.error
    trials = Runner(prepared, progress=False).run()
    assert len(trials) == 2


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"table": None}, "needs a table"),
        ({"metric": "missing_col"}, "no column"),
        ({"space": "blocks"}, "no table key"),
    ],
)
def test_config_errors_before_run(tmp_path, small_table, extra, needle):
    cfg = config_mod.resolve({"space": "nb201", "evaluator": "table", "table": str(small_table),
                              "metric": "test_acc", "out": str(tmp_path / "run"), **extra})
    with pytest.raises(ConfigError, match=needle):
        prepare(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_missing_table_exits_2(tmp_path, capsys):
    code = main(["search", "--space", "nb201", "--evaluator", "table", "--table",
                 str(tmp_path / "x.csv"),
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not found" in err[0]
    assert not (tmp_path / "run").exists()


def test_cost_cache_on_disk(tmp_path):
    space = SearchSpace("nb201", C=4, N=1)
    cache = CostCache(space, directory=tmp_path, representatives=False)
    arch = space.sample(np.random.default_rng(0))
    first = cache.get(arch)
    assert first == compute_costs(space, arch, (3, 32, 32))
    cache.save()
    again = CostCache(SearchSpace("nb201", C=4, N=1, input_shape=(3, 32, 32)), directory=tmp_path)
    assert again.path == cache.path and arch in again and again.get(arch) == first
    other = CostCache(SearchSpace("nb201", C=8, N=1), directory=tmp_path)
    assert other.path != cache.path and arch not in other


def test_cost_cache_fill_with_representatives(tmp_path):
    space = SearchSpace("nb201", C=4, N=1)
    archs = [space.sample(np.random.default_rng(i)) for i in range(6)]
    cache = CostCache(space, directory=tmp_path)
    assert cache.fill(archs, workers=1) == len({tuple(a.values()) for a in archs})
    assert cache.fill_log()[-1]["built"] <= 28
    for a in archs[:2]:
        assert cache.get(a) == compute_costs(space, a, (3, 32, 32))


def test_cli_search_end_to_end(tmp_path, capsys, nb201_table):
    out = tmp_path / "run"
    code = main(["search", "--space", "nb201", "--space-arg", "num_classes=100", "--evaluator",
                 "table",
                 "--table", str(nb201_table), "--metric", "cifar100_test_acc", "--strategy",
                 "random",
                 "--trials", "6", "--objectives", "accuracy,macs", "--out", str(out),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    from cellblock.pareto.results import load_run

    run = load_run(out)
    done = [t for t in run.trials if t.status == COMPLETE]
    assert len(done) == 6
    table = load_table(nb201_table, "cifar100_test_acc")
    for t in done:
        raw = table.lookup(to_nb201_string(t.arch))
        assert t.metrics["cifar100_test_acc"] == raw
        assert t.metrics["accuracy"] == pytest.approx(raw / 100)
        assert 7_000_000 < t.metrics["macs"] < 221_000_000
