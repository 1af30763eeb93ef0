"""Diagnostic: supernet training loss per epoch, with children restricted or the recipe changed.

Trains a ``blocks`` supernet with the CLI's recipe pieces (SGD, cosine LR, label smoothing
0.1, augmentation, digits with val_fraction 0.4: 809 training images, batch 32: 25 steps
per epoch) and prints the mean training loss per epoch (chance: 2.30). Used for
supernet_digits.md's "children that train" section:

    OMP_NUM_THREADS=1 python results/benchmarks/supernet_train_diag.py SKELETON_JSON FIX_JSON EPOCHS

SKELETON_JSON: blocks skeleton arguments, e.g. '{"block_types": ["inception"]}'.
FIX_JSON: '{}' (uniform children), '{"_same_block": 1}' (one block type in every stage,
drawn by rejection) or a full architecture (that one child only). Environment: LR
(default 0.1), BS (32), WU (warm-up epochs, 0), CLIP (gradient-norm clip), NOZERO=1
(residual-closing norms start at 1 instead of 0), HEAD=1 (the classifier is a candidate
tagged with the block type of the last stage: one head per type).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

from cellblock.data import load_dataset
from cellblock.evaluators.training import TrainConfig, device_tensors, epoch_batches, make_optimizer
from cellblock.search_spaces import SearchSpace
from cellblock.search_spaces import blocks_space as bs
from cellblock.search_spaces.tags import candidate, tag_of
from cellblock.supernet import covers
from cellblock.supernet.bank import ParamBank
from cellblock.supernet.model import Supernet


def per_type_head() -> None:
    """Patch BlockNet and the blocks cover so that ``fc`` is keyed by the last stage's type."""
    orig_init, orig_cover = bs.BlockNet.__init__, covers.COVERS.get("blocks")

    def init(self, stem, stages, channels, num_classes):  # noqa: ANN001
        orig_init(self, stem, stages, channels, num_classes)
        candidate(self.fc, tag_of(stages[-1]))

    def cover(space):  # noqa: ANN001
        for prefix, m in orig_cover(space):
            if prefix != "fc":
                yield prefix, m
                continue
            for t in space.arguments()["block_types"]:
                yield "fc", candidate(nn.Linear(m.in_features, m.out_features), t)

    bs.BlockNet.__init__ = init
    covers.cover = cover


def main() -> None:
    kw, fix = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    if os.environ.get("HEAD"):
        per_type_head()
    data = load_dataset("digits", val_fraction=0.4)
    kw.setdefault("input_shape", tuple(data.input_shape))
    kw.setdefault("num_classes", 10)
    space = SearchSpace("blocks", **kw)
    torch.manual_seed(0)
    sn = Supernet(space, ParamBank.from_probes(covers.cover(space))).train()
    if os.environ.get("NOZERO"):
        for k, (_shape, _dtype, is_param) in sn.bank.entries.items():
            t = sn.bank.tensor(k)
            if is_param and t.ndim == 1 and k.rsplit("/", 1)[-1].startswith("weight") and not t.any():
                t.data.fill_(1.0)
    cfg = TrainConfig(epochs=epochs, batch_size=int(os.environ.get("BS", 32)),
                      lr=float(os.environ.get("LR", 0.1)), warmup_epochs=float(os.environ.get("WU", 0)))
    opt = make_optimizer(sn.bank, cfg)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    x, y, _, _ = device_tensors(data, torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    same = fix.pop("_same_block", None)
    full = len(fix) > 5
    step, t0 = 0, time.time()
    for ep in range(epochs):
        losses = []
        for _i, xb, yb in epoch_batches(x, y, data.augment, gen, opt, cfg, step):
            arch = fix
            for _ in range(0 if full else 100):
                arch = space.sample(rng)
                stages = {arch[k] for k in arch if k.endswith(".block")}
                if all(arch.get(k, v) == v for k, v in fix.items()) and (not same or len(stages) == 1):
                    break
            opt.zero_grad()
            loss = loss_fn(sn(xb, arch), yb)
            loss.backward()
            if os.environ.get("CLIP"):
                torch.nn.utils.clip_grad_norm_(sn.bank.parameters(), float(os.environ["CLIP"]))
            opt.step()
            losses.append(loss.item())
            step += 1
        print(f"ep {ep + 1} loss {np.mean(losses):.3f}", flush=True)
    print("time", time.time() - t0)


if __name__ == "__main__":
    main()
