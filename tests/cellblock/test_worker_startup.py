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

from cellblock.core import config as config_mod
from cellblock.core.config import RunConfig
from cellblock.records import COMPLETE, Trial
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


def _config(tmp_path: Path, **kw) -> RunConfig:
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
    assert startup.wants_pool(RunConfig(backend="process", device="cpu"))
    assert not startup.wants_pool(RunConfig(backend="local", device="auto"))
    assert not startup.wants_pool(RunConfig(backend="auto", device="cpu"))
    assert not startup.wants_pool(RunConfig(backend="ray", device="cuda"))


# ---- a short search starts whole, costliest first --------------------------------------------
class _Book:
    """The parts of TrialBook that Backend.drive uses, for ``budget`` trials."""

    def __init__(self, budget: int) -> None:
        self.budget, self.done, self.held, self.in_flight = budget, 0, {}, {}
        self.rerun: list = []
        self.exhausted = False
        self.asked = 0
        self.events: list[tuple[str, int]] = []

    def wants_more(self) -> bool:
        return self.done + len(self.in_flight) < self.budget

    def next_trial(self) -> Trial:
        arch = {"w": self.asked}
        self.asked += 1
        return Trial(number=self.asked - 1, arch_id=arch_id(arch), arch=arch)

    def start(self, trial: Trial) -> None:
        self.in_flight[trial.arch_id] = trial
        self.events.append(("start", trial.number))

    def finish(self, trial: Trial, outcome, node=None) -> None:
        del self.in_flight[trial.arch_id]
        self.done += 1
        self.events.append(("end", trial.number))


def _fake_pool_backend(concurrency: int, macs: dict[int, float] | None):
    from cellblock.run.backends.process import ProcessBackend

    class Pool:
        def __init__(self) -> None:
            self.submitted: list[int] = []

        def submit(self, fn, *args):
            self.submitted.append(args[0]["w"])
            return cf.Future()

    class Evaluator:  # knows MACs without building (a cost cache), or not at all
        def costs(self, arch):
            return None if macs is None else {"macs": macs[arch["w"]]}

    backend = object.__new__(ProcessBackend)  # no workers: its pool is the fake above
    backend.config, backend.futures, backend.pool, backend.seed, backend.workers = (
        RunConfig(concurrency=concurrency), {}, Pool(), 0, {})
    backend.prepared = SimpleNamespace(pipeline=SimpleNamespace(evaluator=Evaluator()))
    return backend


def test_a_short_search_is_submitted_whole_costliest_first():
    backend = _fake_pool_backend(2, macs={0: 1.0, 1: 5.0, 2: 3.0, 3: 4.0})
    book = _Book(4)
    assert backend.ahead(book) == 2 and backend.ahead(_Book(5)) == 0
    finished = []

    def wait():
        trial = next(t for t in backend.futures.values() if t.number not in finished)
        finished.append(trial.number)
        return [(trial, None)]

    backend.wait = wait
    backend.drive(book, lambda n: None)
    # every trial started (and was recorded, in ask order) before the first result
    assert book.events[:4] == [("start", n) for n in range(4)] and book.done == 4
    assert backend.pool.submitted == [1, 3, 2, 0]  # the workers take the costliest first


def test_trials_are_reordered_only_beyond_the_free_workers_and_with_known_costs():
    trials = [Trial(number=n, arch_id=str(n), arch={"w": n}) for n in range(3)]
    assert _fake_pool_backend(4, macs={}).order(trials) == trials  # a look-up: KeyError
    assert _fake_pool_backend(2, macs=None).order(trials) == trials  # MACs unknown: as asked
    assert _fake_pool_backend(2, macs={0: 1, 1: 3, 2: 2}).order(trials) == [
        trials[1], trials[2], trials[0]]


def test_a_short_search_on_workers_completes_and_its_log_replays(tmp_path):
    import cellblock
    from cellblock.records import read_events, replay_trials
    from cellblock.run.asking import EXHAUSTED_AFTER
    from cellblock.run.runner import prepare
    from cellblock.strategies.resume import fast_forward

    cfg = _config(tmp_path, trials=4, strategy="evolution",
                  space=write_space(tmp_path, conv_space([4, 8, 12, 16]), "sp4.py"))
    run = cellblock.search(cfg)
    assert len(run.trials) == 4 and all(t.status == COMPLETE for t in run.trials)
    events = read_events(tmp_path / "run" / "trials.jsonl")
    kinds = [e["event"] for e in events if e["event"] in ("trial_start", "trial_end")]
    assert kinds[:4] == ["trial_start"] * 4  # started whole, before any result
    fresh = prepare(cfg.replace(out=str(tmp_path / "other"))).strategy
    assert fast_forward(fresh, events, replay_trials(events), EXHAUSTED_AFTER)
