"""The shared parameter bank of a supernet.

Every parameter and buffer of a normally built child network gets a *key*: its dotted
name with the candidate tag of each tagged module on its path (see
:mod:`cellblock.search_spaces.tags`), e.g. ``stages/1[bottleneck]/0/conv2/0/weight``. The bank
holds one tensor per key, as large as the largest child needs in every dimension. A
child's tensor is a view of it: the first ``k`` entries of the channel dimensions
(OFA-style width slicing) and the centre of the spatial dimensions of convolution
kernels (a 3x3 kernel is the centre of the shared 5x5 one).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cellblock.core.errors import ConfigError, SpaceError
from cellblock.search_spaces.tags import is_shared, tag_of

_KEYS_ATTR = "_supernet_keys"
#: How candidates share weights: ``candidate`` (each candidate its own tensors) or ``norm``
#: (candidates share every tensor of the same name and module type; only normalisation
#: layers stay per candidate: per-block-type normalisation).
SHARINGS = ("candidate", "norm")
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
          nn.modules.instancenorm._InstanceNorm)


def tensor_keys(model: nn.Module, prefix: str = "", sharing: str = "candidate") -> dict[str, str]:
    """Name -> bank key of every parameter and buffer of ``model`` (cached on the model).

    With ``sharing="norm"``, a tensor outside a normalisation layer is keyed without the
    candidate tags, plus its module's type (``.../conv1/weight<Conv2d>``), so candidates
    share it by slicing; normalisation tensors keep their tags.
    """
    attr = _KEYS_ATTR if sharing == "candidate" else f"{_KEYS_ATTR}_{sharing}"
    cached = model.__dict__.get(attr)
    if cached is not None and prefix == "":
        return cached
    plain_head = prefix.split(".") if prefix else []
    head = list(plain_head)
    if head and (root := tag_of(model)):  # a probe module standing for a tagged candidate
        head[-1] += f"[{root}]"
    keys: dict[str, str] = {}
    seen_modules: set[int] = set()
    seen_tensors: set[int] = set()

    # One walk of the module tree (this runs for every child a supernet step draws).
    # ``segs`` are the key's segments so far: names with the candidate tags of the
    # modules on the path, except above a shared module, whose tensors ignore them.
    def visit(module: nn.Module, parts: list[str], segs: list[str], below_shared: bool) -> None:
        seen_modules.add(id(module))
        for store in (module._parameters, module._buffers):
            for leaf, t in store.items():
                if t is None or id(t) in seen_tensors:
                    continue
                seen_tensors.add(id(t))
                name = ".".join([*parts, leaf])
                if sharing == "norm" and not isinstance(module, _NORMS):  # shared across candidates
                    keys[name] = "/".join([*plain_head, *parts,
                                           leaf]) + f"<{type(module).__name__}>"
                else:
                    keys[name] = "/".join([*(plain_head if below_shared else head), *segs, leaf])
        for child_name, child in module._modules.items():
            if child is None or id(child) in seen_modules:
                continue
            child_parts = [*parts, child_name]
            if is_shared(child):
                visit(child, child_parts, list(child_parts), True)
            else:
                tag = tag_of(child)
                visit(child, child_parts, [*segs, f"{child_name}[{tag}]" if tag else child_name],
                      below_shared)

    visit(model, [], [], False)
    if prefix == "":
        model.__dict__[attr] = keys
    return keys


_INIT_FNS = ("uniform_", "normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
             "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_",
             "orthogonal_")


@contextlib.contextmanager
def meta_build(device: str | torch.device = "meta") -> Iterator[None]:
    """Build modules on ``device`` (default ``meta``) with ``torch.nn.init`` turned into no-ops.

    For networks whose every tensor is replaced afterwards (children, structure probes):
    on ``meta`` the initialisers run through slow reference decompositions and produce
    nothing. On a real device the tensors are left uninitialised, for a network whose
    tensors are all copied in next (moving a ``meta`` network there with ``to_empty``
    goes through the same slow decompositions). Not thread-safe (it patches
    ``torch.nn.init`` while active).
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FNS if hasattr(nn.init, name)}
    try:
        for name in saved:
            setattr(nn.init, name, lambda t, *args, **kwargs: t)
        with torch.device(device):
            yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def slice_view(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The view of ``t`` with ``shape``: leading channels, centred kernel dimensions."""
    if tuple(t.shape) == tuple(shape):
        return t
    index = []
    for d, (big, small) in enumerate(zip(t.shape, shape, strict=True)):
        if d >= 2 and t.ndim >= 3:  # spatial dims of a conv kernel: the centre
            off = (big - small) // 2
            index.append(slice(off, off + small))
        else:
            index.append(slice(0, small))
    return t[tuple(index)]


def _init(key: str, t: Tensor, is_param: bool, zero: bool = False) -> None:
    leaf = key.rsplit("/", 1)[-1].split("[", 1)[0]
    with torch.no_grad():
        if zero:
            t.zero_()
        elif not is_param:
            (t.fill_(1) if leaf == "running_var" else t.zero_())
        elif leaf == "bias" or (leaf != "weight" and t.ndim < 2):
            t.zero_()
        elif t.ndim == 1:
            t.fill_(1.0)  # normalisation scale
        elif t.ndim == 2:
            nn.init.kaiming_uniform_(t, a=math.sqrt(5))  # nn.Linear's default
        else:
            nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")


class ParamBank(nn.Module):
    """Shared tensors by key; registered as ``t0, t1, ...`` in key order.

    Args:
        entries: key -> ``(shape, dtype name, is_parameter)``.
        zero_init: Keys initialised to zero (the scales of norms closing residual branches).
        sharing: How candidates share weights (:data:`SHARINGS`, see :func:`tensor_keys`).
    """

    def __init__(self, entries: Mapping[str, tuple[tuple[int, ...], str, bool]],
                 zero_init: Iterable[str] = (), sharing: str = "candidate") -> None:
        super().__init__()
        if sharing not in SHARINGS:
            raise ConfigError(f"--sharing must be one of {', '.join(SHARINGS)}, got {sharing!r}")
        self.sharing = sharing
        zero = frozenset(zero_init)
        self.entries = {k: (tuple(int(x) for x in v[0]), str(v[1]), bool(v[2]))
                        for k, v in sorted(entries.items())}
        self.attr: dict[str, str] = {}
        for i, (key, (shape, dtype, is_param)) in enumerate(self.entries.items()):
            t = torch.empty(shape, dtype=getattr(torch, dtype))
            _init(key, t, is_param, key in zero)
            name = f"t{i}"
            self.attr[key] = name
            if is_param:
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)

    @classmethod
    def from_probes(cls, probes: Iterable[tuple[str, nn.Module]],
                    sharing: str = "candidate") -> ParamBank:
        """A bank large enough for every probe module (``(name prefix, module)`` pairs).

        The scale of a norm that a block reports as closing its residual branch
        (``last_norm()``, see :class:`~cellblock.search_spaces.blocks.Block`) starts at zero,
        unless the same key also serves a block without that branch.

        Raises:
            SpaceError: if one key has tensors of different ranks or kinds.
        """
        entries: dict[str, tuple[tuple[int, ...], str, bool]] = {}
        zero_yes: set[str] = set()
        zero_no: set[str] = set()
        for prefix, module in probes:
            keys = tensor_keys(module, prefix, sharing)
            names = {id(t): n for n, t in module.named_parameters()}
            for m in module.modules():
                last = getattr(m, "last_norm", None)
                if not callable(last):
                    continue
                norm = last()
                scale = getattr(norm, "weight", None) if norm is not None else None
                for _, t in m.named_parameters():
                    (zero_yes if t is scale else zero_no).add(keys[names[id(t)]])
            named = [(n, t, True) for n, t in module.named_parameters()]
            named += [(n, t, False) for n, t in module.named_buffers()]
            for name, t, is_param in named:
                key = keys[name]
                shape, dtype = tuple(t.shape), str(t.dtype).removeprefix("torch.")
                old = entries.get(key)
                if old is not None:
                    if len(old[0]) != len(shape) or old[2] != is_param or old[1] != dtype:
                        raise SpaceError(
                            f"supernet key {key!r} is used by tensors of different ranks, dtypes "
                            "or kinds; tag the candidates of that position with "
                            "supernet.tags.candidate"
                        )
                    shape = tuple(max(a, b) for a, b in zip(old[0], shape, strict=True))
                entries[key] = (shape, dtype, is_param)
        return cls(entries, zero_yes - zero_no, sharing)

    def tensor(self, key: str) -> Tensor:
        """The shared tensor of ``key``."""
        return getattr(self, self.attr[key])

    def views(self, model: nn.Module) -> dict[str, Tensor]:
        """Name -> slice of the shared tensor for every parameter and buffer of ``model``.

        Buffers are views (written in place); parameters are views, or dense differentiable
        copies where the slice is strided.

        Raises:
            SpaceError: if the bank lacks a key or is too small for one of them.
        """
        keys = tensor_keys(model, sharing=self.sharing)
        out = {}
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            key = keys[name]
            if key not in self.attr:
                raise SpaceError(
                    f"the supernet has no weights for {key!r}; it was built for another space "
                    "or skeleton (or the space's supernet cover misses this candidate)"
                )
            shared = self.tensor(key)
            shape = tuple(t.shape)
            if len(shape) != shared.ndim or any(a > b
                                                for a, b in zip(shape, shared.shape, strict=True)):
                raise SpaceError(
                    f"the supernet's weights {key!r} have shape {tuple(shared.shape)}, too small "
                    f"for {shape}; the space's supernet cover misses this size"
                )
            view = slice_view(shared, shape)
            # Kernels get dense weights: on torch 2.14 CPU, a convolution's backward over a
            # strided (channel- or kernel-sliced) weight view corrupted the heap. The copy is
            # differentiable, so gradients still reach the bank. Buffers stay views (1-D
            # prefixes, always contiguous) so BN running statistics update the bank in place.
            if isinstance(t, nn.Parameter) and not view.is_contiguous():
                view = view.contiguous()
            out[name] = view
        return out

    @torch.no_grad()
    def copy_into(self, model: nn.Module) -> nn.Module:
        """Copy the shared weights (and BN statistics) into ``model``'s own tensors."""
        views = self.views(model)
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            t.copy_(views[name].to(t.device))
        return model

    def describe(self) -> dict[str, Any]:
        """JSON-able entries (key -> shape, dtype, is_parameter), for checkpoints."""
        return {k: [list(s), d, p] for k, (s, d, p) in self.entries.items()}
