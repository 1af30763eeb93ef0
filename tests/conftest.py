"""Shared fixtures: a tiny define-by-run space and helpers."""

from __future__ import annotations

import faulthandler
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# Tiny networks train fastest on one thread, and a 2-core CI machine must not be
# oversubscribed by subprocesses (CLI, kill/resume, workers): they inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The test clusters' Ray workers run at niceness 0, as cellblock's own local instance does
# (Ray's default is 15): beside the other xdist worker, niced trials all but stopped.
os.environ.setdefault("RAY_worker_niceness", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from spaces import tiny_space_fn  # noqa: E402

from cellblock.search_spaces import SearchSpace  # noqa: E402


@pytest.fixture
def tiny_space() -> SearchSpace:
    return SearchSpace(tiny_space_fn, input_shape=(1, 8, 8), num_classes=10)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def nb201_table(tmp_path_factory) -> Path:
    """A synthetic NAS-Bench-201 CIFAR-100 table of every cell (see :mod:`nb201_table`)."""
    from nb201_table import write_nb201_table

    return write_nb201_table(tmp_path_factory.mktemp("nb201") / "nb201_cifar100.csv")


# --- tests run in a child pytest process (``@pytest.mark.subprocess``) -----------------------
# A native crash of a library that runs inside the test process (Ray's core worker once died
# with a segfault in _raylet.so) kills a whole xdist worker, and with it every test that worker
# still had. A test marked ``subprocess`` runs its body in a child pytest instead: a crash
# fails that one test, with the signal and the child's output. Fixtures named in
# ``SUBPROCESS_FIXTURES`` are set up once here and handed to the child through the
# environment (e.g. the Ray test cluster, a separate process); the others the child sets up.

_CHILD_ENV = "CELLBLOCK_TEST_CHILD"
#: Fixture name -> environment variable the child's fixture reads its value from.
SUBPROCESS_FIXTURES = {"cluster": "CELLBLOCK_TEST_RAY_CLUSTER"}


def in_child_test() -> bool:
    """Whether this process is the child pytest of a ``subprocess`` test."""
    return os.environ.get(_CHILD_ENV) == "1"


# --- device locks of this test session --------------------------------------------------------
# Latency measurements hold the device against every cellblock process of the user on the
# machine (cellblock/core/device_lock.py). The session's processes (both xdist workers, their
# subprocesses and Ray workers) share one lock folder of their own, so that another test run
# on the same machine does not pause this one's trainings, nor this one its.
_LOCK_DIR_ENV = "CELLBLOCK_LOCK_DIR"


# --- a native crash under xdist names its test and its signal ---------------------------------
# xdist fails the test a dead worker was running ("worker 'gw0' crashed while running ...") and
# starts another worker (with ``--dist load``, the rest of the run goes on). The signal goes to
# each worker's faulthandler file, and the controller adds its first lines to that report.
_CRASH_DIR_ENV = "CELLBLOCK_TEST_CRASH_DIR"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "subprocess: run the test body in a child pytest (a native crash fails one test)")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None and not in_child_test() and _LOCK_DIR_ENV not in os.environ:
        config._cellblock_lock_dir = os.environ[_LOCK_DIR_ENV] = tempfile.mkdtemp(
            prefix="cellblock-test-locks-")
    if worker is None and getattr(config.option, "numprocesses",
                                  None) and _CRASH_DIR_ENV not in os.environ:
        config._cellblock_crash_dir = os.environ[_CRASH_DIR_ENV] = tempfile.mkdtemp(
            prefix="cellblock-test-crashes-")


def pytest_unconfigure(config):
    for made in ("_cellblock_crash_dir", "_cellblock_lock_dir"):
        if getattr(config, made, None):
            shutil.rmtree(getattr(config, made), ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    worker, crash_dir = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get(_CRASH_DIR_ENV)
    if worker and crash_dir and os.path.isdir(crash_dir):
        log = open(os.path.join(crash_dir, f"{worker}.log"), "w")  # noqa: SIM115 (open until exit)
        faulthandler.enable(file=log, all_threads=False)


@pytest.hookimpl(optionalhook=True)  # an xdist hook
def pytest_handlecrashitem(crashitem, report, sched):
    crash_dir = os.environ.get(_CRASH_DIR_ENV)
    worker = getattr(getattr(report, "node", None), "gateway", None)
    if not crash_dir or worker is None:
        return
    try:
        with open(os.path.join(crash_dir, f"{worker.id}.log")) as f:
            lines = [ln.rstrip() for ln in f if ln.strip()]
    except OSError:
        return
    fatal = [ln for ln in lines if ln.startswith("Fatal Python error")]
    stack = [ln.strip() for ln in lines if ln.lstrip().startswith("File ")][:8]
    if fatal:
        report.longrepr = f"{report.longrepr}: native crash, {fatal[-1]}\n" + "\n".join(stack)


# --- the longest tests start first, split between the workers -----------------------------
# Under ``make test`` (``-n 2 --dist load``) xdist hands each worker a first chunk of
# consecutive tests (a quarter of its share), then more as it finishes them. A long test
# collected last runs alone while the other worker idles, and all the long tests in one
# worker's first chunk would make it finish last. So the modules holding tests marked
# ``slow`` go first, each whole and in order (its module-scoped fixtures are set up once per
# worker), dealt to the workers' first chunks, heaviest (most ``slow`` tests) first, each to
# the lightest chunk so far; the many short tests fill the chunks and follow.


def _first_chunk(n_items: int, workers: int) -> int:
    """The size of each worker's first chunk under xdist's ``--dist load`` (3.x)."""
    return max(n_items // workers // 4, 2)


def pytest_collection_modifyitems(session, config, items):
    modules: dict = {}
    for item in items:
        modules.setdefault(getattr(item, "module", None), []).append(item)
    weight = {m: sum(it.get_closest_marker("slow") is not None for it in its)
              for m, its in modules.items()}
    slow = sorted((m for m in modules if m is not None and weight[m]), key=lambda m: -weight[m])
    if not slow:
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    lanes: list[list] = [[] for _ in range(max(workers, 1))]
    for m in slow:
        min(lanes, key=lambda lane: sum(weight[x] for x in lane)).append(m)
    rest = [it for m, its in modules.items() if m not in slow for it in its]
    chunk = _first_chunk(len(items), workers)
    laid = [[it for m in lane for it in modules[m]] for lane in lanes]
    if workers < 2 or any(len(lane) > chunk for lane in laid):
        items[:] = [it for lane in laid for it in lane] + rest  # slow first, not split
        return
    order = []
    for lane in laid:  # lane k, then short tests up to the end of worker k's first chunk
        fill = chunk - len(lane)
        order += lane + rest[:fill]
        rest = rest[fill:]
    items[:] = order + rest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if pyfuncitem.get_closest_marker("subprocess") is None or in_child_test():
        return None
    env = {**os.environ, _CHILD_ENV: "1"}
    for name, var in SUBPROCESS_FIXTURES.items():
        if name in pyfuncitem.funcargs:
            env[var] = str(pyfuncitem.funcargs[name])
    root = str(pyfuncitem.config.rootpath)
    safe_path = ["-P"] if getattr(sys.flags, "safe_path", False) else []  # as this process runs
    cmd = [sys.executable, *safe_path, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "no:randomly", "--rootdir", root, pyfuncitem.nodeid]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    out = (done.stdout + done.stderr)[-6000:]
    if done.returncode < 0:
        pytest.fail("the test's child process died of "
                    f"{signal.Signals(-done.returncode).name}:\n{out}",
                    pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"the test failed in its child process (exit {done.returncode}):\n{out}",
                    pytrace=False)
    if re.search(r"\b\d+ skipped\b", done.stdout) and not re.search(r"\b\d+ passed\b", done.stdout):
        reason = [ln for ln in done.stdout.splitlines() if ln.startswith("SKIPPED")]
        pytest.skip(reason[-1] if reason else "skipped in the child process")
    if not re.search(r"^1 passed\b", done.stdout, flags=re.M):
        pytest.fail(f"the child process ran no test:\n{out}", pytrace=False)
    return True
