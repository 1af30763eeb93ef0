"""Single-path one-shot training of a supernet, with atomic, resumable checkpoints.

The recipe is the stand-alone one of :mod:`cellblock.evaluators.training` (SGD with
Nesterov momentum, per-step cosine LR, label smoothing, weight decay on weights only,
batch augmentation on the device) and reuses its pieces; each step trains the children
chosen by the sampling strategy (:mod:`cellblock.supernet.sampler`). Only the slices a
child uses get gradients; SGD skips bank tensors that no child of the step touched.

A checkpoint (``torch.save`` of a dict, written to a temporary file and renamed) holds
the format version, the space spec (name and skeleton), the recipe, the few-shot split
(if any), every bank, the optimizer (until training is done), the epoch/step counters
and every random state, so training resumes after a kill exactly where the last
checkpoint left it.

Few-shot training (``split``): the step budget is shared. The first ``split_after`` of
the steps train one supernet (bank 0); then every group's bank starts from it (weights
and momentum, as few-shot NAS transfers the one-shot supernet's weights) and each step's
children train their own group's bank. Children are drawn as without a split, so each
group gets the share of the steps its children have in the space.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellblock.core.devices import resolve_device
from cellblock.core.errors import ConfigError
from cellblock.data import Dataset
from cellblock.evaluators.cuda_graph import EAGER, cudnn_autotune
from cellblock.evaluators.training import (
    TrainConfig,
    _amp_setup,
    _check_finite,
    device_tensors,
    epoch_batches,
    make_optimizer,
    step_schedule,
)
from cellblock.search_spaces.api import SearchSpace
from cellblock.supernet.bank import ParamBank
from cellblock.supernet.model import Supernet
from cellblock.supernet.sampler import ARCH_SAMPLERS, DISTILLING
from cellblock.supernet.split import Split

FORMAT = "cellblock-supernet"
VERSION = 4
#: What changed in each format version (for the error on an old checkpoint).
VERSION_NOTES = {3: "before few-shot splits (one bank)"}
#: Recipe fields that must match when a checkpoint is resumed.
RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
               "label_smoothing", "warmup_epochs", "seed", "sampling", "sharing", "split", "split_groups",
               "split_after")


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists)."""
    return json.loads(json.dumps(value))


def recipe_of(cfg: TrainConfig, sampling: str, split: Split | None = None,
              split_after: float = 0.0, sharing: str = "candidate") -> dict[str, Any]:
    """The JSON-able recipe stored in a checkpoint (with the split's decisions and size)."""
    return plain({**dataclasses.asdict(cfg), "sampling": sampling, "sharing": sharing,
                  "split": list(split.chunks) if split is not None else None,
                  "split_groups": split.n_groups if split is not None else 1,
                  "split_after": float(split_after) if split is not None else 0.0})


def train_config_of(recipe: Mapping[str, Any], **changes: Any) -> TrainConfig:
    """The :class:`TrainConfig` part of a stored recipe, with ``changes``."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in recipe.items() if k in fields}, **changes})


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` atomically (temporary file in the same folder, fsync, rename)."""
    from cellblock.core.fileio import atomic_save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(dict(payload), path)  # a failed or interrupted write leaves no temporary file


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a supernet checkpoint.

    Raises:
        ConfigError: if the file is missing, unreadable, corrupt or of another format.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"supernet checkpoint {str(path)!r} not found; train one with "
                          "'cellblock supernet train --out PATH'")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling/zip failure means a corrupt file
        raise ConfigError(
            f"supernet checkpoint {str(path)!r} is corrupt or not a checkpoint "
            f"({type(exc).__name__}); delete it and train again"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConfigError(f"{str(path)!r} is not a cellblock supernet checkpoint; "
                          "train one with 'cellblock supernet train'")
    if ckpt.get("version") != VERSION:
        note = VERSION_NOTES.get(ckpt.get("version"))
        raise ConfigError(f"supernet checkpoint {str(path)!r} has format version "
                          f"{ckpt.get('version')!r}{f' ({note})' if note else ''}, this cellblock "
                          f"reads {VERSION}; train it again with 'cellblock supernet train'")
    return ckpt


def check_space(ckpt: Mapping[str, Any], space: SearchSpace, path: str | Path) -> None:
    """Raise ConfigError unless ``ckpt`` was trained for ``space`` (same name and skeleton)."""
    want, have = plain(space.spec()), ckpt["space"]
    if want != have:
        diff = sorted(k for k in set(want["kwargs"]) | set(have["kwargs"])
                      if want["kwargs"].get(k) != have["kwargs"].get(k))
        what = f"space {have['ref']!r}" if want["ref"] != have["ref"] else (
            f"another skeleton (differs in {', '.join(diff)})")
        raise ConfigError(
            f"supernet checkpoint {str(path)!r} was trained for {what}, not for space "
            f"{want['ref']!r} with {want['kwargs']}; use the matching --space/--space-arg or retrain"
        )


def supernet_from_checkpoint(ckpt: Mapping[str, Any], device: str | torch.device = "cpu") -> Supernet:
    """The trained supernet stored in a checkpoint (loaded with :func:`load_checkpoint`)."""
    space = SearchSpace.from_spec(ckpt["space"])
    entries = {k: (tuple(s), d, p) for k, (s, d, p) in ckpt["bank_entries"].items()}
    banks = []
    for state in ckpt["banks"]:
        bank = ParamBank(entries, sharing=ckpt.get("sharing", "candidate"))
        bank.load_state_dict(state)
        banks.append(bank)
    split = Split.from_json(ckpt["split"]) if ckpt.get("split") else None
    return Supernet(space, banks, split=split,
                    split_active=bool(ckpt.get("split_active", True))).to(resolve_device(device))


#: Why supernet steps are not captured as one CUDA graph (recorded with the results).
NO_GRAPH_REASON = "each supernet step trains other sampled children: no single graph to capture"


def train_supernet(
    supernet: Supernet,
    data: Dataset,
    cfg: TrainConfig,
    *,
    sampling: str = "uniform",
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    val_fraction: float | None = None,
    split_after: float = 0.5,
) -> dict[str, Any]:
    """Train ``supernet`` in place (arguments and results: :func:`_train_supernet`).

    On CUDA it uses the stand-alone fast path's settings where they apply: cudnn
    autotuning, bf16 autocast and channels-last. The step stays eager
    (:data:`NO_GRAPH_REASON`); the results say so in ``train_step`` and ``graph_fallback``.
    """
    cfg.validate()
    with cudnn_autotune(resolve_device(cfg.device)):
        out = _train_supernet(supernet, data, cfg, sampling=sampling, checkpoint=checkpoint,
                              checkpoint_every=checkpoint_every, resume=resume, log=log,
                              val_fraction=val_fraction, split_after=split_after)
    return {**out, "train_step": EAGER, "graph_fallback": NO_GRAPH_REASON}


def _train_supernet(
    supernet: Supernet,
    data: Dataset,
    cfg: TrainConfig,
    *,
    sampling: str = "uniform",
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    val_fraction: float | None = None,
    split_after: float = 0.5,
) -> dict[str, Any]:
    """Train ``supernet`` in place; checkpoint every ``checkpoint_every`` epochs and at the end.

    Args:
        supernet: The supernet (its bank is trained).
        data: The dataset (train split only).
        cfg: The recipe (``epochs``, ``batch_size``, ``lr``... ``seed``, ``device``).
        sampling: ``uniform``, ``fair``, ``sandwich`` or ``sandwich-kd``.
        checkpoint: Where checkpoints go (None: none written).
        checkpoint_every: Epochs between checkpoints.
        resume: A checkpoint of this same training to continue from.
        log: Called with one line per epoch.
        val_fraction: The split ``data`` was loaded with (None: the dataset's default),
            stored so that ranking and search evaluate on the same held-out images.
        split_after: With a few-shot supernet, the fraction of the steps trained as one
            supernet before the groups' banks start from it (see the module doc).

    Returns:
        ``{"train_s", "steps", "epochs", "final_loss", "children", "group_children"}``
        (children trained per bank after the split); ``train_s`` sums the time of every session of this
        training.
    """
    cfg.validate()
    draw = ARCH_SAMPLERS.get(sampling)
    distill = sampling in DISTILLING
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    x_train, y_train, _, _ = device_tensors(data, device)
    n = len(y_train)
    bs, steps_per_epoch, total_steps, warmup_steps = step_schedule(cfg, n)
    supernet.to(device).train()
    amp_dtype, use_scaler = _amp_setup(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    if not 0.0 <= split_after < 1.0:
        raise ConfigError(f"--split-after must be in [0, 1), got {split_after}")
    optimizer = make_optimizer(supernet.banks, cfg)
    split_step = int(round(split_after * total_steps)) if supernet.split is not None else None
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    losses = torch.zeros(steps_per_epoch, device=device)
    step = epoch_done = children = 0
    group_children = [0] * len(supernet.banks)
    if split_step is not None:
        supernet.split_active = False  # until step split_step (a resume restores it)
    train_s, final_loss = 0.0, float("nan")
    if resume is not None:
        for bank, state in zip(supernet.banks, resume["banks"], strict=True):
            bank.load_state_dict(state)
        supernet.split_active = bool(resume.get("split_active", True))
        optimizer.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        gen.set_state(resume["generator"].to(gen.get_state().device))
        torch.set_rng_state(resume["torch_rng"])
        rng.bit_generator.state = resume["np_rng"]
        step, epoch_done, children = resume["step"], resume["epoch"], resume["children"]
        group_children = list(resume["group_children"])
        train_s, final_loss = resume["train_s"], resume["final_loss"]

    def payload(done: bool) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "space": plain(supernet.space.spec()),
            "recipe": recipe_of(cfg, sampling, supernet.split, split_after, supernet.bank.sharing),
            "dataset": data.name,
            "val_fraction": val_fraction, "bank_entries": supernet.bank.describe(),
            "split": supernet.split.to_json() if supernet.split is not None else None,
            "split_active": supernet.split_active, "sharing": supernet.bank.sharing,
            "banks": [b.state_dict() for b in supernet.banks],
            "optimizer": None if done else optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "np_rng": rng.bit_generator.state, "epoch": epoch_done, "step": step,
            "children": children, "group_children": group_children, "train_s": train_s,
            "final_loss": final_loss, "done": done,
        }

    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    for epoch in range(epoch_done, cfg.epochs):
        if step >= total_steps:
            break
        t0 = time.perf_counter()
        done = 0
        for i, xb, yb in epoch_batches(x_train, y_train, data.augment, gen, optimizer, cfg, step, fmt):
            if split_step is not None and not supernet.split_active and step >= split_step:
                supernet.activate_split(optimizer)
            archs = draw(supernet.space, rng)
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            teacher = None
            for arch in archs:
                if supernet.split is None or supernet.split_active:
                    group_children[supernet.group(arch)] += 1
                ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
                with ctx:
                    logits = supernet(xb, arch)
                    if teacher is None:
                        loss = loss_fn(logits, yb) / len(archs)
                        if distill:
                            teacher = logits.detach().float().softmax(1)
                    else:  # in-place distillation from the first (largest) child
                        loss = -(teacher * logits.float().log_softmax(1)).sum(1).mean() / len(archs)
                (scaler.scale(loss) if scaler is not None else loss).backward()
                total += loss.detach()
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            losses[i] = total
            children += len(archs)
            step += 1
            done = i + 1
        _check_finite(losses[:done], done, epoch, 0)
        final_loss = float(losses[:done].mean()) if done else final_loss
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s += time.perf_counter() - t0
        epoch_done = epoch + 1
        if log is not None:
            log(f"epoch {epoch_done}/{cfg.epochs}  loss {final_loss:.4f}  "
                f"children {children}  {train_s:.1f} s")
        last = epoch_done >= cfg.epochs or step >= total_steps
        if checkpoint is not None and (last or epoch_done % checkpoint_every == 0):
            save_checkpoint(checkpoint, payload(last))
    return {"train_s": train_s, "steps": step, "epochs": epoch_done,
            "final_loss": final_loss, "children": children, "group_children": group_children}
