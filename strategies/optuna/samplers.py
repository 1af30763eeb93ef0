"""The Optuna samplers cellblock offers, and the checks of their options.

:data:`SAMPLERS` maps each ``optuna:<name>`` strategy to the sampler class it builds,
that sampler's default options and what it supports (several objectives, constraints,
choice decisions). The checks raise ConfigError at construction, before any trial.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from cellblock.core.errors import ConfigError
from cellblock.search_spaces.api import SearchSpace
from cellblock.search_spaces.domains import IntRange

OWN_OPTIONS = ("storage", "study_name", "constraints")  # the strategy's options, not the sampler's
# set by the strategy (constraints: set_constraint)
_RESERVED = ("self", "seed", "constraints_func")


@dataclass(frozen=True)
class SamplerSpec:
    """How to build one Optuna sampler and what it supports."""

    cls: type[optuna.samplers.BaseSampler]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    multi_objective: bool = True
    constraints: bool = True
    numeric_only: bool = False
    needs: str | None = None

    def params(self) -> list[str]:
        """Options of the sampler a user may set."""
        sig = inspect.signature(self.cls.__init__).parameters
        return [p for p in sig if p not in _RESERVED]


SAMPLERS: dict[str, SamplerSpec] = {
    "tpe": SamplerSpec(optuna.samplers.TPESampler),
    "tpe-multivariate": SamplerSpec(optuna.samplers.TPESampler,
                                    {"multivariate": True, "group": True}),
    "nsga2": SamplerSpec(optuna.samplers.NSGAIISampler),
    "nsga3": SamplerSpec(optuna.samplers.NSGAIIISampler),
    "gp": SamplerSpec(optuna.samplers.GPSampler, {"warn_independent_sampling": False}),
    "random": SamplerSpec(optuna.samplers.RandomSampler, constraints=False),
    "cmaes": SamplerSpec(optuna.samplers.CmaEsSampler, {"warn_independent_sampling": False},
                         multi_objective=False, constraints=False, numeric_only=True,
                         needs="cmaes"),
}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide Optuna's ExperimentalWarning (journal, GP, NSGA-III...) and its INFO logs."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def check_sampler_options(label: str, spec: SamplerSpec, options: Mapping[str, Any],
                          n_objectives: int) -> dict[str, Any]:
    """The sampler's options (its defaults, then ``options``) after checking they fit.

    Raises:
        ConfigError: an option the sampler does not take, several objectives for a
            single-objective sampler, or a missing package the sampler needs.
    """
    accepted = spec.params()
    for key in options:
        if key not in accepted:
            raise ConfigError(f"strategy {label!r} has no option {key!r}; its options: "
                              f"{', '.join((*OWN_OPTIONS, *accepted))}")
    if n_objectives > 1 and not spec.multi_objective:
        raise ConfigError(f"strategy {label!r} optimises a single objective, got "
                          f"{n_objectives}; use optuna:tpe or optuna:nsga2")
    if spec.needs and importlib.util.find_spec(spec.needs) is None:
        raise ConfigError(f"strategy {label!r} needs the {spec.needs!r} package; "
                          f"pip install {spec.needs}")
    return {**spec.defaults, **options}


def make_sampler(label: str, spec: SamplerSpec, options: Mapping[str, Any],
                 seed: int) -> optuna.samplers.BaseSampler:
    """The sampler seeded with ``seed``; ConfigError for a bad option value."""
    kwargs = dict(options, seed=seed)
    with quiet():
        try:
            return spec.cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"strategy {label!r}: bad sampler option ({exc}); options "
                              f"given: {options}") from None


def check_numeric(label: str, space: SearchSpace, seed: int) -> None:
    """Raise ConfigError for a space without integer decisions; warn about its choice decisions.

    For a numeric-only sampler (CMA-ES), called from the strategy's constructor: the
    warning points at the code that built the strategy.
    """
    rng = np.random.default_rng(seed)
    kinds: dict[str, str] = {}
    for _ in range(16):
        for d in space.trace(space.sample(rng)):
            kinds[d.name] = d.domain.kind
    if IntRange.kind not in kinds.values():
        raise ConfigError(f"strategy {label!r} needs integer decisions but space "
                          f"{space.name!r} has only choices; use optuna:tpe or optuna:gp")
    n_cat = sum(k != IntRange.kind for k in kinds.values())
    if n_cat:
        warnings.warn(f"{label}: {n_cat} choice decisions of space {space.name!r} are "
                      "sampled independently at random (CMA-ES handles integers only)",
                      UserWarning, stacklevel=3)
