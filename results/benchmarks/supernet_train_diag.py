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
(residual-closing norms start at 1 instead of 0), PROJ=1 or PROJ=scaffold:F (see
:func:`shared_stream`; PROJ_NAME=downsample: the added projection shares the tensors of
the residual types' projection), HEAD=1 (the classifier is a candidate
tagged with the block type of the last stage: one head per type), OPT=adam (AdamW on
SGD's parameter groups, LR is then Adam's peak rate), SHARING (the bank's sharing,
candidate or norm), FROZENBN=1 (every 1-D weight and bias outside the classifier,
i.e. the norms' affine parameters and SE biases, fixed at their start, except the scales
that start at zero), SCHED (which children
each step trains, below), END=1 (after training: the mean loss and accuracy of 64 uniform
children, each on a random batch of 128 training images, BN in train mode, no gradient;
END=2 adds the loss per block type, over 16 homogeneous children of that type).

SCHED (with uniform FIX_JSON '{}'): ``curriculum:F`` (a child is homogeneous, one block
type in every stage, with probability 1 - step / (F x steps), then uniform);
``homog:F`` (homogeneous for the first F of the steps, then uniform); ``largest:F``
(the largest child, every numeric decision at its maximum and random block types, for
the first F of the steps, then uniform); ``ps`` (progressive shrinking in 4 equal phases:
largest; + elastic kernel; + elastic depth; + elastic width and other options; block
types random throughout, homogeneous too with PSH=1); ``sandwich`` (largest, smallest
and two uniform children per step); ``sampler:NAME`` (a registered supernet sampling,
e.g. ``sampler:fair``).
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
from cellblock.evaluators.loop import device_tensors, epoch_batches, make_optimizer
from cellblock.evaluators.training import TrainConfig
from cellblock.search_spaces import SearchSpace
from cellblock.search_spaces import blocks_space as bs
from cellblock.search_spaces.samplers import Sampler
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


class Constrained(Sampler):
    """Random child, numeric decisions pinned to their maximum / minimum and/or one block type."""

    def __init__(self, rng, pin_max=(), homog=False, pin_min=()):  # noqa: ANN001
        super().__init__()
        self.rng, self.homog = rng, homog
        self.pin_max, self.pin_min = tuple(pin_max), tuple(pin_min)
        self.block = None

    def _pick(self, name, domain):  # noqa: ANN001
        values = domain.values()
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        suffix = name.split(".", 1)[-1]
        if numeric and ("*" in self.pin_max or suffix in self.pin_max):
            return max(values)
        if numeric and ("*" in self.pin_min or suffix in self.pin_min):
            return min(values)
        if self.homog and suffix == "block":
            if self.block is None:
                self.block = domain.sample(self.rng)
            return self.block
        return domain.sample(self.rng)


def _homog(space, rng, block):  # noqa: ANN001
    """A random child with ``block`` in every stage."""
    smp = Constrained(rng, homog=True)
    smp.block = block
    smp.build = False
    space.run(smp)
    return dict(smp.decisions)


def draw(space, rng, step, total, sched):  # noqa: ANN001
    def c(**kw):  # noqa: ANN003
        smp = Constrained(rng, **kw)
        smp.build = False
        space.run(smp)
        return dict(smp.decisions)

    kind, _, frac = sched.partition(":")
    f = float(frac) if frac and kind != "sampler" else 0.5
    t = step / total
    if kind == "curriculum":
        return [c(homog=rng.random() < max(0.0, 1 - t / f))]
    if kind == "homog":
        return [c(homog=t < f)]
    if kind == "largest":
        return [c(pin_max=("*",))] if t < f else [space.sample(rng)]
    if kind == "ps":
        homog = bool(os.environ.get("PSH")) and t < 0.75
        phase = min(3, int(t * 4))
        pins = [("*",), ("depth", "width", "expansion", "growth", "cardinality"),
                ("width", "expansion", "growth", "cardinality"), ()][phase]
        return [c(pin_max=pins, homog=homog)]
    if kind == "sampler":  # a registered supernet sampling (uniform, fair, sandwich...)
        from cellblock.supernet.sampler import ARCH_SAMPLERS

        return ARCH_SAMPLERS.get(frac)(space, rng)
    if kind == "sandwich":
        return [c(pin_max=("*",)), c(pin_min=("*",)), space.sample(rng), space.sample(rng)]
    raise SystemExit(f"unknown SCHED {sched!r}")


#: The attribute name of the added projection (PROJ_NAME): ``stream`` keeps it apart from
#: basic/bottleneck/resnext's ``downsample``; ``downsample`` shares their tensors too.
STREAM = [os.environ.get("PROJ_NAME", "stream")]


def _stream(block: nn.Module) -> nn.Module:
    return getattr(block, STREAM[0])


#: PROJ=scaffold:F: the weight of the scaffold stream (1 - t / F, then 0; 0 after training).
ALPHA = [1.0]


def shared_stream(scaffold: bool = False) -> None:
    """PROJ=1: preact, mbconv, dense and inception also add the stage's shared projection of
    their input (``blocks._projection``) to their output, as basic/bottleneck/resnext do, so
    every block type writes to one residual stream (an architecture change: experiment only).

    ``scaffold`` (PROJ=scaffold:F): the blocks keep their own architecture and shortcuts and
    add ``ALPHA * projection(x)`` where they have no residual, ALPHA decaying from 1 to 0
    over the first F of the steps (a training-only scaffold, as DARTS-'s auxiliary skip):
    after training the children are the space's own networks again."""
    import importlib

    B = importlib.import_module("cellblock.search_spaces.blocks")

    def patch(cls, out_of, make_out):  # noqa: ANN001
        init, fwd = cls.__init__, cls.forward

        def new_init(self, in_channels, width, stride=1, **kw):  # noqa: ANN001, ANN003
            init(self, in_channels, width, stride, **kw)
            setattr(self, STREAM[0], B._projection(in_channels, out_of(self, width), stride))

        def new_fwd(self, x):  # noqa: ANN001
            return make_out(self, fwd, x)

        cls.__init__, cls.forward = new_init, new_fwd

    def preact_out(self, fwd, x):  # noqa: ANN001
        pre = self.relu(self.bn1(x))
        out = self.attn(self.conv2(self.relu(self.bn2(self.conv1(pre)))))
        return out + _stream(self)(x)

    if scaffold:
        def plus(self, fwd, x, real_residual):  # noqa: ANN001
            out = fwd(self, x)
            if real_residual or ALPHA[0] == 0.0:
                return out
            return out + ALPHA[0] * _stream(self)(x)

        patch(B.PreActBlock, lambda self, w: w,
              lambda self, fwd, x: plus(self, fwd, x, isinstance(_stream(self), nn.Identity)))
        patch(B.MBConv, lambda self, w: w,
              lambda self, fwd, x: plus(self, fwd, x, self.use_residual))
        patch(B.DenseBlock, lambda self, w: w, lambda self, fwd, x: plus(self, fwd, x, False))
        patch(B.InceptionBlock, lambda self, w: w, lambda self, fwd, x: plus(self, fwd, x, False))
        return
    patch(B.PreActBlock, lambda self, w: w, preact_out)
    B.PreActBlock.last_norm = lambda self: None

    def mb_out(self, fwd, x):  # noqa: ANN001
        out = self.project(self.attn(self.depthwise(self.expand(x))))
        return out + _stream(self)(x)

    patch(B.MBConv, lambda self, w: w, mb_out)
    B.MBConv.last_norm = lambda self: self.project[1]
    patch(B.DenseBlock, lambda self, w: w, lambda self, fwd, x: fwd(self, x) + _stream(self)(x))
    patch(B.InceptionBlock, lambda self, w: w, lambda self, fwd, x: fwd(self, x) + _stream(self)(x))


def main() -> None:
    kw, fix = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    proj = os.environ.get("PROJ", "")
    if proj:
        shared_stream(scaffold=proj.startswith("scaffold"))
    if os.environ.get("HEAD"):
        per_type_head()
    data = load_dataset("digits", val_fraction=0.4)
    kw.setdefault("input_shape", tuple(data.input_shape))
    kw.setdefault("num_classes", 10)
    space = SearchSpace("blocks", **kw)
    torch.manual_seed(0)
    sharing = os.environ.get("SHARING", "candidate")
    sn = Supernet(space, ParamBank.from_probes(covers.cover(space), sharing)).train()
    if os.environ.get("NOZERO"):
        for k, (_shape, _dtype, is_param) in sn.bank.entries.items():
            t = sn.bank.tensor(k)
            if is_param and t.ndim == 1 and k.rsplit("/",
                                                     1)[-1].startswith("weight") and not t.any():
                t.data.fill_(1.0)
    if os.environ.get("FROZENBN"):  # norm scales/shifts fixed (except zero-started scales)
        for k, (_shape, _dtype, is_param) in sn.bank.entries.items():
            t = sn.bank.tensor(k)
            if is_param and t.ndim == 1 and not k.startswith("fc/") and (
                    t.any() or k.rsplit("/", 1)[-1].startswith("bias")):
                t.requires_grad_(False)
    cfg = TrainConfig(epochs=epochs, batch_size=int(os.environ.get("BS", 32)),
                      lr=float(os.environ.get("LR", 0.1)),
                      warmup_epochs=float(os.environ.get("WU", 0)))
    opt = make_optimizer(sn.bank, cfg)
    if os.environ.get("OPT") == "adam":  # same parameter groups (weight decay), Adam's update
        opt = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]}
                                 for g in opt.param_groups], lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    x, y, _, _ = device_tensors(data, torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    same = fix.pop("_same_block", None)
    full = len(fix) > 5
    step, t0 = 0, time.time()
    sched = os.environ.get("SCHED")
    total = epochs * (len(x) // cfg.batch_size)
    for ep in range(epochs):
        losses = []
        for _i, xb, yb in epoch_batches(x, y, data.augment, gen, opt, cfg, step):
            arch = fix
            for _ in range(0 if full or sched else 100):
                arch = space.sample(rng)
                stages = {arch[k] for k in arch if k.endswith(".block")}
                if all(arch.get(k, v) == v for k, v in fix.items()) and (not same
                                                                         or len(stages) == 1):
                    break
            opt.zero_grad()
            if proj.startswith("scaffold"):
                ALPHA[0] = max(0.0, 1.0 - step / (total * float(proj.partition(":")[2] or 0.5)))
            archs = draw(space, rng, step, total, sched) if sched else [arch]
            loss = sum(loss_fn(sn(xb, a), yb) for a in archs) / len(archs)
            loss.backward()
            if os.environ.get("CLIP"):
                torch.nn.utils.clip_grad_norm_(sn.bank.parameters(), float(os.environ["CLIP"]))
            opt.step()
            losses.append(loss.item())
            step += 1
        print(f"ep {ep + 1} loss {np.mean(losses):.3f}", flush=True)
    print("time", time.time() - t0)
    ALPHA[0] = 0.0  # children as the space builds them (PROJ=scaffold)
    if os.environ.get("END"):
        erng = np.random.default_rng(123)
        eg = torch.Generator().manual_seed(123)
        losses, accs = [], []
        with torch.no_grad():
            for _ in range(64):
                idx = torch.randperm(len(x), generator=eg)[:128]
                logits = sn(x[idx], space.sample(erng))
                losses.append(loss_fn(logits, y[idx]).item())
                accs.append((logits.argmax(1) == y[idx]).float().mean().item())
        print(f"uniform children: loss {np.mean(losses):.3f} acc {np.mean(accs):.3f}")
        if os.environ["END"] == "2":  # per block type, homogeneous children
            for t in space.arguments()["block_types"]:
                ls = []
                with torch.no_grad():
                    for _ in range(16):
                        idx = torch.randperm(len(x), generator=eg)[:128]
                        a = _homog(space, erng, t)
                        ls.append(loss_fn(sn(x[idx], a), y[idx]).item())
                print(f"  {t}: loss {np.mean(ls):.3f}")


if __name__ == "__main__":
    main()
