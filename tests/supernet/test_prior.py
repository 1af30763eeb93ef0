"""``supernet_score``: a supernet's accuracy fused with a cost prior, in rank and in search."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, rankdata

import cellblock
from cellblock.cli import main
from cellblock.core.errors import ConfigError
from cellblock.data import load_dataset
from cellblock.evaluators.cost import cost_metrics
from cellblock.supernet.baselines import tau_warning, verdict
from cellblock.supernet.checkpoint import load_checkpoint
from cellblock.supernet.evaluator import SupernetEvaluator, fused_reference, supernet_accuracy
from cellblock.supernet.prior import FusedScore, check_prior, ecdf
from cellblock.supernet.train import supernet_from_checkpoint

SPACE = dict(stages=2, widths=[[4, 8], [8, 12]], strides=[1, 2], stem_width=4, depth=[1, 2],
             block_types=["basic", "mbconv"], kernels=[3], expansions=[1, 2], attentions=["none"])
SPACE_ARGV = ["--space-arg", "stages=2", "--space-arg", "widths=[[4,8],[8,12]]",
              "--space-arg", "strides=[1,2]", "--space-arg", "stem_width=4",
              "--space-arg", "depth=[1,2]", "--space-arg", "block_types=[basic,mbconv]",
              "--space-arg", "kernels=[3]", "--space-arg", "expansions=[1,2]",
              "--space-arg", "attentions=[none]"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("prior") / "sn.pt"
    assert main(["supernet", "train", "--space", "blocks", *SPACE_ARGV, "--epochs", "2",
                 "--batch-size", "256", "--device", "cpu", "--out", str(out)]) == 0
    return out


def test_ecdf_counts_ties_half_and_stays_in_bounds():
    ref = np.array([1.0, 2.0, 2.0, 3.0])
    assert ecdf(ref, [0.0, 1.0, 2.0, 2.5, 3.0, 9.0]).tolist() == [0.0, 0.125, 0.5, 0.75, 0.875, 1.0]


def test_fused_score_on_its_own_reference_is_the_mean_rank():
    """On the reference itself the score is an affine map of the mean mid-rank of accuracy
    and cost: its Kendall tau against anything equals that of the plain rank average."""
    rng = np.random.default_rng(0)
    acc = rng.choice([0.1, 0.2, 0.3, 0.5], 30)  # ties, as accuracies on few images have
    cost = rng.integers(1, 10, 30).astype(float)
    target = rng.normal(size=30)
    score = FusedScore.of("macs", acc, cost)
    got = np.array(score.scores(acc, cost))
    brute = (rankdata(acc) + rankdata(cost) - 1) / (2 * 30)  # mid-ranks, as fractions
    assert got.tolist() == brute.tolist()  # exactly: equal rank sums are equal scores
    assert kendalltau(got, target)[0] == pytest.approx(
        kendalltau(rankdata(acc) + rankdata(cost), target)[0])
    # at equal cost the supernet's order decides; at equal accuracy the larger network wins
    assert score(0.5, 5.0) > score(0.2, 5.0) and score(0.3, 9.0) > score(0.3, 2.0)
    assert 0.0 <= score(-1.0, -1.0) <= score(2.0, 99.0) <= 1.0
    assert math.isnan(score(float("nan"), 1.0))


def test_bad_references_and_priors_are_refused():
    with pytest.raises(ValueError, match="as many accuracies as costs"):
        FusedScore.of("macs", [0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        FusedScore.of("macs", [], [])
    with pytest.raises(ValueError, match="finite"):
        FusedScore.of("macs", [0.1, float("nan")], [1.0, 2.0])
    assert check_prior(
        "none") is None and check_prior(None) is None and check_prior("params") == "params"
    with pytest.raises(ConfigError, match="none, macs, params; got 'flops'"):
        check_prior("flops")


def test_the_verdict_names_the_fused_score_when_only_it_beats_every_baseline():
    base = {"params": 0.30, "macs": 0.40, "standalone_equal_cost": 0.28}
    line = verdict(0.35, base, "macs", 0.45)
    assert "does NOT beat" in line and "but supernet+macs (tau 0.450) does" in line
    assert "--supernet-prior macs" in line
    line = verdict(0.35, base, "macs", 0.39)  # neither wins: the best baseline is named
    assert "search with macs instead (tau 0.400: no supernet or training needed" in line
    assert "(tau 0.410: --evaluator proxy --objectives naswot,macs)" in verdict(0.35,
                                                                                {"naswot": 0.41})
    assert "--evaluator train with a short --epochs" in verdict(0.1, {"standalone_equal_cost": 0.2})
    line = verdict(0.50, base, "macs", 0.55)
    assert "search with it" in line and "supernet+macs ranks better still (tau 0.550)" in line
    assert "ranks better still" not in verdict(0.50, base, "macs", 0.45)
    assert verdict(0.35, base, "macs", None) == verdict(0.35, base)


def test_the_tau_warning_leaves_the_advice_to_the_verdict():
    assert tau_warning({"kendall_tau": 0.35}) is None
    plain = tau_warning({"kendall_tau": 0.2})
    assert "--evaluator train" in plain
    judged = tau_warning({"kendall_tau": 0.2, "verdict": verdict(0.2, {"macs": 0.1})})
    assert "0.200 < 0.3" in judged and "verdict above" in judged
    assert "--evaluator train" not in judged
    assert "undefined" in tau_warning({"kendall_tau": None})


def test_rank_reports_the_fused_score(tmp_path, checkpoint, capsys):
    out = tmp_path / "rank"
    argv = ["supernet", "rank", "--supernet", str(checkpoint), "--samples", "5", "--epochs", "1",
            "--out", str(out), "--device", "cpu", "--no-baselines"]
    assert main(argv) == 0
    r = json.loads((out / "rank.json").read_text())
    assert r["fused"]["prior"] == "macs" and r["fused"]["cost_s"] == r["supernet_s"]
    rows = list(csv.DictReader(open(out / "rank.csv", encoding="utf-8")))
    acc = [float(x["supernet_accuracy"]) for x in rows]
    macs = [float(x["macs"]) for x in rows]
    ref = [float(x["standalone_accuracy"]) for x in rows]
    want = (rankdata(acc) + rankdata(macs) - 1) / (2 * len(rows))
    assert [float(x["supernet_score"]) for x in rows] == want.tolist()  # exact: ties stay ties
    tau = kendalltau(want, ref)[0]
    assert r["fused"]["kendall_tau"] == (pytest.approx(tau) if math.isfinite(tau) else None)
    assert "supernet + macs prior" in capsys.readouterr().err
    assert main([*argv, "--prior", "none"]) == 0
    assert "fused" not in json.loads((out / "rank.json").read_text())
    capsys.readouterr()
    assert main([*argv, "--prior", "flops"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "cellblock: error: --supernet-prior must be one of none, macs, params; got 'flops'"]


def test_search_reports_supernet_score_against_the_reference(tmp_path, checkpoint):
    run = cellblock.search(
        space="blocks", space_args=SPACE, evaluator="supernet", supernet=str(checkpoint),
        supernet_prior="params", strategy="random", trials=5,
        objectives=["supernet_score", "macs"], dataset="digits", device="cpu",
        out=str(tmp_path / "run"), seed=2,
    )
    supernet = supernet_from_checkpoint(load_checkpoint(checkpoint))
    data = load_dataset("digits")
    reference = fused_reference(supernet, "params", data, torch.device("cpu"))
    for t in run.trials:
        assert t.status == "COMPLETE", t.error
        assert t.metrics["accuracy"] == pytest.approx(
            supernet_accuracy(supernet, t.arch, data, torch.device("cpu")), abs=1e-9)
        assert t.metrics["supernet_score"] == pytest.approx(
            reference(t.metrics["accuracy"], t.metrics["params"]))
    # outside a pipeline (no known costs) the evaluator counts the cost itself
    run_evaluator = SupernetEvaluator(_context(checkpoint, data, supernet.space))
    t = run.trials[0]
    model = supernet.space.build(t.arch)
    got = run_evaluator.evaluate(model, t.arch, 0)
    assert run_evaluator.known == {} and got["supernet_score"] == pytest.approx(
        reference(got["accuracy"], cost_metrics(model, supernet.space.input_shape)["params"]))


def _context(checkpoint, data, space):
    from cellblock.core.config import RunConfig
    from cellblock.evaluators.base import EvalContext

    config = RunConfig(supernet=str(checkpoint), supernet_prior="params", val_fraction=None)
    return EvalContext(config, space, data, torch.device("cpu"))


def test_supernet_score_needs_the_supernet_evaluator_and_a_prior(tmp_path, checkpoint):
    common = dict(space="blocks", space_args=SPACE, trials=1, dataset="digits", device="cpu",
                  objectives=["supernet_score"])
    with pytest.raises(ConfigError, match="--evaluator supernet with --supernet-prior"):
        cellblock.search(evaluator="proxy", out=str(tmp_path / "a"), **common)
    with pytest.raises(ConfigError, match="--evaluator supernet with --supernet-prior"):
        cellblock.search(evaluator="supernet", supernet=str(checkpoint), out=str(tmp_path / "b"),
                         **common)
    with pytest.raises(ConfigError, match="supernet_prior.*must be one of none, macs, params"):
        cellblock.search(evaluator="supernet", supernet=str(checkpoint), supernet_prior="flops",
                         out=str(tmp_path / "c"), **common)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
