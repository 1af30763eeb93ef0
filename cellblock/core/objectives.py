"""Objectives and constraints as data: name, direction, cheap (known before training) or not."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """A metric a trial can report.

    Attributes:
        name: Key in the trial's metrics, with its unit in the name (``latency_ms``).
        direction: "maximize" or "minimize" when used as an objective.
        cheap: True if known before training (computed first, so constraints on it
            reject a candidate without training it).
        stage: When it is computed: "cost" (from the built network), "proxy" (a
            zero-cost proxy of the untrained network), "latency" (timed on the device)
            or "train" (the evaluator).
    """

    name: str
    direction: str
    cheap: bool
    stage: str
    description: str = ""


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "maximize", False, "train", "validation top-1 accuracy (0..1)"),
        Metric("macs", "minimize", True, "cost", "multiply-accumulates per image"),
        Metric("params", "minimize", True, "cost", "number of parameters"),
        Metric("latency_ms", "minimize", True, "latency", "median inference latency, ms"),
        Metric("train_s", "minimize", False, "train", "training wall time, s"),
        Metric("supernet_score", "maximize", False, "train",
               "supernet accuracy fused with a cost prior, 0..1 (--supernet-prior)"),
        Metric("synflow", "maximize", True, "proxy", "zero-cost proxy SynFlow (no data)"),
        Metric("naswot", "maximize", True, "proxy", "zero-cost proxy NASWOT (one batch)"),
        Metric("jacob_cov", "maximize", True, "proxy", "zero-cost proxy Jacobian covariance"),
        Metric("grad_norm", "maximize", True, "proxy", "zero-cost proxy gradient norm"),
        Metric("snip", "maximize", True, "proxy", "zero-cost proxy SNIP saliency"),
    )
}


#: The cost metrics ``supernet_score`` can fuse with a supernet's accuracy (``--supernet-prior``).
SUPERNET_PRIORS = ("macs", "params")


def get_metric(name: str) -> Metric:
    """Look up a metric by name.

    Raises:
        ConfigError: naming the unknown metric and the known ones.
    """
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(
            f"unknown metric {name!r}; known: {', '.join(METRICS)}"
        ) from None


@dataclass(frozen=True)
class Objective:
    """An objective: a metric and the direction it is optimised in."""

    name: str
    direction: str
    cheap: bool

    @classmethod
    def of(cls, name: str) -> Objective:
        """The objective for a known metric, with its default direction."""
        m = get_metric(name)
        return cls(m.name, m.direction, m.cheap)

    def to_min(self, value: Any) -> float:
        """Value as a quantity to minimise (NaN/None -> inf)."""
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            return math.inf
        return -float(value) if self.direction == "maximize" else float(value)


def objective_matrix(metrics: Sequence[Mapping[str, Any] | None],
                     objectives: Sequence[Objective]) -> np.ndarray:
    """(n, m) values to minimise, one row per metrics dict (maximised objectives negated).

    A missing value, or a row given as None (a failed or infeasible trial), is ``inf``.
    """
    F = np.full((len(metrics), len(objectives)), np.inf)
    for i, m in enumerate(metrics):
        if m is not None:
            F[i] = [o.to_min(m.get(o.name)) for o in objectives]
    return F


def parse_objectives(spec: str | Sequence[str]) -> list[Objective]:
    """``"accuracy,macs"`` or ``["accuracy", "macs"]`` -> objectives.

    Raises:
        ConfigError: for an empty list, an unknown metric or a repeated one.
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if not names:
        raise ConfigError("objectives must name at least one metric, e.g. 'accuracy,macs'")
    if len(set(names)) != len(names):
        raise ConfigError(f"objectives {names} repeat a metric; name each once")
    return [Objective.of(n) for n in names]


_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_CONSTRAINT_RE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*([0-9.eE+-]+)\s*([kKmMgGtT]?)\s*$"
)


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound``; feasible when :meth:`violation` <= 0."""

    metric: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Parse ``"macs<=5M"``, ``"latency_ms <= 2.5"``, ``"accuracy>=0.9"``.

        Raises:
            ConfigError: if the text is malformed or names an unknown metric.
        """
        if not isinstance(text, str):
            raise ConfigError(f"constraint must be a string like 'macs<=5M', got {text!r}")
        m = _CONSTRAINT_RE.match(text)
        if not m:
            raise ConfigError(
                f"bad constraint {text!r}; write METRIC<=VALUE or METRIC>=VALUE, e.g. 'macs<=5M' "
                "(suffixes k, M, G allowed)"
            )
        name, op, number, suffix = m.groups()
        get_metric(name)
        try:
            bound = float(number) * _SUFFIX[suffix.lower()]
        except ValueError:
            raise ConfigError(f"bad number {number!r} in constraint {text!r}") from None
        return cls(name, op, bound)

    @property
    def cheap(self) -> bool:
        """Whether the constrained metric is known before training."""
        return get_metric(self.metric).cheap

    def violation(self, metrics: Mapping[str, Any]) -> float | None:
        """Amount by which ``metrics`` break the constraint (<= 0: satisfied; None: unknown)."""
        value = metrics.get(self.metric)
        if value is None:
            return None
        value = float(value)
        if math.isnan(value):
            return math.inf
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def total_violation(constraints: Iterable[Constraint], metrics: Mapping[str, Any]) -> float:
    """Sum of positive violations of the constraints whose metric is known."""
    total = 0.0
    for c in constraints:
        v = c.violation(metrics)
        if v is not None and v > 0:
            total += v
    return total
