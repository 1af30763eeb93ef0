"""Device slots: GPU sets, trials per GPU, worker -> GPU, resolved backends (fake device counts)."""

from __future__ import annotations

import pytest
from spaces import conv_space

from cellblock.cli import build_parser, main
from cellblock.core import config as config_mod
from cellblock.core.config import RunConfig
from cellblock.core.devices import (
    MAX_AUTO_TRIALS_PER_GPU,
    apply_slots,
    auto_trials_per_gpu,
    plan_slots,
    visible_gpus,
    worker_device,
)
from cellblock.core.errors import ConfigError

GIB = 2**30


def _cfg(**kw):
    return config_mod.resolve(kw)


def test_visible_gpus_follow_the_device():
    assert visible_gpus("auto", count=0) == []
    assert visible_gpus("auto", count=3) == [0, 1, 2]
    assert visible_gpus("cuda", count=2) == [0, 1]
    assert visible_gpus("cuda:1", count=2) == [1]  # --device cuda:1 limits the set
    assert visible_gpus("cpu", count=4) == []
    assert visible_gpus("mps", count=4) == []
    with pytest.raises(ConfigError, match="cuda:2.*2 CUDA device"):
        visible_gpus("cuda:2", count=2)
    with pytest.raises(ConfigError, match="no CUDA device"):
        visible_gpus("cuda", count=0)


def test_worker_i_runs_on_gpu_i_mod_n():
    assert [worker_device("auto", i, count=3) for i in range(7)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert {worker_device("cuda:1", i, count=4) for i in range(5)} == {"cuda:1"}
    assert worker_device("cpu", 3, count=2) == "cpu"
    assert worker_device("auto", 3, count=0) == "auto"


def test_auto_trials_per_gpu_is_the_smallest_limit():
    k, why = auto_trials_per_gpu(1, 16, 80 * GIB)
    assert k == MAX_AUTO_TRIALS_PER_GPU and "cap" in why and "16 CPU cores" in why
    assert auto_trials_per_gpu(1, 3, 80 * GIB)[0] == 3          # cores
    assert auto_trials_per_gpu(8, 16, 80 * GIB)[0] == 2         # cores shared by 8 GPUs
    assert auto_trials_per_gpu(1, 16, 6 * GIB)[0] == 1          # memory: 4.8 GiB / 2.5 GiB
    assert auto_trials_per_gpu(1, 16, 16 * GIB)[0] == 5         # 12.8 / 2.5
    assert auto_trials_per_gpu(4, 1, 1 * GIB)[0] == 1           # never below 1


def test_no_gpu_keeps_one_local_trial():
    plan = plan_slots(_cfg(), count=0)
    assert (plan.backend, plan.concurrency, plan.gpus, plan.resources_per_trial) == ("local", 1, [],
                                                                                     "cpu=1")
    assert "no GPU" in plan.reason
    # an explicit concurrency with backend auto means the process pool, GPU or not
    assert plan_slots(_cfg(concurrency=2), count=0).backend == "process"


def test_gpus_are_packed_by_default():
    plan = plan_slots(_cfg(trials=40), count=2, cpu_cores=16, gpu_memory_bytes=80 * GIB)
    assert plan.gpus == [0, 1] and plan.trials_per_gpu == 8
    assert (plan.backend, plan.concurrency) == ("process", 16)
    assert [plan.worker_device(i, "auto") for i in range(4)] == ["cuda:0", "cuda:1", "cuda:0",
                                                                 "cuda:1"]
    assert "2 GPU(s)" in plan.reason and "trials_per_gpu auto" in plan.reason
    # never more workers than trials
    assert plan_slots(_cfg(trials=5), count=2, cpu_cores=16,
                      gpu_memory_bytes=80 * GIB).concurrency == 5
    # K given: no probing of memory or cores
    plan = plan_slots(_cfg(trials=40, trials_per_gpu=3), count=2)
    assert (plan.trials_per_gpu, plan.concurrency) == (3, 6) and "trials_per_gpu set" in plan.reason
    # one GPU, one trial per GPU: the local backend
    plan = plan_slots(_cfg(device="cuda:1", trials_per_gpu=1), count=2)
    assert (plan.backend, plan.concurrency, plan.gpus) == ("local", 1, [1])


def test_explicit_choices_are_kept():
    plan = plan_slots(_cfg(concurrency=3, trials_per_gpu=4), count=2)
    assert (plan.backend, plan.concurrency) == ("process", 3)
    plan = plan_slots(_cfg(backend="local", trials_per_gpu=4), count=2)
    assert (plan.backend, plan.concurrency) == ("local", 1)
    plan = plan_slots(_cfg(backend="process", device="cpu"), count=2)
    assert (plan.concurrency, plan.gpus) == (1, [])


def test_ray_asks_a_gpu_fraction_per_trial():
    plan = plan_slots(_cfg(backend="ray", trials_per_gpu=4), count=2)
    assert plan.resources_per_trial == "cpu=1,gpu=0.25" and plan.concurrency == 8
    plan = plan_slots(_cfg(backend="ray", trials_per_gpu=3), count=1)
    assert plan.resources_per_trial == "cpu=1,gpu=0.3333"
    plan = plan_slots(_cfg(backend="ray", trials_per_gpu=4, resources_per_trial="cpu=2,gpu=1"),
                      count=2)
    assert plan.resources_per_trial == "cpu=2,gpu=1"  # --resources-per-trial wins
    plan = plan_slots(_cfg(backend="ray"), count=0)
    assert (plan.resources_per_trial, plan.concurrency) == ("cpu=1", 1)


def test_apply_slots_makes_the_config_concrete():
    cfg, plan = apply_slots(_cfg(trials_per_gpu=2), count=1)
    assert (cfg.backend, cfg.concurrency, cfg.resources_per_trial) == ("process", 2,
                                                                                "cpu=1")
    assert cfg.trials_per_gpu == 2 and plan.gpus == [0]


def test_trials_per_gpu_config_and_option():
    assert config_mod.resolve({"trials_per_gpu": 4}).trials_per_gpu == 4
    assert config_mod.resolve({}).trials_per_gpu == "auto"
    for bad in (0, "many", True, 1.5):
        with pytest.raises(ConfigError, match="trials_per_gpu"):
            config_mod.resolve({"trials_per_gpu": bad})
    args = build_parser().parse_args(["search", "--trials-per-gpu", "3", "--no-cuda-graphs"])
    assert args.trials_per_gpu == 3 and args.cuda_graphs is False
    assert build_parser().parse_args(["search", "--trials-per-gpu",
                                      "auto"]).trials_per_gpu == "auto"


def test_bad_trials_per_gpu_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--trials-per-gpu", "lots"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "expected auto or an integer" in err and len(err.strip().splitlines()) == 1


def test_a_cuda_device_that_is_not_there_is_refused(tmp_path):
    import torch

    import cellblock

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match="does not exist|no CUDA device"):
        cellblock.search(device=f"cuda:{n}", trials=1, out=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_process_workers_take_gpus_in_turn(monkeypatch):
    """The pool's initializer: worker i gets GPU i mod n (a fake count of 2 GPUs)."""
    import multiprocessing

    import torch

    import cellblock.core.devices as devices
    import cellblock.run.backends.process as backends
    import cellblock.run.components as components

    built, selected = [], []

    class Built:
        pipeline = None

    monkeypatch.setattr(devices, "gpu_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: selected.append(str(dev)))
    monkeypatch.setattr(components, "build_components",
                        lambda cfg: built.append(cfg.device) or Built())
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    threads = torch.get_num_threads()
    try:
        for _ in range(3):
            backends._init_worker(RunConfig(device="auto", concurrency=3), counter=counter)
    finally:
        torch.set_num_threads(threads)
    assert built == ["cuda:0", "cuda:1", "cuda:0"] and selected == built
    built.clear()
    backends._init_worker(RunConfig(device="cpu", concurrency=1), counter=counter)
    assert built == ["cpu"]


SPACE = conv_space([4, 8])


def test_each_trial_records_its_device_and_step_mode(tmp_path, monkeypatch):
    import cellblock

    monkeypatch.setenv("CELLBLOCK_LOCK_DIR", str(tmp_path / "locks"))
    (tmp_path / "sp.py").write_text(SPACE)
    run = cellblock.search(space=f"{tmp_path / 'sp.py'}:space", trials=2, epochs=1,
                           out=str(tmp_path / "r"),
                           device="cpu", strategy="random", objectives=["accuracy", "latency_ms"])
    assert len(run.trials) == 2
    for t in run.trials:
        assert t.metrics["device"] == "cpu" and t.metrics["train_step"] == "eager"
        assert "CUDA device" in t.metrics["graph_fallback"]
        assert t.metrics["latency_isolation"] == "device-exclusive"
        # one local worker: no other trial holds the device, so the lock is taken at once
        assert 0 <= t.metrics["latency_wait_ms"] < 1000
    assert "backend: local" in (tmp_path / "r" / "config.yaml").read_text()
