"""The supernet: one shared bank of weights, any child of the space run through it.

A child is the network the ordinary builder makes for an architecture
(``space.build(arch)``); the supernet runs it with its tensors swapped for views of the
shared bank (``torch.func.functional_call``), so gradients and BN statistics land in the
bank. :meth:`Supernet.extract` copies the child's slices into a fresh ``space.build(arch)``:
the same module, parameter count and MACs as the normal pipeline's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from cellblock.search_spaces.api import SearchSpace, arch_id
from cellblock.supernet.bank import ParamBank
from cellblock.supernet.covers import cover


class Supernet(nn.Module):
    """Weight-sharing supernet of ``space``.

    Args:
        space: The space (with its skeleton).
        bank: The shared weights; :meth:`create` sizes a new one from the space's cover.
        cache_size: Child structures kept (built once per architecture, moved to ``meta``).
    """

    def __init__(self, space: SearchSpace, bank: ParamBank, cache_size: int = 256) -> None:
        super().__init__()
        self.space = space
        self.bank = bank
        self.cache_size = cache_size
        self._children_cache: OrderedDict[str, nn.Module] = OrderedDict()

    @classmethod
    def create(cls, space: SearchSpace, seed: int = 0) -> Supernet:
        """A freshly initialised supernet of ``space`` (weights seeded by ``seed``)."""
        torch.manual_seed(seed)
        return cls(space, ParamBank.from_probes(cover(space)))  # probes are read as drawn

    def child(self, arch: Mapping[str, Any]) -> nn.Module:
        """The structure of ``arch``'s network (its own tensors live on ``meta``)."""
        key = arch_id(arch)
        model = self._children_cache.get(key)
        if model is None:
            with torch.device("meta"):  # no random initialisation: the bank supplies every tensor
                model = self.space.build(arch)
            self._children_cache[key] = model
            if len(self._children_cache) > self.cache_size:
                self._children_cache.popitem(last=False)
        else:
            self._children_cache.move_to_end(key)
        return model

    def forward(self, x: Tensor, arch: Mapping[str, Any]) -> Tensor:
        """Logits of the child ``arch`` on ``x`` with the shared weights (train/eval as self)."""
        model = self.child(arch)
        model.train(self.training)
        return functional_call(model, self.bank.views(model), (x,))

    def extract(self, arch: Mapping[str, Any]) -> nn.Module:
        """A stand-alone ``space.build(arch)`` holding the inherited weights and BN statistics."""
        device = next(iter(self.bank.parameters())).device
        with torch.device("meta"):  # skip the builder's random initialisation: all is copied
            model = self.space.build(arch)
        return self.bank.copy_into(model.to_empty(device=device))
