"""Search spaces: define-by-run functions wrapped with sampling, replay, mutation and counting.

A space is a function ``fn(s, **kwargs)`` that receives a :class:`Sampler`, makes named
decisions with ``s.choice`` / ``s.integer`` and returns the network::

    @register_space("tiny")
    def tiny(s, input_shape, num_classes):
        width = s.choice("width", [8, 16, 32])
        depth = s.integer("depth", 1, 3)
        ...
        return nn.Sequential(...)

The architecture is the dict of decisions actually used; :func:`arch_id` hashes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cellblock.core.errors import CellblockError, ConfigError, RegistryError, SpaceError
from cellblock.core.registry import Registry
from cellblock.search_spaces.domains import Domain, IntRange, Value, same_value
from cellblock.search_spaces.samplers import (
    Branch,
    FixedSampler,
    GuidedSampler,
    PathSampler,
    ProbeSampler,
    RandomSampler,
    Sampler,
)

SpaceFn = Callable[..., Any]
#: Spaces by name; the built-in ones are found in these modules on first use.
SPACES: Registry[SpaceFn] = Registry("space", plugins=tuple(
    f"cellblock.search_spaces.{m}" for m in ("nb201", "blocks_space", "darts")))


def register_space(name: str) -> Callable[[SpaceFn], SpaceFn]:
    """Decorator registering a space function under ``name``."""
    return SPACES.register(name)  # type: ignore[return-value]


#: ``json.dumps(..., sort_keys=True, separators=(",", ":"), allow_nan=False)``, made once (dumps
#: builds an encoder per call with these options: half the cost of an id).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_json(arch: Mapping[str, Any]) -> str:
    """The canonical JSON text of an architecture dict (sorted keys, no spaces)."""
    return _CANONICAL.encode(dict(arch))


def arch_id(arch: Mapping[str, Any]) -> str:
    """Stable content hash (16 hex digits) of an architecture dict."""
    return hashlib.sha256(canonical_json(arch).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Decision:
    """One decision of a traced architecture."""

    name: str
    domain: Domain
    value: Value


@dataclass(frozen=True)
class SpaceSize:
    """Number of architectures in a space; ``exact`` is False for an estimate."""

    value: float
    exact: bool

    def __str__(self) -> str:
        if self.exact:
            return f"{int(self.value):,}"
        return f"~{self.value:.2e}"


def _load_ref(ref: str) -> SpaceFn:
    """Import ``module:function`` or ``path/to/file.py:function``."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise RegistryError(
            f"space reference {ref!r} must look like 'module:function' or 'file.py:function'")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise RegistryError(f"space file {str(path)!r} not found (from {ref!r})")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        mod_name = f"cellblock_user_space_{digest}"
        module = sys.modules.get(mod_name)
        if module is not None:  # import a file once: its registrations must not run twice
            fn = getattr(module, attr, None)
            if not callable(fn):
                raise RegistryError(f"{ref!r}: {target!r} has no function {attr!r}")
            return fn
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise RegistryError(f"cannot import space file {str(path)!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user file: report any import failure as one error
            sys.modules.pop(mod_name, None)
            raise RegistryError(
                f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise RegistryError(
                f"cannot import module {target!r} for space {ref!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RegistryError(f"{ref!r}: {target!r} has no function {attr!r}")
    return fn


def resolve_space_fn(ref: str) -> SpaceFn:
    """A registered space name, or ``module:function`` / ``file.py:function``."""
    if ref in SPACES:
        return SPACES.get(ref)
    if ":" in ref:
        return _load_ref(ref)
    known = ", ".join(SPACES.names())
    raise RegistryError(
        f"unknown space {ref!r}; known: {known}; or give a custom one as 'module:function' "
        "or 'path/to/file.py:function'"
    )


class SearchSpace:
    """A space function bound to its arguments (the skeleton).

    Args:
        fn: The define-by-run function, or a registered name / ``module:function`` reference.
        **kwargs: Arguments passed to ``fn`` after the sampler (``input_shape``,
            ``num_classes`` and skeleton options). Only those ``fn`` accepts are passed
            when they are context (``input_shape``, ``num_classes``); any other unknown
            one is an error.
    """

    CONTEXT_ARGS = ("input_shape", "num_classes")

    def __init__(self, fn: SpaceFn | str, **kwargs: Any) -> None:
        if isinstance(fn, str):
            self.fn = resolve_space_fn(fn)
            self.ref = fn
            self.name = fn.rpartition(":")[2]
        else:
            self.fn = fn
            registered = [n for n in SPACES.names() if SPACES.get(n) is fn]
            self.ref = registered[0] if registered else f"{fn.__module__}:{fn.__qualname__}"
            self.name = registered[0] if registered else fn.__name__
        self.kwargs = self._bind(kwargs)

    def _bind(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        sig = inspect.signature(self.fn)
        params = list(sig.parameters.values())
        if not params:
            raise SpaceError(f"space {self.name!r} must take the sampler as its first argument")
        rest = params[1:]
        if any(p.kind is p.VAR_KEYWORD for p in rest):
            return dict(kwargs)
        accepted = {p.name for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        bound = {}
        for key, value in kwargs.items():
            if key in accepted:
                bound[key] = value
            elif key not in self.CONTEXT_ARGS:
                allowed = ", ".join(sorted(accepted - set(self.CONTEXT_ARGS))) or "(none)"
                raise ConfigError(
                    f"space {self.name!r} has no option {key!r}; its options: {allowed}")
        return bound

    def arguments(self) -> dict[str, Any]:
        """The function's full arguments: its defaults overridden by :attr:`kwargs`."""
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        args = {
            p.name: p.default
            for p in params
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        args.update(self.kwargs)
        return args

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of one input: the ``input_shape`` argument, else the function's default.

        Raises:
            ConfigError: if the space has neither.
        """
        shape = self.arguments().get("input_shape")
        if shape is None:
            raise ConfigError(f"space {self.name!r} has no input_shape; give it with "
                              "--space-arg input_shape=[3,32,32]")
        return tuple(int(v) for v in shape)

    def spec(self) -> dict[str, Any]:
        """JSON-able description from which a worker rebuilds the space."""
        return {"ref": self.ref, "kwargs": self.kwargs}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SearchSpace:
        """Inverse of :meth:`spec`."""
        return cls(spec["ref"], **spec["kwargs"])

    # ---- running the function -------------------------------------------------------------
    def run(self, sampler: Sampler) -> Any:
        """Call the space function with ``sampler``; return what it returns.

        When ``sampler.build`` is False the function runs on the ``meta`` device.
        """
        ctx: Any = contextlib.nullcontext()
        if not sampler.build:
            import torch

            ctx = torch.device("meta")
        with ctx:
            try:
                out = self.fn(sampler, **self.kwargs)
            except (CellblockError, Branch):
                raise
            except Exception as exc:  # noqa: BLE001  (the user's function: one line, exit 2)
                raise SpaceError(self._raised(sampler, exc)) from exc
        sampler.finish()
        return out

    def _raised(self, sampler: Sampler, exc: Exception) -> str:
        """One line for an exception raised inside the space function."""
        what = "building" if sampler.build else "sampling"
        if sampler.decisions:
            name, value = next(reversed(sampler.decisions.items()))
            where = (f"after decision {name!r} = {value!r} ({len(sampler.decisions)} decision(s) "
                     "made)")
        else:
            where = "before its first decision"
        reason = " ".join(str(exc).split())[:300] or "(no message)"
        return (f"space {self.name!r} raised {type(exc).__name__} while {what} {where}: {reason}; "
                "fix the space function (a decision's value it cannot handle?)")

    def _collect(self, sampler: Sampler) -> dict[str, Value]:
        sampler.build = False
        self.run(sampler)
        return dict(sampler.decisions)

    def sample(self, rng: np.random.Generator) -> dict[str, Value]:
        """A uniformly random architecture (each decision uniform given earlier ones)."""
        return self._collect(RandomSampler(rng))

    def build(self, arch: Mapping[str, Any]) -> Any:
        """Replay ``arch`` and return the network it describes.

        Raises:
            ArchValidationError: naming the decision and its allowed values.
        """
        return self.run(FixedSampler(arch, build=True, space_name=self.name))

    def trace(self, arch: Mapping[str, Any]) -> list[Decision]:
        """Validate ``arch`` without building; return its decisions with their domains."""
        sampler = FixedSampler(arch, build=False, space_name=self.name)
        self.run(sampler)
        return [Decision(n, sampler.domains[n], v) for n, v in sampler.decisions.items()]

    def validate(self, arch: Mapping[str, Any]) -> dict[str, Value]:
        """``arch`` in decision order, after checking it fits the space."""
        return {d.name: d.value for d in self.trace(arch)}

    # ---- variation ---------------------------------------------------------------------------
    def mutate(
        self, arch: Mapping[str, Any], rng: np.random.Generator, n: int = 1
    ) -> dict[str, Value]:
        """Change ``n`` used decisions to other values; newly active decisions are sampled."""
        mutable = [d for d in self.trace(arch) if d.domain.size > 1]
        if not mutable:
            return dict(arch)
        picks = rng.choice(len(mutable), size=min(n, len(mutable)), replace=False)
        overrides: dict[str, Value] = {}
        for i in picks:
            d = mutable[int(i)]
            others = [v for v in d.domain.values() if not same_value(v, d.value)]
            overrides[d.name] = others[int(rng.integers(len(others)))]
        return self._collect(GuidedSampler(rng, [arch], overrides))

    def moves(self, arch: Mapping[str, Any]) -> list[tuple[str, Value]]:
        """Every one-decision change of ``arch`` as ``(decision, new value)`` pairs.

        A categorical decision may take any other value; an integer range is ordered, so
        it steps to the adjacent values only (one step down, one step up).
        """
        out: list[tuple[str, Value]] = []
        for d in self.trace(arch):
            if isinstance(d.domain, IntRange):
                step = d.domain.step
                out += [(d.name, v) for v in (d.value - step, d.value + step)
                        if d.domain.contains(v)]
            else:
                out += [(d.name, v) for v in d.domain.values() if not same_value(v, d.value)]
        return out

    def neighbour(
        self, arch: Mapping[str, Any], name: str, value: Value, rng: np.random.Generator
    ) -> dict[str, Value]:
        """``arch`` with ``name`` set to ``value`` (a move); newly active decisions are sampled."""
        return self._collect(GuidedSampler(rng, [arch], {name: value}))

    def crossover(
        self, a: Mapping[str, Any], b: Mapping[str, Any], rng: np.random.Generator
    ) -> dict[str, Value]:
        """Uniform crossover: each decision from one parent or the other, when valid there."""
        return self._collect(GuidedSampler(rng, [a, b], mix=True))

    # ---- counting ----------------------------------------------------------------------------
    def _next(self, prefix: dict[str, Value]) -> Branch | dict[str, Value]:
        """The first decision after ``prefix`` (a Branch), or the complete architecture."""
        try:
            return self._collect(ProbeSampler(prefix))
        except Branch as branch:
            return branch

    def enumerate(self, limit: int | None = None) -> Iterator[dict[str, Value]]:
        """Every architecture (depth-first), up to ``limit`` of them."""
        count = 0
        stack: list[dict[str, Value]] = [{}]
        while stack:
            prefix = stack.pop()
            branch = self._next(prefix)
            if not isinstance(branch, Branch):  # a complete architecture
                yield branch
                count += 1
                if limit is not None and count >= limit:
                    return
                continue
            for value in reversed(branch.domain.values()):
                stack.append({**prefix, branch.name: value})

    def _knuth(self, probes: int, rng: np.random.Generator) -> float:
        total = 0.0
        for _ in range(probes):
            sampler = PathSampler(rng)
            self._collect(sampler)
            total += sampler.weight
        return total / probes

    def size(self, exact_limit: int = 20_000, probes: int = 2_000, seed: int = 0) -> SpaceSize:
        """Number of architectures: exact up to ``exact_limit``, else Knuth's unbiased estimate.

        A quick estimate first decides whether exact enumeration is worth trying.
        """
        rng = np.random.default_rng(seed)
        if self._knuth(min(probes, 100), rng) <= 4 * exact_limit:
            n = sum(1 for _ in self.enumerate(limit=exact_limit + 1))
            if n <= exact_limit:
                return SpaceSize(float(n), True)
        return SpaceSize(self._knuth(probes, rng), False)

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, {self.kwargs!r})"


def sample_distinct(space: Any, k: int, seed: int) -> list[dict[str, Any]]:
    """``k`` distinct architectures drawn with ``seed`` (fewer if the space is smaller)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for _ in range(50 * k):
        arch = space.sample(rng)
        out.setdefault(arch_id(arch), arch)
        if len(out) >= k:
            break
    return list(out.values())
