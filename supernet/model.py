"""The supernet: shared banks of weights, any child of the space run through them.

A child is the network the ordinary builder makes for an architecture
(``space.build(arch)``); the supernet runs it with its tensors swapped for views of the
shared bank (``torch.func.functional_call``), so gradients and BN statistics land in the
bank. :meth:`Supernet.extract` copies the child's slices into a fresh ``space.build(arch)``:
the same module, parameter count and MACs as the normal pipeline's.

A few-shot supernet (:mod:`cellblock.supernet.split`) holds one bank per group of a
:class:`~cellblock.supernet.split.Split`; every method routes a child to its group's
bank once the split is active (before that, every child uses bank 0).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from cellblock.evaluators.cpu_kernels import guard_convs
from cellblock.search_spaces.api import SearchSpace, arch_id
from cellblock.supernet.bank import ParamBank, meta_build
from cellblock.supernet.covers import cover
from cellblock.supernet.split import Split


class Supernet(nn.Module):
    """Weight-sharing supernet of ``space``.

    Args:
        space: The space (with its skeleton).
        bank: The shared weights (one bank, or one per group of ``split``); :meth:`create`
            sizes new ones from the space's cover.
        cache_size: Child structures kept (on ``meta``) for architectures drawn again.
        split: The few-shot split (None: one supernet).
        split_active: Whether children are routed to their group's bank (else bank 0).
    """

    def __init__(self, space: SearchSpace, bank: ParamBank | Sequence[ParamBank],
                 cache_size: int = 256, split: Split | None = None,
                 split_active: bool = True) -> None:
        super().__init__()
        banks = [bank] if isinstance(bank, ParamBank) else list(bank)
        want = split.n_groups if split is not None else 1
        if len(banks) != want:
            raise ValueError(f"{len(banks)} banks for {want} group(s)")
        self.space = space
        self.banks = nn.ModuleList(banks)
        self.split = split
        self.split_active = split_active
        self.cache_size = cache_size
        self._children_cache: OrderedDict[str, nn.Module] = OrderedDict()
        self._seen_once: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def create(cls, space: SearchSpace, seed: int = 0, split: Split | None = None,
               split_active: bool = True, sharing: str = "candidate") -> Supernet:
        """A freshly initialised supernet of ``space`` (weights seeded by ``seed``).

        With a ``split``, every group's bank starts as a copy of the same weights;
        ``sharing`` is the bank's (:data:`~cellblock.supernet.bank.SHARINGS`).
        """
        torch.manual_seed(seed)
        bank = ParamBank.from_probes(cover(space), sharing)  # probes are read as drawn
        n = split.n_groups if split is not None else 1
        banks = [bank] + [copy.deepcopy(bank) for _ in range(n - 1)]
        return cls(space, banks, split=split, split_active=split_active)

    @property
    def bank(self) -> ParamBank:
        """Bank 0 (the only one of a supernet without a split)."""
        return self.banks[0]

    def group(self, arch: Mapping[str, Any]) -> int:
        """Index of the bank that serves ``arch``."""
        if self.split is None or not self.split_active:
            return 0
        return self.split.group_of(arch)

    def bank_for(self, arch: Mapping[str, Any]) -> ParamBank:
        """The bank that serves ``arch``."""
        return self.banks[self.group(arch)]

    @torch.no_grad()
    def activate_split(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Copy bank 0 (and its optimizer state) into every group's bank; route by group."""
        src = self.banks[0]
        for bank in self.banks[1:]:
            bank.load_state_dict(src.state_dict())
            if optimizer is not None:
                for p_src, p in zip(src.parameters(), bank.parameters(), strict=True):
                    state = optimizer.state.get(p_src)
                    if state:
                        optimizer.state[p] = {k: v.clone() if torch.is_tensor(v) else v
                                              for k, v in state.items()}
        self.split_active = True

    def child(self, arch: Mapping[str, Any]) -> nn.Module:
        """The structure of ``arch``'s network (its own tensors live on ``meta``).

        A structure is cached from the second time its architecture is drawn: uniform
        sampling in a large space rarely draws one twice, and keeping every child alive
        made its steps about 10% slower (more objects for the garbage collector), while
        the children a schedule draws every step (``sandwich``'s largest and smallest)
        are built twice, then reused.
        """
        key = arch_id(arch)
        model = self._children_cache.get(key)
        if model is not None:
            self._children_cache.move_to_end(key)
            return model
        with meta_build():  # no random initialisation: the bank supplies every tensor
            model = self.space.build(arch)
        guard_convs(model)  # oneDNN#6035: see cellblock.evaluators.cpu_kernels
        if key in self._seen_once:  # drawn before: worth keeping
            del self._seen_once[key]
            self._children_cache[key] = model
            if len(self._children_cache) > self.cache_size:
                self._children_cache.popitem(last=False)
        else:
            self._seen_once[key] = None
            if len(self._seen_once) > 16 * max(1, self.cache_size):
                self._seen_once.popitem(last=False)
        return model

    def forward(self, x: Tensor, arch: Mapping[str, Any]) -> Tensor:
        """Logits of the child ``arch`` on ``x`` with the shared weights (train/eval as self)."""
        model = self.child(arch)
        model.train(self.training)
        return functional_call(model, self.bank_for(arch).views(model), (x,))

    def extract(self, arch: Mapping[str, Any]) -> nn.Module:
        """A stand-alone ``space.build(arch)`` holding the inherited weights and BN statistics."""
        bank = self.bank_for(arch)
        device = next(iter(bank.parameters())).device
        with meta_build(device):  # uninitialised on the bank's device: all is copied
            model = self.space.build(arch)
        return bank.copy_into(model)
