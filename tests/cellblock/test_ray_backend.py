"""The ray backend on real Ray instances: a local one started for the run, and a
two-node cluster on 127.0.0.1 shared by the module (started and stopped here).

Every test that runs a Ray driver is marked ``subprocess`` (see ``tests/conftest.py``): its
body runs in a child pytest, so a native crash inside Ray fails that test alone instead of
taking the xdist worker, and every test it still had, down with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SUBPROCESS_FIXTURES, in_child_test

pytest.importorskip("ray.tune", reason="the ray backend needs ray[tune]")

import cellblock  # noqa: E402
from cellblock.cli import main  # noqa: E402
from cellblock.records import COMPLETE, FAILED, PRUNED, read_events  # noqa: E402

SPACE = '''
import os
from torch import nn

def space(s, input_shape=(1, 8, 8), num_classes=10, marks=None, fail=False):
    w = s.choice("w", [4, 8, 12, 16])
    k = s.choice("k", [1, 3])
    d = s.choice("d", [1, 2])
    if not s.build:
        return None
    if fail and w == 8:
        raise ValueError("this candidate is broken")
    if marks and w == 12 and not os.path.exists(os.path.join(marks, f"{k}-{d}")):
        open(os.path.join(marks, f"{k}-{d}"), "w").close()
        os._exit(3)  # the worker process dies mid-trial, on the first attempt only
    layers = [nn.Conv2d(input_shape[0], w, k, padding=k // 2), nn.ReLU()]
    for _ in range(d - 1):
        layers += [nn.Conv2d(w, w, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, num_classes))
'''

CLUSTER = '''
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()  # runs until the test closes stdin
cluster.shutdown()
'''


@pytest.fixture(scope="module")
def space_ref(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("space") / "sp.py"
    path.write_text(SPACE)
    return f"{path}:space"


@pytest.fixture(scope="module")
def cluster():
    """HOST:PORT of a 2-node Ray cluster (1 CPU each) on 127.0.0.1, stopped afterwards.

    In the child pytest of a ``subprocess`` test, the parent's cluster (from the environment).
    """
    if in_child_test():
        yield os.environ[SUBPROCESS_FIXTURES["cluster"]]
        return
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        if not address:
            pytest.fail("the test Ray cluster did not start")
        yield address
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _opts(space_ref, out, **kw):
    base = dict(space=space_ref, trials=4, epochs=1, out=str(out), device="cpu", strategy="random",
                objectives=["accuracy", "macs"], backend="ray", concurrency=2, threads_per_trial=1)
    base.update(kw)
    return base


def _event_keys(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    return sorted({(e["event"], tuple(sorted(e))) for e in read_events(path)})


def test_importing_cellblock_does_not_import_ray():
    code = ("import sys, cellblock, cellblock.run.backends.base, cellblock.run.runner; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
@pytest.mark.subprocess
def test_local_instance_two_concurrent_trials_same_records_as_local(space_ref, tmp_path):
    import ray

    run = cellblock.search(**_opts(space_ref, tmp_path / "ray"))
    assert not ray.is_initialized()  # the instance started for the run is shut down
    assert len(run.trials) == 4 and all(t.status == COMPLETE for t in run.trials)
    local = cellblock.search(**_opts(space_ref, tmp_path / "loc", backend="local", concurrency=1))
    assert _event_keys(tmp_path / "ray" / "trials.jsonl") == _event_keys(
        tmp_path / "loc" / "trials.jsonl"
    )
    # same architectures (same strategy and seed) and the same per-architecture training
    assert {t.arch_id: t.metrics["accuracy"] for t in run.trials} == {
        t.arch_id: t.metrics["accuracy"] for t in local.trials
    }
    starts = sorted(t.start_t for t in run.trials)
    ends = sorted(t.end_t for t in run.trials)
    assert starts[1] < ends[0]  # two trials were in flight at once


@pytest.mark.slow
@pytest.mark.subprocess
def test_cluster_dead_worker_loses_an_attempt_an_exception_fails(space_ref, tmp_path, cluster):
    (tmp_path / "marks").mkdir()
    run = cellblock.search(
        **_opts(
            space_ref,
            tmp_path / "d",
            trials=8,
            address=cluster,
            space_args={"marks": str(tmp_path / "marks"), "fail": True},
        )
    )
    assert len(run.trials) == 8 and len({t.arch_id for t in run.trials}) == 8
    died = [t for t in run.trials if t.arch["w"] == 12]
    assert died and all(
        t.status == COMPLETE for t in died
    )  # re-run: the lost attempt is not a result
    for t in died:
        assert (
            len(t.lost) == 1
            and t.lost[0]["retry"] is True
            and t.lost[0]["node"].startswith("127.0.0.1 ")
        )
        assert "ActorDiedError" in t.lost[0]["reason"] or "died" in t.lost[0]["reason"]
    broken = [t for t in run.trials if t.arch["w"] == 8]  # the candidate's own exception
    assert broken and all(
        t.status == FAILED and "this candidate is broken" in t.error and not t.lost for t in broken
    )
    assert all(
        t.status == COMPLETE and not t.lost for t in run.trials if t.arch["w"] not in (8, 12)
    )
    ends = [e for e in read_events(tmp_path / "d" / "trials.jsonl") if e["event"] == "trial_end"]
    assert all(e["node"].startswith("127.0.0.1 ") for e in ends)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("scheduler", ["asha", "mo-asha"])
def test_schedulers_record_pruned_trials(space_ref, tmp_path, cluster, scheduler):
    run = cellblock.search(
        **_opts(
            space_ref,
            tmp_path / scheduler,
            trials=10,
            epochs=3,
            address=cluster,
            scheduler=scheduler,
            grace_epochs=1,
            reduction_factor=3,
        )
    )
    assert len(run.trials) == 10 and {t.status for t in run.trials} <= {COMPLETE, PRUNED}
    pruned = [t for t in run.trials if t.status == PRUNED]
    assert pruned, "no trial was stopped early"
    for t in pruned:
        assert t.metrics["epochs"] == 1 and 0 <= t.metrics["accuracy"] <= 1
        assert t.metrics["macs"] > 0 and t.metrics["train_s"] > 0
    assert all(t.metrics["epochs"] == 3 for t in run.trials if t.status == COMPLETE)
    assert run.pareto and not {t.arch_id for t in run.pareto} & {t.arch_id for t in pruned}


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cellblock: error: ")
    return err[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
        (["--resources-per-trial", "cpu=1,gpu=1"], "no node of this machine"),
        (["--resources-per-trial", "cpu:1"], "resources_per_trial"),
        (["--resources-per-trial", "cpu=1,cpu=2"], "malformed"),
        (["--scheduler", "asha", "--epochs", "1"], "no rung below epochs=1"),
        (["--scheduler", "hyperband"], "'hyperband' is not offered"),
    ],
)
def test_bad_input_one_line_exit_2_results_untouched(space_ref, tmp_path, capsys, extra, message):
    """Refused before any Ray driver starts (so in this process, not a child pytest)."""
    import ray

    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("existing results")
    argv = [
        "search",
        "--space",
        space_ref,
        "--out",
        str(out),
        "--backend",
        "ray",
        "--trials",
        "2",
        "--epochs",
        "3",
        "--no-progress",
        *extra,
    ]
    assert message in _cli_error(capsys, argv)
    assert not ray.is_initialized()
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "existing results"


@pytest.mark.subprocess
def test_cluster_cannot_give_the_resources(space_ref, tmp_path, capsys, cluster):
    import ray

    argv = [
        "search",
        "--space",
        space_ref,
        "--out",
        str(tmp_path / "x"),
        "--backend",
        "ray",
        "--address",
        cluster,
        "--resources-per-trial",
        "cpu=64",
    ]
    assert f"no node of the Ray cluster at {cluster}" in _cli_error(capsys, argv)
    assert not (tmp_path / "x").exists() and not ray.is_initialized()


def test_pruned_status_is_recorded(tmp_path):
    """PRUNED is a known status and never reaches the Pareto front."""
    from cellblock.core.objectives import parse_objectives
    from cellblock.pareto.results import pareto_trials
    from cellblock.records import STATUSES, Trial

    assert PRUNED in STATUSES
    trials = [
        Trial(0, "a", {}, PRUNED, {"accuracy": 0.99, "macs": 1}),
        Trial(1, "b", {}, COMPLETE, {"accuracy": 0.5, "macs": 10}),
    ]
    assert [t.arch_id for t in pareto_trials(trials, parse_objectives("accuracy,macs"))] == ["b"]
    assert json.loads(json.dumps(trials[0].metrics)) == {"accuracy": 0.99, "macs": 1}


SUPERNET_SPACE = dict(
    stages=2,
    widths=[[4, 8], [8, 12]],
    strides=[1, 2],
    stem_width=4,
    depth=[1, 2],
    block_types=["basic", "mbconv"],
    kernels=[3],
    expansions=[1, 2],
    attentions=["none"],
)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_relative_supernet_path_reaches_the_workers(tmp_path, cluster, monkeypatch):
    """Tune runs trials in other directories: a relative ``--supernet`` (and the prior's
    ``supernet_score``) must still work there."""
    monkeypatch.chdir(tmp_path)
    argv = [
        "supernet",
        "train",
        "--space",
        "blocks",
        "--epochs",
        "1",
        "--batch-size",
        "256",
        "--device",
        "cpu",
        "--out",
        "sn.pt",
    ]
    for k, v in SUPERNET_SPACE.items():
        argv += ["--space-arg", f"{k}={json.dumps(v)}"]
    assert main(argv) == 0
    run = cellblock.search(
        space="blocks",
        space_args=SUPERNET_SPACE,
        evaluator="supernet",
        supernet="sn.pt",
        supernet_prior="macs",
        trials=4,
        out="run",
        device="cpu",
        strategy="random",
        objectives=["supernet_score", "macs"],
        backend="ray",
        concurrency=2,
        threads_per_trial=1,
        address=cluster,
    )
    assert len(run.trials) == 4
    for t in run.trials:
        assert t.status == COMPLETE, t.error
        assert 0 <= t.metrics["supernet_score"] <= 1


def test_a_failed_trial_reports_the_exception_line(tmp_path):
    """Tune's error file is a traceback; the trial's error is its last line, the exception."""
    from types import SimpleNamespace

    from cellblock.run.backends.ray_tune_adapter import _error_text

    path = tmp_path / "error.txt"
    frames = "\n".join(f'  File "/x/f{i}.py", line {i}, in g\n    call_{i}()' for i in range(40))
    path.write_text(
        "Failure # 1 (occurred at 2026-12-07)\nTraceback (most recent call last):\n"
        f"{frames}\ncellblock.core.errors.ConfigError: supernet checkpoint 'sn.pt' not found\n"
    )
    text = _error_text(SimpleNamespace(error_file=str(path)))
    assert text == (
        "Ray trial failed: cellblock.core.errors.ConfigError: supernet checkpoint 'sn.pt' not found"
    )
