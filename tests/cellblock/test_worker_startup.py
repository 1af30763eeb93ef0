"""The process backend's workers: forked from a preloaded server that never touched CUDA or
torch's threads, started before the first trial, reused for every trial, and set up per
trial (threads, environment) as spawned ones were."""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cellblock.records import COMPLETE, Trial
from cellblock.run import config as config_mod
from cellblock.run.backends import startup
from cellblock.search_spaces.api import arch_id
from tests.spaces import conv_space, write_space

pytestmark = pytest.mark.skipif(not startup.has_forkserver(), reason="no forkserver here")

PROBE = ("(__import__('os').getpid(), __import__('os').getppid(), "
         "__import__('torch').cuda.is_initialized())")


def _threads(n: int) -> str:
    return (f"(__import__('cellblock.core.threads', fromlist=['x']).apply_threads({n}), "
            "__import__('torch').get_num_threads(), __import__('os').getpid())[1:]")


def test_workers_fork_from_a_server_with_one_thread_and_no_cuda():
    context = startup.pool_context()
    assert context.get_start_method() == "forkserver"
    with cf.ProcessPoolExecutor(1, mp_context=context) as pool:
        pid, server, cuda = pool.submit(eval, PROBE).result(timeout=300)
    assert server != os.getpid() and pid != server  # forked by the server, not by us
    assert not cuda
    # the server imported torch and cellblock without starting a thread (safe to fork)
    assert len(os.listdir(f"/proc/{server}/task")) == 1
    maps = Path(f"/proc/{server}/maps").read_text()
    assert "libtorch" in maps and "libcuda.so" not in maps


def test_threads_per_trial_apply_in_a_reused_worker():
    with cf.ProcessPoolExecutor(1, mp_context=startup.pool_context()) as pool:
        three, pid = pool.submit(eval, _threads(3)).result(timeout=300)
        one, again = pool.submit(eval, _threads(1)).result(timeout=300)
    assert (three, one) == (3, 1) and pid == again


def _config(tmp_path: Path, **kw) -> dict:
    return config_mod.resolve({"space": write_space(tmp_path, conv_space([4, 8])), "device": "cpu",
                               "backend": "process", "concurrency": 2, "epochs": 1,
                               "objectives": ["accuracy", "macs"],
                               "out": str(tmp_path / "run"), **kw})


def test_workers_start_before_the_first_trial_and_are_reused(tmp_path, monkeypatch):
    from cellblock.run.backends.process import ProcessBackend

    monkeypatch.setenv("CELLBLOCK_TEST_WORKER_ENV", "seen")  # set after the server started
    backend = ProcessBackend(SimpleNamespace(config=_config(tmp_path)))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (
                len(backend.workers) < 2 or backend.starter.is_alive()):
            time.sleep(0.05)
        started = set(backend.workers)
        assert len(started) == 2  # both running, no trial submitted
        envs = {backend.pool.submit(eval, "__import__('os').environ.get("
                                          "'CELLBLOCK_TEST_WORKER_ENV')").result(timeout=60)}
        assert envs == {"seen"}
        for n, w in enumerate([4, 8, 4, 8]):
            arch = {"w": w}
            backend.submit(Trial(number=n, arch_id=arch_id(arch), arch=arch))
        outcomes = []
        while backend.futures:
            outcomes += backend.wait()
        assert len(outcomes) == 4 and all(o.status == COMPLETE for _, o in outcomes)
        assert set(backend.workers) == started  # the same two processes ran every trial
    finally:
        backend.close()


def test_wants_pool():
    assert startup.wants_pool({"backend": "process", "device": "cpu"})
    assert not startup.wants_pool({"backend": "local", "device": "auto"})
    assert not startup.wants_pool({"backend": "auto", "device": "cpu"})
    assert not startup.wants_pool({"backend": "ray", "device": "cuda"})
