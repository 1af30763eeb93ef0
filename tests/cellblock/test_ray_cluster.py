"""The ray backend on several Ray nodes (``ray.cluster_utils.Cluster`` on 127.0.0.1): nodes
killed while their trial runs or while idle, a node joining mid-run, the driver killed
with ``kill -9`` and run again, logical GPUs, and a dataset that exists only at the driver.

Trials hold at a gate (a file) in the test space until the test has done its kill, so
nothing depends on timing: the test waits for files, never for a number of seconds.
Every test is marked ``subprocess`` (see ``tests/conftest.py``): a native crash inside
Ray fails that test alone. The driver runs as ``python -m cellblock search``, as a user's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import in_child_test

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray: loopback only
pytest.importorskip("ray.tune", reason="the ray backend needs ray[tune]")

from cellblock.records import COMPLETE, RUNNING, read_events, replay_trials  # noqa: E402

SPACE = '''
import json, os, time
from torch import nn

def space(s, input_shape=(1, 8, 8), num_classes=10, gate=None, probe=None):
    w = s.choice("w", [4, 8, 12, 16])
    k = s.choice("k", [1, 3])
    if not s.build:
        return None
    if gate:
        import ray
        if ray.is_initialized() and ray.get_runtime_context().get_actor_id():
            ctx = ray.get_runtime_context()
            info = {"node": ctx.get_node_id(), "pid": os.getpid(), "arch": f"{w}-{k}",
                    "gpus": [str(g) for g in ray.get_gpu_ids()],
                    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "resources": ctx.get_assigned_resources(),
                    "probe": os.path.exists(probe) if probe else None}
            name = os.path.join(gate, f"start-{w}-{k}-{os.getpid()}-{time.time_ns()}")
            with open(name + ".tmp", "w") as fh:
                json.dump(info, fh)
            os.replace(name + ".tmp", name + ".json")
            while os.path.exists(os.path.join(gate, "hold")):
                time.sleep(0.05)
    return nn.Sequential(nn.Conv2d(input_shape[0], w, k, padding=k // 2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, num_classes))
'''

WAIT_S = 300.0  # generous: a loaded 2-core machine starts Ray workers slowly


@pytest.fixture
def cluster():
    """A Ray cluster on 127.0.0.1 whose head has no CPU (trials run on added nodes only).

    Started in the child pytest, where the test adds and kills its nodes; the parent of a
    ``subprocess`` test starts none (it would stand unused).
    """
    if not in_child_test():
        yield None
        return
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        yield c
    finally:
        c.shutdown()


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """The gate directory; trials hold while ``gate/hold`` exists."""
    path = tmp_path / "gate"
    path.mkdir()
    (path / "hold").touch()
    return path


def _space(tmp_path: Path) -> str:
    (tmp_path / "sp.py").write_text(SPACE)
    return f"{tmp_path / 'sp.py'}:space"


def _driver(space: str, out: Path, address: str, gate: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cellblock", "search", "--space", space, "--backend", "ray",
            "--address", address, "--out", str(out), "--trials", "4", "--epochs", "1",
            "--device", "cpu", "--strategy", "random", "--objectives", "accuracy,macs",
            "--threads-per-trial", "1", "--no-progress", "--space-arg", f"gate={gate}", *extra]


def _wait(what: str, cond: Callable[[], Any], proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"the driver exited ({proc.returncode}) before {what}:\n"
                f"{proc.stdout.read()[-3000:]}"
            )
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _starts(gate: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(gate.glob("start-*.json"))]


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, out[-3000:]
    return out


def _popen(cmd: list[str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd
    )


def _nodes_of(run: Path) -> dict[int, str]:
    return {
        e["trial"]: e["node"]
        for e in read_events(run / "trials.jsonl")
        if e["event"] == "trial_end"
    }


def _all_complete(run: Path, n: int = 4) -> list:
    trials = replay_trials(read_events(run / "trials.jsonl"))
    assert len(trials) == n and all(t.status == COMPLETE for t in trials), [
        (t.status, t.error) for t in trials
    ]
    assert len({t.arch_id for t in trials}) == n  # no duplicate
    return trials


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_node_killed_while_its_trial_runs_the_trial_runs_again_elsewhere(tmp_path, cluster, gate):
    a = cluster.add_node(num_cpus=1)
    b = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    run = tmp_path / "run"
    proc = _popen(_driver(_space(tmp_path), run, cluster.address, gate, "--concurrency", "2"))
    on_b = _wait(
        "a trial on node b", lambda: [s for s in _starts(gate) if s["node"] == b.node_id], proc
    )[0]
    cluster.remove_node(b, allow_graceful=False)  # kill -9 of the node's raylet and workers
    (gate / "hold").unlink()
    _finish(proc)
    trials = _all_complete(run)  # the lost attempt used up none of --trials, none FAILED
    moved = [t for t in trials if f"{t.arch['w']}-{t.arch['k']}" == on_b["arch"]]
    assert len(moved) == 1 and len(moved[0].lost) == 1
    lost = moved[0].lost[0]
    assert lost["attempt"] == 1 and lost["retry"] is True and b.node_id[:12] in lost["node"]
    assert "Actor" in lost["reason"] or "actor" in lost["reason"]
    assert a.node_id[:12] in _nodes_of(run)[moved[0].number]  # it ran again on node a
    assert all(not t.lost for t in trials if t is not moved[0])


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_node_killed_while_idle_loses_nothing(tmp_path, cluster, gate):
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    run = tmp_path / "run"
    proc = _popen(_driver(_space(tmp_path), run, cluster.address, gate, "--concurrency", "1"))
    busy = _wait("the first trial", lambda: _starts(gate), proc)[0]["node"]
    idle = next(n for n in cluster.worker_nodes if n.node_id != busy)
    cluster.remove_node(idle, allow_graceful=False)
    (gate / "hold").unlink()
    _finish(proc)
    trials = _all_complete(run)
    assert not [e for e in read_events(run / "trials.jsonl") if e["event"] == "trial_lost"]
    assert all(busy[:12] in node for node in _nodes_of(run).values()) and len(trials) == 4


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_node_joining_mid_run_gets_trials_with_concurrency_auto(tmp_path, cluster, gate):
    a = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    run = tmp_path / "run"
    proc = _popen(_driver(_space(tmp_path), run, cluster.address, gate, "--concurrency", "auto"))
    _wait("the first trial", lambda: _starts(gate), proc)
    assert {s["node"] for s in _starts(gate)} == {a.node_id}
    c = cluster.add_node(num_cpus=1)  # node a is busy (held): only node c can take a trial
    _wait(
        "a trial on the new node",
        lambda: [s for s in _starts(gate) if s["node"] == c.node_id],
        proc,
    )
    (gate / "hold").unlink()
    _finish(proc)
    _all_complete(run)
    assert any(c.node_id[:12] in node for node in _nodes_of(run).values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_driver_killed_then_run_again_resumes_and_leaves_no_orphan(tmp_path, cluster, gate):
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    run = tmp_path / "run"
    cmd = _driver(_space(tmp_path), run, cluster.address, gate, "--concurrency", "2")
    proc = _popen(cmd)
    started = _wait(
        "two trials", lambda: len({s["pid"] for s in _starts(gate)}) >= 2 and _starts(gate), proc
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = (run / "trials.jsonl").read_bytes()
    # Ray ends the killed driver's job: its trials' worker processes stop, nothing is left running
    _wait(
        "the orphaned trials' workers to stop", lambda: not any(_alive(s["pid"]) for s in started)
    )
    assert (run / "trials.jsonl").read_bytes() == log  # and nothing wrote to the run since
    interrupted = [
        t for t in replay_trials(read_events(run / "trials.jsonl")) if t.status == RUNNING
    ]
    assert len(interrupted) == 2
    (gate / "hold").unlink()
    _finish(_popen(cmd))
    trials = _all_complete(run)
    assert {t.number for t in interrupted} <= {t.number for t in trials}


@pytest.mark.slow
@pytest.mark.subprocess
def test_trials_per_gpu_2_shares_each_logical_gpu_between_two_trials(tmp_path, cluster, gate):
    cluster.add_node(num_cpus=4, num_gpus=2)  # logical GPUs: Ray accepts them on a CPU node
    cluster.wait_for_nodes()
    run = tmp_path / "run"
    cmd = _driver(
        _space(tmp_path), run, cluster.address, gate, "--concurrency", "4", "--trials-per-gpu", "2"
    )
    cmd[cmd.index("--device") + 1] = "auto"  # the GPUs are the cluster's, not the driver's
    proc = _popen(cmd)
    starts = _wait(
        "four trials at once",
        lambda: len({s["pid"] for s in _starts(gate)}) >= 4 and _starts(gate),
        proc,
    )
    (gate / "hold").unlink()
    out = _finish(proc)
    assert "gpu=0.5" in out
    per_trial = {s["pid"]: s for s in starts}.values()
    assert all(s["resources"].get("GPU") == 0.5 and len(s["gpus"]) == 1 for s in per_trial)
    assert all(s["cuda"] == s["gpus"][0] for s in per_trial)  # what Ray set for the trial
    by_gpu: dict[str, int] = {}
    for s in per_trial:
        by_gpu[s["cuda"]] = by_gpu.get(s["cuda"], 0) + 1
    assert sorted(by_gpu.values()) == [2, 2]  # two trials share each of the two GPUs
    _all_complete(run)


def _npz(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((120, 1, 8, 8), dtype=np.float32), y=np.arange(120) % 3)


@pytest.mark.subprocess
@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs unshare -m as root: a directory only the driver sees",
)
def test_a_dataset_and_space_file_only_at_the_driver_reach_the_workers(tmp_path, cluster, gate):
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    private = tmp_path / "private"  # in the driver's own mount namespace: a tmpfs over it
    private.mkdir()
    (tmp_path / "staged").mkdir()
    _npz(tmp_path / "staged" / "mine.npz")
    (tmp_path / "staged" / "sp.py").write_text(SPACE)
    data = private / "mine.npz"
    cmd = _driver(
        f"{private / 'sp.py'}:space",
        tmp_path / "run",
        cluster.address,
        gate,
        "--dataset",
        str(data),
        "--space-arg",
        f"probe={data}",
        "--concurrency",
        "1",
    )
    script = (
        f"mount -t tmpfs none {private} && cp {tmp_path / 'staged'}/* {private}/ && "
        f"exec {' '.join(cmd)}"
    )
    (gate / "hold").unlink()
    proc = _popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    _finish(proc)
    assert not list(private.iterdir())  # outside the driver's namespace the folder is empty
    starts = _starts(gate)
    assert starts and all(s["probe"] is False for s in starts)  # the workers never saw the path
    _all_complete(tmp_path / "run")


def test_cluster_capacity_follows_nodes_and_records_them_on_a_fake_clock():
    from cellblock.run.backends.ray_resources import ClusterCapacity

    now = [0.0]
    table = [
        {
            "NodeID": "a" * 40,
            "Alive": True,
            "NodeManagerAddress": "10.0.0.1",
            "Resources": {"CPU": 4.0},
        },
        {
            "NodeID": "h" * 40,
            "Alive": True,
            "NodeManagerAddress": "10.0.0.9",
            "Resources": {"CPU": 0.0},
        },
    ]
    events: list[dict] = []
    cap = ClusterCapacity(
        {"CPU": 1.0, "GPU": 0.0},
        lambda: [dict(n) for n in table],
        events.append,
        every_s=2.0,
        clock=lambda: now[0],
    )
    assert cap() == 4 and not events
    table.append(
        {
            "NodeID": "b" * 40,
            "Alive": True,
            "NodeManagerAddress": "10.0.0.2",
            "Resources": {"CPU": 2.5, "GPU": 1.0},
        }
    )
    now[0] = 1.9
    assert cap() == 4  # not looked at again before every_s
    now[0] = 2.0
    assert cap() == 6 and [e["event"] for e in events] == ["node_joined"]
    assert events[0]["node"] == "10.0.0.2 bbbbbbbbbbbb"
    table[0].update(Alive=False, DeathReasonMessage="health check failed")
    now[0] = 4.0
    assert cap() == 2
    assert events[-1]["event"] == "node_lost" and events[-1]["node"] == "10.0.0.1 aaaaaaaaaaaa"
    assert events[-1]["reason"] == "health check failed"
