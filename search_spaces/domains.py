"""Decision domains: immutable value objects with a JSON round trip."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from cellblock.core.errors import SpaceError

Value = str | int | float | bool | None
_SCALARS = (str, int, float, bool, type(None))


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps ``True`` apart from ``1`` (JSON keeps them apart too)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _key(value: Any) -> tuple[bool, Any]:
    """Hashable identity consistent with :func:`same_value` (keeps ``True`` apart from ``1``)."""
    return (isinstance(value, bool), value)


def format_values(values: tuple[Value, ...] | list[Value], limit: int = 12) -> str:
    """Human-readable list of allowed values."""
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


class Domain(ABC):
    """The set of values one decision may take."""

    kind: ClassVar[str]
    _kinds: ClassVar[dict[str, type[Domain]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Domain._kinds[cls.kind] = cls

    @abstractmethod
    def contains(self, value: Any) -> bool:
        """Whether ``value`` belongs to the domain."""

    @abstractmethod
    def values(self) -> tuple[Value, ...]:
        """Every value, in order."""

    @property
    def size(self) -> int:
        """Number of values."""
        return len(self.values())

    def sample(self, rng: np.random.Generator) -> Value:
        """A uniformly random value."""
        vals = self.values()
        return vals[int(rng.integers(len(vals)))]

    def index(self, value: Any) -> int:
        """Position of ``value`` in :meth:`values`."""
        for i, v in enumerate(self.values()):
            if same_value(v, value):
                return i
        raise SpaceError(f"{value!r} is not in {self.describe()}")

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`Domain.from_json` inverts it."""

    @staticmethod
    def from_json(data: dict[str, Any]) -> Domain:
        """Rebuild a domain from :meth:`to_json` output."""
        try:
            cls = Domain._kinds[data["type"]]
        except (KeyError, TypeError):
            known = ", ".join(sorted(Domain._kinds))
            raise SpaceError(f"bad domain JSON {data!r}; 'type' must be one of: {known}") from None
        fields = {k: v for k, v in data.items() if k != "type"}
        return cls(**fields)

    def describe(self) -> str:
        """Short text listing the allowed values."""
        return format_values(self.values())


#: Choice lists already checked by :class:`Categorical` (bounded), with their keys.
_CHECKED: dict[tuple[Any, ...], frozenset] = {}
_CHECKED_MAX = 4096


@dataclass(frozen=True)
class Categorical(Domain):
    """A choice among JSON scalars (str, int, float, bool, None)."""

    choices: tuple[Value, ...]
    kind: ClassVar[str] = "categorical"
    _keys: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        choices = tuple(self.choices) if isinstance(self.choices, (list, tuple)) else None
        if not choices:
            raise SpaceError(f"choices must be a non-empty list, got {self.choices!r}")
        try:  # a space function makes the same choices on every call: check each list once
            signature = (choices, tuple(map(type, choices)))  # types keep True apart from 1
            keys = _CHECKED.get(signature)
        except TypeError:  # an unhashable choice: the checks below say which
            signature, keys = None, None
        if keys is None:
            keys = self._check(choices)
            if signature is not None and len(_CHECKED) < _CHECKED_MAX:
                _CHECKED[signature] = keys
        object.__setattr__(self, "choices", choices)
        object.__setattr__(self, "_keys", keys)

    @staticmethod
    def _check(choices: tuple[Any, ...]) -> frozenset:
        """The hashable keys of ``choices``, after checking they are distinct JSON scalars."""
        for c in choices:
            if not isinstance(c, _SCALARS):
                raise SpaceError(
                    f"choice {c!r} is not a JSON scalar; use str, int, float, bool or None "
                    "(choose a name, then build the object from it)"
                )
        keys = frozenset(_key(c) for c in choices)
        if len(keys) != len(choices):
            dup = next(c for i, c in enumerate(choices)
                       if any(same_value(c, d) for d in choices[:i]))
            raise SpaceError(f"duplicate choice {dup!r} in {list(choices)!r}")
        return keys

    def contains(self, value: Any) -> bool:
        try:
            return _key(value) in self._keys
        except TypeError:  # unhashable, so not a JSON scalar
            return False

    def values(self) -> tuple[Value, ...]:
        return self.choices

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "choices": list(self.choices)}


@dataclass(frozen=True)
class IntRange(Domain):
    """Integers ``low, low + step, ..., high`` (both ends inclusive)."""

    low: int
    high: int
    step: int = 1
    kind: ClassVar[str] = "int"

    def __post_init__(self) -> None:
        for name in ("low", "high", "step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise SpaceError(f"integer range {name} must be an int, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.step < 1:
            raise SpaceError(f"integer range step must be >= 1, got {self.step}")
        if self.high < self.low:
            raise SpaceError(
                f"integer range needs low <= high, got low={self.low} high={self.high}")
        if (self.high - self.low) % self.step:
            raise SpaceError(
                f"integer range high - low ({self.high - self.low}) must be a multiple of step "
                f"{self.step}"
            )

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            return False
        return self.low <= value <= self.high and (value - self.low) % self.step == 0

    def values(self) -> tuple[Value, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    @property
    def size(self) -> int:
        return (self.high - self.low) // self.step + 1

    def sample(self, rng: np.random.Generator) -> Value:
        return self.low + self.step * int(rng.integers(self.size))

    def index(self, value: Any) -> int:
        if not self.contains(value):
            raise SpaceError(f"{value!r} is not in {self.describe()}")
        return (int(value) - self.low) // self.step

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "low": self.low, "high": self.high, "step": self.step}

    def describe(self) -> str:
        step = f" step {self.step}" if self.step != 1 else ""
        return f"integers {self.low}..{self.high}{step}"
