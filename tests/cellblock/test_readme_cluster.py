"""The README's cluster commands, run as written with two real ``ray start`` nodes and a
driver on this machine, each "machine" with its own home (and so its own copy of the
token), temp dir and ports. Only what cannot be written for every machine is added: the
loopback address for ``HEAD_IP``, free ports and temp dirs, and a small search."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.tune", reason="the ray backend needs ray[tune]")
if not Path("/proc/self/stat").exists():
    pytest.skip("stopping the test's Ray nodes reads /proc (Linux)", allow_module_level=True)

from cellblock.records import COMPLETE, read_events, replay_trials  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"
MACHINES = ("# on the head node", "# on each worker node", "# the driver")


def cluster_block() -> dict[str, list[str]]:
    """The cluster section's console block, split into its machines' command lines."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Running on a cluster"):]
    block = re.search(r"```console\n(.*?)```", section, flags=re.S).group(1)
    out: dict[str, list[str]] = {}
    current = None
    for line in block.splitlines():
        head = next((m for m in MACHINES if line.startswith(m)), None)
        if head:
            current = head
            out[current] = []
        elif line.strip() and current is not None:
            out[current].append(line)
    return out


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run(lines: list[str], home: Path, cwd: Path, timeout: float = 300) -> str:
    script = "set -e\n" + "\n".join(lines)
    env = {**os.environ, "HOME": str(home),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # A user's shell: not the loopback-only switch other Ray tests in this process set.
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{script}\n---\n{out[-4000:]}"
    return out


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(entry.name)] = (int(stat.rpartition(")")[2].split()[1]), cmd)
    return out


def _stop(temp_dirs: list[Path]) -> None:
    """Stop the processes of these Ray nodes: those naming their temp dirs, and their children."""
    procs = _processes()
    mine = {pid for pid, (_, cmd) in procs.items() if any(str(t) in cmd for t in temp_dirs)}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in procs.items() if parent in mine} - mine
        mine |= more
        grew = bool(more)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in mine):
            time.sleep(0.2)


def test_the_cluster_block_has_its_three_machines():
    block = cluster_block()
    assert list(block) == list(MACHINES)
    assert any(line.startswith("ray start --head") for line in block[MACHINES[0]])
    assert all("RAY_AUTH_MODE=token" in " ".join(lines) for lines in block.values())


@pytest.mark.slow
def test_the_readme_cluster_commands_work_with_token_auth(tmp_path):
    block = cluster_block()
    port, agent_a, agent_b = _free_ports(3)
    homes = {m: tmp_path / f"home{i}" for i, m in enumerate(MACHINES)}
    short = Path(tempfile.mkdtemp(prefix="cb-ray-"))  # Ray's socket paths must stay short
    temps = [short / "head", short / "worker"]
    for home in homes.values():
        home.mkdir()
    space = tmp_path / "work"
    space.mkdir()

    def adapt(line: str, machine: str) -> str:
        line = line.replace("HEAD_IP:6379", f"127.0.0.1:{port}")
        line = line.replace("--port 6379", f"--port {port}")
        if line.startswith("ray start --head"):
            line = line.split("#")[0] + (
                f" --node-ip-address 127.0.0.1 --temp-dir {temps[0]} --num-cpus 0 "
                f"--include-dashboard=false "
                f"--dashboard-agent-listen-port {agent_a} --disable-usage-stats"
            )
        elif line.startswith("ray start --address"):
            line += (
                f" --node-ip-address 127.0.0.1 --temp-dir {temps[1]} --num-cpus 2 "
                f"--dashboard-agent-listen-port {agent_b} --disable-usage-stats"
            )
        elif line.startswith("cellblock search"):
            line += (
                " --trials 3 --epochs 1 --device cpu --strategy random --objectives accuracy,macs "
                "--out run --no-progress"
            )
        return line

    try:
        head = [adapt(ln, MACHINES[0]) for ln in block[MACHINES[0]]]
        _run(head, homes[MACHINES[0]], space)
        token = homes[MACHINES[0]] / ".ray" / "auth_token"
        assert token.is_file() and token.read_text().strip()
        for machine in MACHINES[1:]:  # "copy it to every node"
            (homes[machine] / ".ray").mkdir()
            shutil.copy(token, homes[machine] / ".ray" / "auth_token")
        _run([adapt(ln, MACHINES[1]) for ln in block[MACHINES[1]]], homes[MACHINES[1]], space)
        t0 = time.monotonic()
        out = _run([adapt(ln, MACHINES[2]) for ln in block[MACHINES[2]]], homes[MACHINES[2]], space)
        print(f"driver output ({time.monotonic() - t0:.0f} s):\n{out}")
    finally:
        _stop(temps)
        shutil.rmtree(short, ignore_errors=True)
    trials = replay_trials(read_events(space / "run" / "trials.jsonl"))
    assert len(trials) == 3 and all(t.status == COMPLETE for t in trials)
    assert "3 complete" in out
