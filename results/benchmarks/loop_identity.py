"""Fingerprint of deterministic CPU trainings: stand-alone, supernet, ranking.

Prints (and with ``--out`` writes) one JSON object of every number the runs give that does
not depend on the clock: losses, accuracies, step and child counts, sha256 of the trained
weights, of the optimizer and of every random-number state a checkpoint holds, and the
error messages of two diverging runs. Run it before and after a change of the training
loop: the two files must be equal byte for byte (``cmp before.json after.json``).

    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/loop_identity.py --out /tmp/after.json
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellblock.core.errors import EvaluationError
from cellblock.data import Dataset, load_dataset
from cellblock.evaluators.training import TrainConfig, train_and_evaluate
from cellblock.search_spaces import SearchSpace
from cellblock.supernet.checkpoint import load_checkpoint
from cellblock.supernet.model import Supernet
from cellblock.supernet.rank import rank_supernet
from cellblock.supernet.split import Split
from cellblock.supernet.train import supernet_from_checkpoint, train_supernet

TINY = dict(stages=2, widths=[[4, 8], [8, 12]], strides=[1, 2], stem_width=4, depth=[1, 2],
            block_types=["basic", "mbconv"], kernels=[3, 5], expansions=[1, 2],
            attentions=["none", "se"])
#: Result keys that depend on the clock.
TIMED = {"train_s", "eval_s", "images_per_s", "supernet_s", "standalone_s", "supernet_train_s",
         "supernet_eval_s", "supernet_eval_no_recal_s", "children_per_s", "cost_ratio",
         "standalone_total_s", "standalone_train_s", "baselines", "verdict", "equal_cost_accuracy"}


def digest(value: Any) -> str:
    """sha256 (16 hex) of tensors, dicts, lists and plain values, in order."""
    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if torch.is_tensor(v):
            h.update(str((v.dtype, tuple(v.shape))).encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                     if v.numel() else b"")
        elif isinstance(v, dict):
            for k in v:
                h.update(repr(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                feed(x)
        else:
            h.update(repr(v).encode())

    feed(value)
    return h.hexdigest()[:16]


def untimed(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in TIMED}


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def state_print(s: dict[str, Any]) -> dict[str, Any]:
    return {"epoch": s["epoch"], "step": s["step"], "final_loss": s["final_loss"],
            "model": digest(s["model"]), "optimizer": digest(s["optimizer"]),
            "generator": digest(s["generator"]), "torch_rng": digest(s["torch_rng"])}


def standalone(digits: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cfg = TrainConfig(epochs=2, seed=5)
    states: list[dict[str, Any]] = []
    model = small_cnn()
    res = train_and_evaluate(model, digits, cfg,
                             on_epoch_end=lambda s: states.append(copy.deepcopy(s)))
    out["plain"] = {**untimed(res), "weights": digest(model.state_dict()),
                    "states": [state_print(s) for s in states]}
    again = small_cnn(1)
    res = train_and_evaluate(again, digits, cfg, resume=states[0])
    out["resumed"] = {**untimed(res), "weights": digest(again.state_dict())}
    cfg = TrainConfig(epochs=3, batch_size=100, lr=0.08, momentum=0.8, nesterov=False,
                      weight_decay=1e-3, label_smoothing=0.0, warmup_epochs=0.5, seed=2,
                      max_steps=17)
    model = small_cnn(2)
    res = train_and_evaluate(model, digits, cfg)
    out["warmup_max_steps"] = {**untimed(res), "weights": digest(model.state_dict())}
    space = SearchSpace("blocks", input_shape=(1, 8, 8), num_classes=10, **TINY)
    torch.manual_seed(4)
    model = space.build(space.sample(np.random.default_rng(4)))
    res = train_and_evaluate(model, digits, TrainConfig(epochs=1, batch_size=128, seed=4))
    out["blocks_child"] = {**untimed(res), "weights": digest(model.state_dict())}
    from cellblock.search_spaces.darts import darts_v2_arch

    torch.manual_seed(0)
    model = SearchSpace("darts", C=4, layers=3, drop_path=0.3).build(darts_v2_arch())
    res = train_and_evaluate(model, digits, TrainConfig(epochs=2, batch_size=256, seed=0))
    out["darts_drop_path"] = {**untimed(res), "weights": digest(model.state_dict()),
                              "drop_path_prob": model.drop_path_prob}
    try:
        train_and_evaluate(small_cnn(), digits, TrainConfig(epochs=1, lr=1e6, seed=0))
        out["huge_lr"] = "no error"
    except EvaluationError as exc:
        out["huge_lr"] = str(exc)
    return out


def supernets(digits: Dataset, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    space = SearchSpace("blocks", input_shape=(1, 8, 8), num_classes=10, **TINY)
    cfg = TrainConfig(epochs=2, batch_size=256, lr=0.05, seed=3)
    for sampling in ("uniform", "fair", "sandwich-kd"):
        sn = Supernet.create(space, seed=0)
        lines: list[str] = []
        res = train_supernet(sn, digits, cfg, sampling=sampling, checkpoint=tmp / f"{sampling}.pt",
                             log=lambda s, lines=lines: lines.append(s.rsplit("  ", 1)[0]))
        ckpt = load_checkpoint(tmp / f"{sampling}.pt")
        out[sampling] = {**untimed(res), "log": lines,
                         "banks": digest([b.state_dict() for b in sn.banks]),
                         "checkpoint": digest({k: v for k, v in ckpt.to_payload().items()
                                               if k != "train_s"})}
    split = Split.make(space, "stage1.block,stage2.block")
    cfg = TrainConfig(epochs=3, batch_size=256, lr=0.05, seed=1, warmup_epochs=1.0)
    sn = Supernet.create(space, seed=0, split=split)
    ckpt, first = tmp / "few.pt", tmp / "few1.pt"
    lines = []

    def keep_first(line: str) -> None:
        lines.append(line.rsplit("  ", 1)[0])
        if line.startswith("epoch 2/"):
            shutil.copy(ckpt, first)

    res = train_supernet(sn, digits, cfg, sampling="sandwich", checkpoint=ckpt, log=keep_first,
                         split_after=0.4, val_fraction=None)
    final = load_checkpoint(ckpt)
    out["few_shot"] = {**untimed(res), "log": lines,
                       "banks": digest([b.state_dict() for b in sn.banks]),
                       "checkpoint": digest({k: v for k, v in final.items() if k != "train_s"})}
    resume = load_checkpoint(first)
    again = supernet_from_checkpoint(resume)
    res = train_supernet(again, digits, cfg, sampling="sandwich", checkpoint=tmp / "few_b.pt",
                         resume=resume, split_after=0.4)
    out["few_shot_resumed"] = {**{k: v for k, v in untimed(res).items()},
                               "banks": digest([b.state_dict() for b in again.banks])}
    try:
        train_supernet(Supernet.create(space, seed=0), digits,
                       TrainConfig(epochs=1, batch_size=64, lr=1e6, seed=0))
        out["huge_lr"] = "no error"
    except EvaluationError as exc:
        out["huge_lr"] = str(exc)
    return out


def ranking(digits: Dataset, tmp: Path) -> dict[str, Any]:
    space = SearchSpace("blocks", input_shape=(1, 8, 8), num_classes=10, **TINY)
    sn = Supernet.create(space, seed=0)
    train_supernet(sn, digits, TrainConfig(epochs=1, batch_size=256, seed=0),
                   checkpoint=tmp / "r.pt")
    ckpt = load_checkpoint(tmp / "r.pt")
    sn = supernet_from_checkpoint(ckpt)
    res = rank_supernet(sn, ckpt, digits, samples=3, epochs=1, out=tmp / "rank", seed=0,
                        batch_size=256, seeds=2, baselines=True)
    base = {name: {k: v for k, v in b.items() if k in ("failed", "first_error")
                   or (name in ("params", "macs", "synflow", "naswot") and k == "kendall_tau")}
            for name, b in res["baselines"].items()}
    rows = []
    for line in (tmp / "rank" / "rank.csv").read_text().splitlines():
        cells = line.split(",")
        rows.append(cells[:9] + cells[11:])  # not equal_cost_accuracy, standalone_train_s
    keys = list(json.loads((tmp / "rank" / "rank.json").read_text()))
    return {**untimed(res), "baselines_untimed": base, "csv": rows, "rank_json_keys": keys}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    digits = load_dataset("digits")
    with tempfile.TemporaryDirectory() as tmp:
        result = {"standalone": standalone(digits), "supernet": supernets(digits, Path(tmp)),
                  "rank": ranking(digits, Path(tmp))}
    text = json.dumps(result, indent=1, sort_keys=True, default=str) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
