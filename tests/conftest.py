"""Shared fixtures: a tiny define-by-run space and helpers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

# Tiny networks train fastest on one thread, and a 2-core CI machine must not be
# oversubscribed by subprocesses (CLI, kill/resume, workers): they inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)

from cellblock.search_spaces import SearchSpace  # noqa: E402


def tiny_space_fn(s, input_shape=(1, 8, 8), num_classes=10):
    """A small conditional space: depth decides how many width decisions exist."""
    depth = s.integer("depth", 1, 3)
    widths = [s.choice(f"layer{i}.width", [4, 8, 16]) for i in range(depth)]
    act = s.choice("act", ["relu", "gelu"])
    if not s.build:
        return None
    layers: list[nn.Module] = []
    c = input_shape[0]
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU() if act == "relu" else nn.GELU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


@pytest.fixture
def tiny_space() -> SearchSpace:
    return SearchSpace(tiny_space_fn, input_shape=(1, 8, 8), num_classes=10)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


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


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "subprocess: run the test body in a child pytest (a native crash fails one test)")


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
        pytest.fail(f"the test's child process died of {signal.Signals(-done.returncode).name}:\n{out}",
                    pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"the test failed in its child process (exit {done.returncode}):\n{out}", pytrace=False)
    if re.search(r"\b\d+ skipped\b", done.stdout) and not re.search(r"\b\d+ passed\b", done.stdout):
        reason = [ln for ln in done.stdout.splitlines() if ln.startswith("SKIPPED")]
        pytest.skip(reason[-1] if reason else "skipped in the child process")
    if not re.search(r"^1 passed\b", done.stdout, flags=re.M):
        pytest.fail(f"the child process ran no test:\n{out}", pytrace=False)
    return True
