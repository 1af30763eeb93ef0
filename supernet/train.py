"""Single-path one-shot training of a supernet, with atomic, resumable checkpoints.

The recipe is the stand-alone one of :mod:`cellblock.evaluators.training` (SGD with
Nesterov momentum, per-step cosine LR, label smoothing, weight decay on weights only,
batch augmentation on the device) and so is the loop
(:class:`~cellblock.evaluators.loop.TrainLoop`); each step
(:class:`SupernetSteps`) trains the children chosen by the sampling strategy
(:mod:`cellblock.supernet.sampler`). Only the slices a child uses get gradients; SGD
skips bank tensors that no child of the step touched.

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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellblock.core.devices import resolve_device
from cellblock.core.errors import ConfigError
from cellblock.data import Dataset
from cellblock.evaluators.cuda_graph import EAGER
from cellblock.evaluators.loop import TrainLoop, held
from cellblock.evaluators.training import TrainConfig
from cellblock.search_spaces.api import SearchSpace
from cellblock.supernet.bank import ParamBank
from cellblock.supernet.checkpoint import Recipe, SupernetCheckpoint, plain, save_checkpoint
from cellblock.supernet.model import Supernet
from cellblock.supernet.sampler import ARCH_SAMPLERS, DISTILLING
from cellblock.supernet.split import Split


def recipe_of(cfg: TrainConfig, sampling: str, split: Split | None = None,
              split_after: float = 0.0, sharing: str = "candidate") -> Recipe:
    """The recipe of a training (with the split's decisions and size)."""
    return Recipe(cfg, sampling, sharing, list(split.chunks) if split is not None else None,
                  split.n_groups if split is not None else 1,
                  float(split_after) if split is not None else 0.0)


def supernet_from_checkpoint(ckpt: SupernetCheckpoint,
                             device: str | torch.device = "cpu") -> Supernet:
    """The trained supernet stored in a checkpoint (loaded with :func:`load_checkpoint`)."""
    space = SearchSpace.from_spec(ckpt.space)
    entries = {k: (tuple(s), d, p) for k, (s, d, p) in ckpt.bank_entries.items()}
    banks = []
    for state in ckpt.banks:
        bank = ParamBank(entries, sharing=ckpt.sharing)
        bank.load_state_dict(state)
        banks.append(bank)
    split = Split.from_json(ckpt.split) if ckpt.split else None
    return Supernet(space, banks, split=split,
                    split_active=bool(ckpt.split_active)).to(resolve_device(device))


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
    resume: SupernetCheckpoint | None = None,
    log: Callable[[str], None] | None = None,
    val_fraction: float | None = None,
    split_after: float = 0.5,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Train ``supernet`` in place; checkpoint every ``checkpoint_every`` epochs and at the end.

    The loop is the stand-alone one (:class:`~cellblock.evaluators.loop.TrainLoop`): on
    CUDA, cudnn autotuning, bf16 autocast and channels-last batches, and the device held
    against latency measurements. The step stays eager (:data:`NO_GRAPH_REASON`); the
    results say so in ``train_step`` and ``graph_fallback``.

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

        dataset: How the checkpoint names the data, so that ``supernet rank`` can load it
            again (default ``data.name``; a custom ``.npz`` or folder needs its path).

    Returns:
        ``{"train_s", "steps", "epochs", "final_loss", "children", "group_children",
        "train_step", "graph_fallback"}`` (children trained per bank after the split);
        ``train_s`` sums the time of every session of this training.

    Raises:
        ConfigError: for an invalid recipe, sampling or ``split_after``.
        EvaluationError: if the loss becomes NaN or infinite.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    ARCH_SAMPLERS.get(sampling)
    if not 0.0 <= split_after < 1.0:
        raise ConfigError(f"--split-after must be in [0, 1), got {split_after}")
    with held(device) as hold:
        loop = TrainLoop(supernet, data, cfg, device, params=supernet.banks,
                         channels_last_weights=False)
        steps = SupernetSteps(supernet, loop, sampling, split_after)
        if resume is not None:
            steps.restore(resume)

        def epoch_end(lp: TrainLoop) -> None:
            if log is not None:
                log(f"epoch {lp.epoch}/{cfg.epochs}  loss {lp.final_loss:.4f}  "
                    f"children {steps.children}  {steps.train_s:.1f} s")
            if checkpoint is not None and (lp.last_epoch or lp.epoch % checkpoint_every == 0):
                save_checkpoint(checkpoint, steps.checkpoint(dataset or data.name, val_fraction,
                                                             lp.last_epoch))

        loop.run(steps, hold, epoch_end)
    return {"train_s": steps.train_s, "steps": loop.step, "epochs": loop.epoch,
            "final_loss": loop.final_loss, "children": steps.children,
            "group_children": steps.group_children, "train_step": EAGER,
            "graph_fallback": NO_GRAPH_REASON}


class SupernetSteps:
    """The supernet's training step for :class:`~cellblock.evaluators.loop.TrainLoop`:
    each step trains the children its sampling strategy draws, and the few-shot split
    starts at its step.

    Args:
        supernet: The supernet (on the loop's device).
        loop: The loop whose optimizer, scaler and loss it uses.
        sampling: The strategy's name in :data:`~cellblock.supernet.sampler.ARCH_SAMPLERS`.
        split_after: Fraction of the steps before a few-shot split starts.
    """

    def __init__(self, supernet: Supernet, loop: TrainLoop, sampling: str,
                 split_after: float) -> None:
        self.supernet, self.loop = supernet, loop
        self.sampling, self.split_after = sampling, split_after
        self.draw = ARCH_SAMPLERS.get(sampling)
        self.distill = sampling in DISTILLING
        self.rng = np.random.default_rng(loop.cfg.seed)
        self.split_step = (int(round(split_after * loop.total_steps))
                           if supernet.split is not None else None)
        if self.split_step is not None:
            supernet.split_active = False  # until step split_step (a resume restores it)
        #: Children trained (in all), and per bank after the split.
        self.children = 0
        self.group_children = [0] * len(supernet.banks)
        self._train_s_before = 0.0
        # per bank, its parameters in each of the optimizer's groups (see _step_banks)
        ids = [{id(p) for p in bank.parameters()} for bank in supernet.banks]
        self._bank_params = [[[p for p in g["params"] if id(p) in bank_ids]
                              for g in loop.optimizer.param_groups] for bank_ids in ids]
        self._with_grads = set(range(len(supernet.banks)))  # banks whose grads may be set

    @property
    def train_s(self) -> float:
        """Training seconds of every session so far."""
        return self._train_s_before + self.loop.train_s

    def restore(self, ckpt: SupernetCheckpoint) -> None:
        """Continue the training saved in ``ckpt`` (banks, loop, counters, random states)."""
        for bank, state in zip(self.supernet.banks, ckpt.banks, strict=True):
            bank.load_state_dict(state)
        self.supernet.split_active = bool(ckpt.split_active)
        self.loop.restore(ckpt.loop_state())
        self.rng.bit_generator.state = ckpt.np_rng
        self.children, self.group_children = ckpt.children, list(ckpt.group_children)
        self._train_s_before = ckpt.train_s

    def new_epoch(self) -> None:
        """Nothing to do: the steps are eager (no graph to capture again)."""

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Train the children drawn for this step on ``(xb, yb)``; their summed loss."""
        sn, loop = self.supernet, self.loop
        if self.split_step is not None and not sn.split_active and loop.step >= self.split_step:
            sn.activate_split(loop.optimizer)
        archs = self.draw(sn.space, self.rng)
        for b in self._with_grads:  # the only banks with gradients: the last step's
            for p in sn.banks[b].parameters():
                p.grad = None
        self._with_grads = {sn.group(arch) for arch in archs}
        total = torch.zeros((), device=loop.device)
        teacher = None
        for arch in archs:
            if sn.split is None or sn.split_active:
                self.group_children[sn.group(arch)] += 1
            with loop.autocast():
                logits = sn(xb, arch)
                if teacher is None:
                    loss = loop.loss_fn(logits, yb) / len(archs)
                    if self.distill:
                        teacher = logits.detach().float().softmax(1)
                else:  # in-place distillation from the first (largest) child
                    loss = -(teacher * logits.float().log_softmax(1)).sum(1).mean() / len(archs)
            loop.backward(loss)
            total += loss.detach()
        self._step_banks(self._with_grads)
        self.children += len(archs)
        return total

    def _step_banks(self, banks: set[int]) -> None:
        """The optimizer step over the parameters of ``banks`` only.

        The other banks have no gradients, so SGD would skip them, but it still scans
        every parameter of its groups: with a few-shot split of 8 banks that scan, and
        clearing every gradient, cost about 4 ms a step. The groups keep their
        hyper-parameters (the learning rate of this step); the state is per parameter, so
        the trajectory and the checkpoints are the same.
        """
        opt = self.loop.optimizer
        groups = opt.param_groups
        if len(self._bank_params) > 1:
            opt.param_groups = [{**g,
                                 "params": [p for b in sorted(banks)
                                            for p in self._bank_params[b][i]]}
                                for i, g in enumerate(groups)]
        try:
            self.loop.optimizer_step()
        finally:
            opt.param_groups = groups

    def checkpoint(self, dataset: str, val_fraction: float | None,
                   done: bool) -> SupernetCheckpoint:
        """The checkpoint of the training so far (without the optimizer once ``done``)."""
        sn, state = self.supernet, self.loop.state()
        return SupernetCheckpoint(
            space=plain(sn.space.spec()),
            recipe=recipe_of(self.loop.cfg, self.sampling, sn.split, self.split_after,
                             sn.bank.sharing),
            dataset=dataset, val_fraction=val_fraction, bank_entries=sn.bank.describe(),
            split=sn.split.to_json() if sn.split is not None else None,
            split_active=sn.split_active, sharing=sn.bank.sharing,
            banks=[b.state_dict() for b in sn.banks],
            optimizer=None if done else state["optimizer"],
            scaler=state["scaler"], generator=state["generator"], torch_rng=state["torch_rng"],
            np_rng=self.rng.bit_generator.state, epoch=state["epoch"], step=state["step"],
            children=self.children, group_children=list(self.group_children),
            train_s=self.train_s, final_loss=state["final_loss"], done=done)
