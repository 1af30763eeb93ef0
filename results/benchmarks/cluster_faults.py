"""Chaos benchmark of the ray backend: a search on 3 worker nodes, one of them killed
(``kill -9`` of its raylet and workers) and replaced by a new node every T seconds, beside
the same search without faults, in the same run.

The cluster is ``ray.cluster_utils.Cluster`` on 127.0.0.1: a head with no CPU (it runs no
trial) and 3 worker nodes of 1 CPU. The search (``--concurrency auto``, ``--epochs``, default 1)
trains candidates of a small space on a user ``.npz`` that exists only at the driver: the
driver runs in its own mount namespace (``unshare -m``, so root) with a tmpfs over the
folder holding the ``.npz`` and the space file, so the workers cannot read them by path
(the space records whether it could: ``probe``).

For each search: COMPLETE of planned, duplicates (architectures finished twice), lost
(planned trials never finished), FAILED for the infrastructure (a FAILED whose error is a
Ray actor/worker/node death) and in all, wall time (and its ratio to the fault-free run),
the attempts lost and re-run (``trial_lost``), and the node deaths: how many nodes were
killed and how many of those appear in the run's records (a ``node_lost`` event or a
``trial_lost`` naming the node).

Usage (root, for ``unshare -m``)::

    .venv/bin/python results/benchmarks/cluster_faults.py [--trials 60] [--kill-every 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray: loopback only
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from cellblock.records import COMPLETE, FAILED, read_events, replay_trials  # noqa: E402

SPACE = '''
import os
from torch import nn

def space(s, input_shape=(1, 8, 8), num_classes=10, probe=None):
    w = s.choice("w", [4, 8, 12, 16, 24, 32])
    k = s.choice("k", [1, 3])
    d = s.integer("d", 1, 3)
    act = s.choice("act", ["relu", "gelu"])
    if not s.build:
        return None
    if probe and os.path.exists(probe):
        raise RuntimeError(f"the driver-only file {probe} is visible here: the benchmark is void")
    layers, c = [], input_shape[0]
    for _ in range(d):
        layers += [nn.Conv2d(c, w, k, padding=k // 2), nn.ReLU() if act == "relu" else nn.GELU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
'''

INFRA_WORDS = ("Actor", "actor", "worker died", "node")


def _write_inputs(staged: Path) -> None:
    staged.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y = np.arange(600) % 4
    x = rng.normal(size=(600, 1, 8, 8)).astype(np.float32) + y[:, None, None, None] * 0.5
    np.savez(staged / "mine.npz", x=x, y=y)
    (staged / "sp.py").write_text(SPACE)


def _search_cmd(private: Path, out: Path, address: str, trials: int, epochs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cellblock",
        "search",
        "--space",
        f"{private / 'sp.py'}:space",
        "--space-arg",
        f"probe={private / 'mine.npz'}",
        "--dataset",
        str(private / "mine.npz"),
        "--backend",
        "ray",
        "--address",
        address,
        "--concurrency",
        "auto",
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
        "--strategy",
        "random",
        "--objectives",
        "accuracy,macs",
        "--device",
        "cpu",
        "--threads-per-trial",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]


def _run_driver(
    staged: Path,
    private: Path,
    out: Path,
    cluster: Any,
    trials: int,
    epochs: int,
    kill_every: float | None,
    seed: int = 0,
) -> tuple[int, str, float, list[tuple[float, str]]]:
    """Run the search; with ``kill_every``, kill a random worker node and add a new one every
    ``kill_every`` seconds while it runs (here, in the main thread: Ray's node start needs it)."""
    cmd = _search_cmd(private, out, cluster.address, trials, epochs)
    script = f"mount -t tmpfs none {private} && cp {staged}/* {private}/ && exec {' '.join(cmd)}"
    rng = random.Random(seed)
    killed: list[tuple[float, str]] = []
    text: list[str] = []
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reader = threading.Thread(target=lambda: text.append(proc.stdout.read()), daemon=True)
    reader.start()
    next_kill = t0 + kill_every if kill_every else None
    while proc.poll() is None:
        if next_kill is not None and time.monotonic() >= next_kill:
            victim = rng.choice(list(cluster.worker_nodes))
            killed.append((time.time(), victim.node_id))
            cluster.remove_node(victim, allow_graceful=False)  # SIGKILL of its raylet and workers
            cluster.add_node(num_cpus=1)
            next_kill = time.monotonic() + kill_every
        time.sleep(0.2)
    wall = time.monotonic() - t0
    reader.join()
    return proc.returncode, "".join(text), wall, killed


def _measure(
    out: Path, planned: int, wall: float, rc: int, killed: list[tuple[float, str]]
) -> dict[str, Any]:
    events = read_events(out / "trials.jsonl")
    trials = replay_trials(events)
    finished = [t for t in trials if t.done]
    ids = [t.arch_id for t in finished]
    failed = [t for t in finished if t.status == FAILED]
    records = [e for e in events if e["event"] in ("node_lost", "trial_lost")]
    seen = [nid for _, nid in killed if any(nid[:12] in (e.get("node") or "") for e in records)]
    return {
        "rc": rc,
        "planned": planned,
        "complete": sum(t.status == COMPLETE for t in finished),
        "duplicates": len(ids) - len(set(ids)),
        "lost": planned - len(finished),
        "failed_infra": sum(any(w in (t.error or "") for w in INFRA_WORDS) for t in failed),
        "failed": len(failed),
        "wall_s": wall,
        "attempts_lost": sum(e["event"] == "trial_lost" for e in events),
        "node_lost_events": sum(e["event"] == "node_lost" for e in events),
        "killed": len(killed),
        "deaths_recorded": len(seen),
        "trial_lost_reasons": sorted(
            {e["reason"].split(":")[0] for e in events if e["event"] == "trial_lost"}
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--kill-every", type=float, default=20.0, help="seconds between node kills (T)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs per trial")
    ap.add_argument("--seed", type=int, default=0, help="seed of the choice of the node killed")
    ap.add_argument("--report", default=str(Path(__file__).with_suffix(".md")))
    args = ap.parse_args()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit(
            "cluster_faults.py needs root and unshare -m (a .npz only the driver sees)"
        )
    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="cb-chaos-"))
    staged, private = tmp / "staged", tmp / "private"
    _write_inputs(staged)
    private.mkdir()
    rows = {}
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    try:
        for _ in range(3):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        for mode in ("fault-free", "chaos"):
            out = tmp / mode
            load0 = os.getloadavg()[0]
            rc, text, wall, killed = _run_driver(
                staged,
                private,
                out,
                cluster,
                args.trials,
                args.epochs,
                args.kill_every if mode == "chaos" else None,
                args.seed,
            )
            row = _measure(out, args.trials, wall, rc, killed)
            row["load"] = (load0, os.getloadavg()[0])
            row["tail"] = text.strip().splitlines()[-1:] if rc else []
            rows[mode] = row
            print(mode, json.dumps(row), flush=True)
    finally:
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    _report(Path(args.report), rows, args)


def _report(path: Path, rows: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    base = rows["fault-free"]["wall_s"]
    lines = [
        "# Chaos benchmark: node failures during a Ray search",
        "",
        f"Command: `.venv/bin/python results/benchmarks/cluster_faults.py --trials {args.trials} "
        f"--kill-every {args.kill_every:g} --epochs {args.epochs} --seed {args.seed}` (as root), "
        "on this 2-core machine shared with other work (load averages below). Cluster: "
        "`ray.cluster_utils.Cluster` on 127.0.0.1, a head with no CPU and 3 worker nodes of 1 "
        "CPU; in the chaos run a random worker node is killed "
        "(`remove_node(allow_graceful=False)`: SIGKILL) and a new one added every "
        f"{args.kill_every:g} s. Search: {args.trials} trials, "
        f"`--concurrency auto --epochs {args.epochs}`, random strategy, a 600-image "
        "`.npz` and the space file in a tmpfs only the driver's mount namespace sees.",
        "",
        "| " + " | ".join(("run", "exit", "COMPLETE / planned", "duplicates", "lost",
                           "FAILED (infra)", "FAILED", "wall s", "wall / fault-free",
                           "attempts lost, re-run", "nodes killed", "deaths in records",
                           "load 1-min (start, end)")) + " |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in rows.items():
        lines.append(
            f"| {mode} | {r['rc']} | {r['complete']} / {r['planned']} | {r['duplicates']} | "
            f"{r['lost']} | "
            f"{r['failed_infra']} | {r['failed']} | {r['wall_s']:.0f} | {r['wall_s'] / base:.2f} | "
            f"{r['attempts_lost']} | {r['killed']} | "
            f"{r['deaths_recorded']} ({r['node_lost_events']} node_lost) | "
            f"{r['load'][0]:.1f}, {r['load'][1]:.1f} |"
        )
    reasons = rows["chaos"]["trial_lost_reasons"]
    lines += ["", f"Kinds of lost attempts in the chaos run: {', '.join(reasons) or 'none'}.", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(path.read_text())


if __name__ == "__main__":
    main()
