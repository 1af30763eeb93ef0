"""GPU throughput of cellblock searches and training steps; writes ``gpu_throughput.md``.

Run from the repository root on any machine with a CUDA GPU::

    .venv/bin/python results/benchmarks/gpu_throughput.py

In one run (one GPU, the same machine) it measures:

1. trials per hour of two searches, each as a fresh ``cellblock search`` process:
   (a) a user's ``.npz`` of 10,000 random-but-learnable 1x28x28 images (10 class
   templates plus noise), ``--strategy random --epochs 3``; (b) the default digits search
   (no options). Variants: *local eager* (``--backend local --no-cuda-graphs``: one trial
   at a time, as before device slots), *packed* (``--no-cuda-graphs``: the default device
   slots, several trials per GPU), *packed + graphs* (no options: the default), the
   default with ``--no-cudnn-benchmark`` (autotuning is paid once per new architecture),
   and for digits also ``--device cpu``;
2. one training step of three 17k-34k-parameter ``blocks`` networks (1x28x28), batch 64
   and 512, eager vs CUDA graph (bf16 autocast, channels-last, cudnn autotuning in both);
3. ResNet-18 (torchvision, 10 classes) at 32x32, batch 256: ``train_and_evaluate``
   images/s against a hand-written bf16 + channels-last loop (same data, augmentation,
   SGD and schedule; cudnn autotuning on in both).

The report is rewritten after every part, so a run stopped by a time limit keeps what it
measured; ``--parts digits,steps`` runs some parts only. Without CUDA it prints one line and
exits with status 0. ``--smoke`` runs every part at
tiny sizes on the CPU, the searches through the CLI in this process (for tests; its
numbers measure nothing: write them to a scratch ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cellblock.data import Augment, Dataset
from cellblock.evaluators.cuda_graph import WARMUP_STEPS, StepRunner, cudnn_autotune
from cellblock.evaluators.loop import amp_setup, augment_batch, lr_at, make_optimizer, step_schedule
from cellblock.evaluators.training import TrainConfig, train_and_evaluate
from cellblock.pareto.results import load_run

HERE = Path(__file__).resolve().parent
PARTS = ("npz", "digits", "steps", "resnet")


# ---- 1. searches -----------------------------------------------------------------------------
def write_npz(path: Path, n: int, seed: int = 0) -> None:
    """``n`` learnable 1x28x28 images: one smooth random template per class plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(10, 1, 7, 7))
    templates = np.kron(coarse, np.ones((1, 1, 4, 4)))  # 10 x 1 x 28 x 28, blocky patterns
    y = rng.integers(0, 10, size=n)
    x = templates[y] + 0.9 * rng.normal(size=(n, 1, 28, 28))
    np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))


def run_search(args: list[str], out: Path, in_process: bool = False) -> dict:
    """One fresh ``cellblock search`` process (``in_process``: the same CLI called in this
    process, for smoke runs): wall time, trials, where and how they trained."""
    cmd = [sys.executable, "-m", "cellblock", "search", *args, "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    if in_process:
        import contextlib
        import io

        from cellblock.cli import main as cli_main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli_main(cmd[3:])
        stderr = err.getvalue()
    else:
        # run outside the checkout, so that an installed cellblock is the one imported
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent)
        code, stderr = done.returncode, done.stderr
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{stderr[-3000:]}")
    run = load_run(out)
    trials = run.trials
    slots = next((line for line in stderr.splitlines() if line.startswith("device slots:")), "")
    steps = Counter(t.metrics.get("train_step", "-") for t in trials)
    accs = [t.value("accuracy") for t in trials if t.feasible_complete]

    def mean(values: list) -> float:
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else float("nan")

    # where a trial's time goes: its whole span in the worker, training, evaluation
    trial_s = mean([t.end_t - t.start_t for t in trials if t.start_t and t.end_t])
    train_s, eval_s = mean(
        [t.value("train_s") for t in trials]), mean([t.value("eval_s") for t in trials])
    return {
        "args": " ".join(args) or "(no options)", "wall_s": wall, "trials": len(trials),
        "complete": sum(t.status == "COMPLETE" for t in trials),
        "per_hour": len(trials) / wall * 3600, "slots": slots.removeprefix("device slots: "),
        "steps": ", ".join(f"{k} {v}" for k, v in sorted(steps.items())),
        "devices": ", ".join(sorted({str(t.metrics.get("device", "-")) for t in trials})),
        "best": max((a for a in accs if a is not None), default=float("nan")),
        "trial_s": trial_s, "train_s": train_s, "eval_s": eval_s,
        "fallbacks": sorted(
            {t.metrics["graph_fallback"] for t in trials if t.metrics.get("graph_fallback")}),
    }


def searches(smoke: bool, tmp: Path, npz_trials: int, digits_trials: int | None, parts: set[str],
             rows: dict[str, list[dict]], saved: Callable[[], None]) -> None:
    """Run the searches of ``parts`` into ``rows``, calling ``saved`` after each."""
    npz = tmp / "mnist_sized.npz"
    write_npz(npz, 300 if smoke else 10_000)
    if smoke:  # CPU, toy sizes, in this process: there is no GPU to pack trials on
        local, packed, graphs = ["--backend", "local", "--no-cuda-graphs"], ["--no-cuda-graphs"], []
        common = ["--trials", "1", "--epochs", "1", "--device", "cpu"]
        settings = {"npz": [*common, "--dataset", str(npz), "--strategy", "random"],
                    "digits": common}
    else:
        local, packed, graphs = ["--backend", "local", "--no-cuda-graphs"], ["--no-cuda-graphs"], []
        digits = ["--trials", str(digits_trials)] if digits_trials else []
        settings = {"npz": ["--dataset", str(npz), "--epochs", "3", "--strategy", "random",
                            "--trials", str(npz_trials)], "digits": digits}
    for name, base in settings.items():
        if name not in parts:
            continue
        variants = [("local eager (before)", local), ("packed", packed),
                    ("packed + graphs (default)", graphs),
                    ("default without cudnn autotuning", [*graphs, "--no-cudnn-benchmark"])]
        if name == "digits":
            variants.append(("--device cpu", ["--device", "cpu"] if not smoke else local))
        rows[name] = []
        for label, extra in variants:
            row = run_search([*base, *extra], tmp / f"{name}-{len(rows[name])}", in_process=smoke)
            row["variant"] = label
            print(f"{name} {label}: {row['trials']} trials in {row['wall_s']:.1f} s "
                  f"({row['per_hour']:.0f}/h; a trial {row['trial_s']:.2f} s, training "
                  f"{row['train_s']:.2f} s); {row['slots']}", flush=True)
            rows[name].append(row)
            saved()


# ---- 2. per-step microbenchmark --------------------------------------------------------------
def blocks_models(n: int, low: int, high: int) -> list[tuple[str, nn.Module]]:
    """The first ``n`` sampled ``blocks`` networks (1x28x28, 10 classes), params in [low, high]."""
    from cellblock.search_spaces import SearchSpace

    space = SearchSpace("blocks", input_shape=(1, 28, 28), num_classes=10)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(5000):
        arch = space.sample(rng)
        torch.manual_seed(0)
        model = space.build(arch)
        params = sum(p.numel() for p in model.parameters())
        if low <= params <= high:
            out.append((f"{params / 1e3:.1f}k params", model))
            if len(out) == n:
                break
    return out


def step_ms(model: nn.Module, batch: int, graph: bool, device: torch.device,
            steps: int) -> tuple[float, float, str]:
    """(ms per step, capture s, step mode) of ``model`` at ``batch`` on fixed random inputs."""
    model = copy.deepcopy(model).to(device).train()
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = make_optimizer(model, TrainConfig())
    amp, _ = amp_setup(device, None)
    runner = StepRunner(model, opt, nn.CrossEntropyLoss(label_smoothing=0.1), device, amp, None,
                        graph)
    x = torch.randn(batch, 1, 28, 28, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    capture_s = 0.0
    with cudnn_autotune(device):
        for _ in range(WARMUP_STEPS + 2):
            t0 = time.perf_counter()
            runner.step(x, y)
            if runner.captures and not capture_s:
                _sync(device)
                capture_s = time.perf_counter() - t0
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            runner.step(x, y)
        _sync(device)
    return (time.perf_counter() - t0) / steps * 1e3, capture_s, runner.mode


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def microbench(device: torch.device, smoke: bool) -> list[dict]:
    rows = []
    for label, model in blocks_models(1 if smoke else 3, 17_000, 34_000):
        for batch in (8,) if smoke else (64, 512):
            steps = 3 if smoke else 100
            eager, _, _ = step_ms(model, batch, False, device, steps)
            graphed, capture_s, mode = step_ms(model, batch, True, device, steps)
            rows.append({"model": label, "batch": batch, "eager_ms": eager, "graph_ms": graphed,
                         "capture_s": capture_s, "mode": mode})
            print(f"step {label} batch {batch}: eager {eager:.2f} ms, {mode} {graphed:.2f} ms",
                  flush=True)
    return rows


# ---- 3. ResNet-18 ----------------------------------------------------------------------------
def resnet_data(n: int, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(10, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = templates[y] + torch.randn(n, 3, 32, 32, generator=g)
    yv = torch.randint(0, 10, (512,), generator=g)
    xv = templates[yv] + torch.randn(512, 3, 32, 32, generator=g)
    return Dataset("templates32", x, y, xv, yv, xv, yv, (3, 32, 32), 10, Augment(pad=4, flip=True))


def hand_loop(model: nn.Module, data: Dataset, cfg: TrainConfig) -> float:
    """A hand-written bf16 + channels-last training loop; returns images per second."""
    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model.to(device).to(memory_format=fmt).train()
    x, y = data.x_train.to(device), data.y_train.to(device)
    bs, per_epoch, total, warm = step_schedule(cfg, len(y))
    opt = make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    _sync(device)
    t0 = time.perf_counter()
    step = 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(y), device=device, generator=gen)
        for i in range(per_epoch):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warm, cfg.lr)
            idx = perm[i * bs:(i + 1) * bs]
            xb = augment_batch(x[idx], data.augment, gen).contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = loss_fn(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    _sync(device)
    torch.backends.cudnn.benchmark = saved
    return step * bs / (time.perf_counter() - t0)


def resnet(device: torch.device, smoke: bool, repeats: int) -> dict:
    import torchvision

    data = resnet_data(64 if smoke else 25_600)
    # 4 epochs of 100 steps: the capture (and cudnn autotuning in both loops) is paid once a run
    cfg = TrainConfig(epochs=1 if smoke else 4, batch_size=16 if smoke else 256, device=str(device),
                      seed=0)
    torch.manual_seed(0)
    init = torchvision.models.resnet18(num_classes=10)
    ours, hand, modes = [], [], []
    for rep in range(repeats + 1):  # the first round warms up (cudnn autotuning, allocator)
        out = train_and_evaluate(copy.deepcopy(init), data, cfg)
        h = hand_loop(copy.deepcopy(init), data, cfg)
        if rep or smoke:
            ours.append(out["images_per_s"])
            hand.append(h)
            modes.append(out["train_step"])
        print(f"resnet18 round {rep}: ours {out['images_per_s']:.0f} ({out['train_step']}), hand "
              f"{h:.0f} img/s", flush=True)
    return {"ours": statistics.median(ours), "hand": statistics.median(hand), "ours_all": ours,
            "hand_all": hand, "mode": ", ".join(sorted(set(modes))), "cfg": cfg,
            "n": len(data.y_train)}


# ---- report ----------------------------------------------------------------------------------
def _ratio(found: dict[str, list[dict]], setting: str, a: str, b: str) -> str:
    """``**1.23x**``: trials per hour of variant ``a`` over ``b``, or why there is none."""
    by = {r["variant"]: r for r in found.get(setting, [])}
    if a not in by or b not in by:
        return "not measured in this run"
    return f"**{by[a]['per_hour'] / by[b]['per_hour']:.2f}x**"


def report(args: argparse.Namespace, device: torch.device, found: dict, steps: list[dict],
           rn: dict | None) -> str:
    """The markdown report of what was measured so far (parts not yet run say so)."""
    name = torch.cuda.get_device_name(
        device) if device.type == "cuda" else platform.processor() or "cpu"
    lines = [
        "# GPU throughput: device slots, packed trials and CUDA-graph training steps",
        "",
        "Command: `.venv/bin/python "
        f"{shlex.join(['results/benchmarks/gpu_throughput.py', *sys.argv[1:]])}` "
        "(from the repository root).",
        "",
        f"Machine: {name}, {os.cpu_count()} CPU cores, torch {torch.__version__}, CUDA "
        f"{torch.version.cuda}, "
        f"Python {platform.python_version()}; load average at the end {os.getloadavg()[0]:.2f}.",
        "",
    ]
    if args.smoke:
        lines += ["**SMOKE RUN on the CPU at toy sizes: these numbers measure nothing.**", ""]
    lines += ["## Searches (trials per hour over the wall time of one fresh `cellblock search`)",
              "",
              "*local eager (before)* is the search as it ran before device slots and graphs (one "
              "trial at a time, eager steps), except that cudnn autotuning and the latency lock "
              "now apply to it too. The npz search uses `--strategy random` so that every variant "
              "trains the same architectures; the digits search is the default (evolution), whose "
              "later proposals depend on the results.", ""]
    for setting, rows in found.items():
        lines += [f"### {setting}", "",
                  "| variant | options | wall s | trials | complete | trials/h | mean s a trial: "
                  "all / train / eval | device slots | steps | best acc |",
                  "|---|---|---:|---:|---:|---:|---|---|---|---:|"]
        for r in rows:
            lines.append(f"| {r['variant']} | `{r['args']}` | {r['wall_s']:.1f} | {r['trials']} | "
                         f"{r['complete']} | {r['per_hour']:.0f} | {r['trial_s']:.2f} "
                         f"/ {r['train_s']:.2f} / {r['eval_s']:.2f} | {r['slots']} | {r['steps']} "
                         f"| {r['best']:.4f} |")
        fallbacks = sorted({f for r in rows for f in r["fallbacks"]})
        if fallbacks:
            lines += ["", "Graph fallbacks seen: " + "; ".join(f"`{f}`" for f in fallbacks[:5])]
        lines.append("")
    best, before = "packed + graphs (default)", "local eager (before)"
    lines += ["Targets (ratios of trials per hour in this run):", "",
              "- default digits search, default vs local eager: "
              f"{_ratio(found, 'digits', best, before)} (target >= 3x)",
              "- default digits search, default vs `--device cpu`: "
              f"{_ratio(found, 'digits', best, '--device cpu')} (target > 1x)",
              "- MNIST-sized npz search, default vs local eager: "
              f"{_ratio(found, 'npz', best, before)} (target >= 10x)",
              ""]
    if steps:
        lines += [
            "## One training step (blocks networks, 1x28x28, bf16 autocast, channels-last, cudnn "
            "autotuning)", "",
            "| network | batch | eager ms | graphed ms | speed-up | capture s | mode |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
    for r in steps:
        lines.append(f"| {r['model']} | {r['batch']} | {r['eager_ms']:.2f} | {r['graph_ms']:.2f} | "
                     f"{r['eager_ms'] / r['graph_ms']:.2f}x | {r['capture_s']:.3f} | {r['mode']} |")
    if rn is None:
        return "\n".join([*lines, "", "ResNet-18: not measured in this run.", ""])
    cfg = rn["cfg"]
    lines += [
        "",
        f"## ResNet-18 at 32x32, batch {cfg.batch_size}, {rn['n']} train images x {cfg.epochs} "
        "epochs", "",
        "| loop | images/s (median) | all rounds |", "|---|---:|---|",
        f"| `train_and_evaluate` ({rn['mode']}) | {rn['ours']:.0f} | "
        f"{', '.join(f'{v:.0f}' for v in rn['ours_all'])} |",
        f"| hand-written bf16 + channels-last | {rn['hand']:.0f} | "
        f"{', '.join(f'{v:.0f}' for v in rn['hand_all'])} |",
        "",
        f"Ratio: **{rn['ours'] / rn['hand']:.3f}x** (target >= 0.97x).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run of every part (for tests)")
    ap.add_argument("--npz-trials", type=int, default=24,
                    help="trials of the npz search (default 24; 0 skips it)")
    ap.add_argument("--digits-trials", type=int, default=None,
                    help="trials of the digits search (default: its default)")
    ap.add_argument("--resnet-repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "gpu_throughput.md"))
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        ap.error(f"unknown --parts {sorted(parts - set(PARTS))}; choose from {', '.join(PARTS)}")
    if args.npz_trials == 0:
        parts.discard("npz")
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device is present; nothing measured (use --smoke for a CPU "
              "smoke run)")
        return 0
    device = torch.device("cpu") if args.smoke else torch.device("cuda",
                                                                 torch.cuda.current_device())
    found: dict[str, list[dict]] = {}
    steps: list[dict] = []
    rn: dict | None = None

    def saved() -> str:  # after every part: a run stopped by a time limit keeps what it measured
        text = report(args, device, found, steps, rn)
        Path(args.out).write_text(text, encoding="utf-8")
        return text

    with tempfile.TemporaryDirectory(prefix="cellblock-gpu-bench-") as tmp:
        searches(args.smoke, Path(tmp), args.npz_trials, args.digits_trials, parts, found, saved)
    if "steps" in parts:
        steps = microbench(device, args.smoke)
        saved()
    if "resnet" in parts:
        rn = resnet(device, args.smoke, 1 if args.smoke else args.resnet_repeats)
    print(saved())
    return 0 if all(math.isfinite(r["per_hour"]) for rows in found.values() for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
