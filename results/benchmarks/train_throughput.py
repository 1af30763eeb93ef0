"""Training throughput of ``train_and_evaluate`` versus a bare PyTorch loop, on digits.

Run from the repository root::

    .venv/bin/python results/benchmarks/train_throughput.py

Both loops train a copy of the SAME initial model on the SAME on-device train tensors
with the same batch size, epochs, SGD (Nesterov momentum, weight decay), per-step cosine
LR, label-smoothed cross-entropy and the same batch augmentation function
(``augment_batch``), so augmentation cost is included in both. Only the training loop is
timed (no evaluation). The bare loop is what one would write by hand: ``randperm``
indexing, no NaN checks, ``torch.optim.lr_scheduler.LambdaLR`` stepped every batch. A third
column uses ``torch.utils.data.DataLoader`` over a ``TensorDataset`` (no workers) to show
what the tensor loop avoids. Runs are interleaved (ours, bare, loader, ours, ...) and the
median of the repeats is reported. Writes ``train_throughput.md`` next to this file.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from cellblock.data import Dataset, load_dataset
from cellblock.evaluators.latency.measure import device_fingerprint
from cellblock.evaluators.loop import augment_batch
from cellblock.evaluators.training import TrainConfig, train_and_evaluate


def small_cnn() -> nn.Module:
    """The fixed small CNN of the benchmark (about 56k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def blocks_net(data: Dataset) -> tuple[str, nn.Module] | None:
    """One fixed random architecture of the ``blocks`` space, or None if it is absent."""
    try:
        import importlib

        import numpy as np

        from cellblock.search_spaces import SPACES, SearchSpace

        for mod in ("cellblock.search_spaces.blocks_space",):
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
        if "blocks" not in SPACES:
            return None
        space = SearchSpace("blocks", input_shape=data.input_shape, num_classes=data.num_classes)
        arch = space.sample(np.random.default_rng(0))
        return "blocks space arch (rng seed 0)", space.build(arch)
    except Exception as exc:  # the space is being written by someone else; skip, say why
        print(f"skipping the blocks space: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def bare_loop(model: nn.Module, data: Dataset, cfg: TrainConfig, loader: bool) -> float:
    """Hand-written training loop; returns images per second of the training loop."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    x, y = data.x_train.to(device), data.y_train.to(device)
    n = len(y)
    bs = cfg.batch_size
    steps_per_epoch = n // bs
    total = cfg.epochs * steps_per_epoch
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": other, "weight_decay": 0.0}],
        lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt,
                                              lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    dl = None
    if loader:
        dl = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=bs, shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
    start = time.perf_counter()
    steps = 0
    for _ in range(cfg.epochs):
        if dl is not None:
            batches = iter(dl)
        else:
            perm = torch.randperm(n, device=device, generator=gen)
            batches = ((x[perm[i * bs:(i + 1) * bs]], y[perm[i * bs:(i + 1) * bs]])
                       for i in range(steps_per_epoch))
        for xb, yb in batches:
            xb = augment_batch(xb, data.augment, gen)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * bs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's)")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    data = load_dataset("digits")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, seed=0)
    torch.manual_seed(0)
    models: list[tuple[str, nn.Module]] = [("small CNN (3 conv + BN, 56k params)", small_cnn())]
    extra = blocks_net(data)
    if extra is not None:
        models.append(extra)

    rows = []
    for label, init in models:
        runs: dict[str, list[float]] = {"ours": [], "bare": [], "loader": []}
        accs = []
        # One untimed warm-up of each, then interleaved timed repeats.
        for rep in range(args.repeats + 1):
            res = train_and_evaluate(copy.deepcopy(init), data, cfg)
            bare = bare_loop(copy.deepcopy(init), data, cfg, loader=False)
            dl = bare_loop(copy.deepcopy(init), data, cfg, loader=True)
            if rep:
                runs["ours"].append(res["images_per_s"])
                runs["bare"].append(bare)
                runs["loader"].append(dl)
                accs.append(res["accuracy"])
            print(f"{label} rep {rep}: ours {res['images_per_s']:.0f}  bare {bare:.0f}  loader "
                  f"{dl:.0f} img/s")
        med = {k: statistics.median(v) for k, v in runs.items()}
        params = sum(p.numel() for p in init.parameters())
        rows.append(
            (label, params, med, min(runs["ours"]), max(runs["ours"]), statistics.median(accs)))

    fp = device_fingerprint(args.device)
    cmd = " ".join([".venv/bin/python", "results/benchmarks/train_throughput.py", *sys.argv[1:]])
    lines = [
        "# Training throughput: `train_and_evaluate` vs a bare PyTorch loop",
        "",
        f"Command: `{cmd}` (from the repository root).",
        "",
        f"Machine: {fp['name']}, {os.cpu_count()} cores, torch {fp['threads']} threads, "
        f"torch {fp['torch']}, Python {platform.python_version()}, device `{args.device}`; "
        f"load average at the end {os.getloadavg()[0]:.2f} (other processes share this machine).",
        "",
        f"Setting: digits ({len(data.y_train)} train images, 1x8x8), batch {args.batch_size}, "
        f"{args.epochs} epochs, SGD Nesterov + cosine per step + label smoothing 0.1 + weight "
        "decay on weights; the same initial weights, on-device tensors and `augment_batch` "
        "augmentation (random shift pad 1) in every column. Only the training loop is timed. "
        f"Median of {args.repeats} interleaved repeats after one warm-up.",
        "",
        "| model | params | ours img/s (min..max) | bare loop img/s | DataLoader img/s | ours / "
        "bare | val acc (ours) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, params, med, lo, hi, acc in rows:
        lines.append(
            f"| {label} | {params:,} | {med['ours']:.0f} ({lo:.0f}..{hi:.0f}) | {med['bare']:.0f} "
            f"| {med['loader']:.0f} | {med['ours'] / med['bare']:.3f} | {acc:.3f} |"
        )
    if extra is None:
        lines += ["",
                  "The `blocks` space was not registered when this ran; only the small CNN is "
                  "measured."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
