"""The ask/tell strategy interface and the strategy registry.

A strategy proposes architectures (``ask``) and learns from finished trials (``tell``).
It never evaluates, writes files or owns the loop: the run loop does. Its whole state
is in :meth:`Strategy.state_dict`, and it can also be rebuilt by :meth:`Strategy.replay`
of the recorded trials.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.core.objectives import Objective, objective_matrix
from cellblock.core.registry import Registry
from cellblock.records import COMPLETE, Trial
from cellblock.search_spaces.api import SearchSpace, arch_id

#: Strategies by name; the built-in ones are found in these modules on first use.
STRATEGIES: Registry[type[Strategy]] = Registry("strategy", plugins=tuple(
    f"cellblock.strategies.{m}" for m in ("random_search", "evolution", "nsga2", "optuna.strategy",
                                              "predictive.search")))


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator registering a strategy under ``name``."""
    return STRATEGIES.register(name)  # type: ignore[return-value]


class Strategy(ABC):
    """Base class of ask/tell strategies.

    Args:
        space: The search space.
        objectives: What is optimised (directions included).
        seed: Seed of the strategy's random generator.
    """

    #: A resume rebuilds the strategy by asking and telling it again as the log records
    #: (:func:`cellblock.strategies.resume.fast_forward`): the resumed run then proposes what an
    #: uninterrupted one would. False for strategies whose state lives elsewhere (Optuna's
    #: storage): they are rebuilt by :meth:`replay`.
    replays_by_asking: bool = True

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], seed: int = 0) -> None:
        self.space = space
        self.objectives = list(objectives)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.seen: set[str] = set()
        self.n_told = 0

    @abstractmethod
    def ask(self) -> dict[str, Any]:
        """Propose the next architecture to evaluate."""

    def tell(self, trial: Trial) -> None:
        """Learn from a finished trial (complete, failed or infeasible)."""
        self.seen.add(trial.arch_id)
        self.n_told += 1

    # ---- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state; :meth:`load_state_dict` restores it exactly."""
        return {
            "rng": self.rng.bit_generator.state,
            "seen": sorted(self.seen),
            "n_told": self.n_told,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.seen = set(state["seen"])
        self.n_told = int(state["n_told"])

    def replay(self, trials: Iterable[Trial]) -> None:
        """Rebuild state from recorded trials (in the order they ended), then reseed.

        Reseeding with the number of trials keeps a resumed search from repeating
        the asks it made before the restart.
        """
        for trial in trials:
            self.tell(trial)
        self.rng = np.random.default_rng([self.seed, self.n_told])

    @classmethod
    def options(cls) -> list[str]:
        """Names of the options ``make_strategy`` accepts (the constructor's own arguments)."""
        params = inspect.signature(cls.__init__).parameters
        return [p for p, v in params.items() if p not in ("self", "space", "objectives", "seed")
                and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]

    # ---- helpers -------------------------------------------------------------------------
    def fitness(self, trials: Sequence[Trial]) -> np.ndarray:
        """(n, m) objective values to minimise; failed or infeasible trials are ``inf`` rows."""
        return objective_matrix([t.metrics if t.status == COMPLETE and t.violation <= 0 else None
                                 for t in trials], self.objectives)

    def fresh(self, make: Callable[[], dict[str, Any]], tries: int = 50) -> dict[str, Any]:
        """A candidate from ``make`` not seen before; random samples after ``tries`` misses.

        Returns a seen architecture only when neither finds a new one (small spaces).
        """
        arch: dict[str, Any] = {}
        for attempt in range(2 * tries):
            arch = make() if attempt < tries else self.space.sample(self.rng)
            aid = arch_id(arch)
            if aid not in self.seen:
                self.seen.add(aid)
                return arch
        return arch


def make_strategy(
    name: str,
    space: SearchSpace,
    objectives: Sequence[Objective],
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> Strategy:
    """Instantiate a registered strategy with its options.

    Raises:
        RegistryError: for an unknown strategy name (listing the known ones).
        ConfigError: for an option the strategy does not take, or a bad value.
    """
    cls = STRATEGIES.get(name)
    options = dict(options or {})
    accepted = cls.options()
    for key in options:
        if key not in accepted:
            raise ConfigError(
                f"strategy {name!r} has no option {key!r}; its options: "
                f"{', '.join(accepted) or '(none)'}"
            )
    return cls(space, objectives, seed=seed, **options)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Validate a strategy option that must be an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"strategy option {name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_probability(name: str, value: Any) -> float:
    """Validate a strategy option that must be a probability."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"strategy option {name} must be a number in [0, 1], got {value!r}")
    return float(value)
