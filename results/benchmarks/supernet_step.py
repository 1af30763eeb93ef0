"""A supernet training step's time on CPU (issue 26: before and after the oneDNN guard).

Trains a ``blocks`` supernet on digits for a fixed number of steps, one thread, and prints
the median time of a step (the children a step draws, forward, backward, SGD), per
skeleton. ``tiny`` is the skeleton of tests/supernet/test_supernet.py (stem 4 channels, so
its stride-2 projection shortcuts are 1x1 convolutions with 4 input channels: the
shape that crashed oneDNN's AVX2 kernels); ``default`` is the CLI's ``blocks`` skeleton.

    OMP_NUM_THREADS=1 python results/benchmarks/supernet_step.py [--skeleton tiny|default]
        [--steps 60] [--batch-size 64] [--repeats 3] [--no-mkldnn]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cellblock.data import load_dataset
from cellblock.evaluators.training import TrainConfig
from cellblock.search_spaces import SearchSpace
from cellblock.supernet.model import Supernet
from cellblock.supernet.train import train_supernet

SKELETONS = {
    "tiny": dict(stages=2, widths=[[4, 8], [8, 12]], strides=[1, 2], stem_width=4,
                 depth=[1, 2], block_types=["basic", "mbconv"], kernels=[3, 5],
                 expansions=[1, 2], attentions=["none", "se"]),
    "default": {},
}


def step_ms(skeleton: str, steps: int, batch_size: int) -> float:
    """Mean milliseconds per supernet step over ``steps`` steps (after one warm-up epoch)."""
    space = SearchSpace("blocks", **SKELETONS[skeleton])
    data = load_dataset("digits")
    per_epoch = len(data.y_train) // batch_size
    epochs = max(2, -(-steps // per_epoch) + 1)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.05, seed=0, device="cpu")
    times: list[float] = []
    last = [time.perf_counter()]

    def log(line: str) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train_supernet(Supernet.create(space, seed=0), data, cfg, sampling="uniform", log=log)
    return 1000 * statistics.median(times[1:]) / per_epoch  # epoch 1 warms up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--skeleton", default="tiny", choices=sorted(SKELETONS))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-mkldnn", action="store_true", help="torch.backends.mkldnn.enabled = False")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    runs = [step_ms(args.skeleton, args.steps, args.batch_size) for _ in range(args.repeats)]
    print(json.dumps({"skeleton": args.skeleton, "mkldnn": not args.no_mkldnn,
                      "batch_size": args.batch_size, "step_ms": [round(r, 2) for r in runs],
                      "median_step_ms": round(statistics.median(runs), 2),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
