"""Early stopping of trials, with the training epoch as budget.

:class:`MOSuccessiveHalving` is asynchronous successive halving (ASHA) on several
objectives at once: at each rung (``grace_epochs * reduction_factor**k`` epochs, below
the full budget) a trial goes on only when it is in the top ``1 / reduction_factor`` of
the trials recorded at that rung, ordered by non-dominated rank and then by crowding
distance of (accuracy at the rung, the run's cheap objectives such as ``macs``,
``params``, ``latency_ms``). Single-metric pruners (Ray's ASHA, Optuna's) would drop a
small, fast network that is slightly less accurate; this rule keeps the Pareto front.

The rule is pure (numpy only); :mod:`cellblock.run.backends.ray_tune_adapter` wraps it as a Ray Tune
``TrialScheduler`` (``--scheduler mo-asha``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.core.objectives import Objective, objective_matrix
from cellblock.pareto import crowding_distance, nondominated_rank

__all__ = ["MOSuccessiveHalving", "promotable", "rung_epochs", "scheduler_objectives"]


def rung_epochs(grace_epochs: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """Rung milestones ``grace * rf**k`` that are below ``max_epochs`` (ascending).

    Raises:
        ConfigError: for a grace period below 1 or a reduction factor below 2.
    """
    if grace_epochs < 1 or reduction_factor < 2:
        raise ConfigError(
            f"grace_epochs={grace_epochs} and reduction_factor={reduction_factor} are invalid; "
            "use grace_epochs >= 1 and reduction_factor >= 2"
        )
    out, t = [], grace_epochs
    while t < max_epochs:
        out.append(t)
        t *= reduction_factor
    return out


def order_keys(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(non-dominated rank, crowding distance within its front) of every row of ``F``.

    ``F`` is to be minimised; non-finite rows get the last rank and distance 0.
    """
    F = np.asarray(F, dtype=float)
    ranks = nondominated_rank(F)
    crowd = np.zeros(len(F))
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        crowd[members] = crowding_distance(F[members])
    return ranks, crowd


def promotable(F: Any, i: int, reduction_factor: int) -> bool:
    """Whether row ``i`` of ``F`` (minimisation) is in the top ``ceil(n / rf)`` rows.

    Rows are ordered by non-dominated rank, then by larger crowding distance. Ties favour
    row ``i``: it is promoted when fewer than ``ceil(n / rf)`` rows are strictly before
    it (as Ray's ASHA continues a trial whose metric equals the cut-off).
    """
    F = np.asarray(F, dtype=float)
    if F.ndim != 2 or not 0 <= i < len(F):
        raise ValueError(f"row {i} is not a row of an (n, m) matrix of shape {F.shape}")
    ranks, crowd = order_keys(F)
    better = (ranks < ranks[i]) | ((ranks == ranks[i]) & (crowd > crowd[i]))
    return int(better.sum()) < math.ceil(len(F) / reduction_factor)


def scheduler_objectives(objectives: Sequence[Objective]) -> list[Objective]:
    """Accuracy plus the run's cheap objectives (known before training): the rung vector."""
    acc = [o for o in objectives
           if o.name == "accuracy"] or [Objective("accuracy", "maximize", False)]
    return acc + [o for o in objectives if o.cheap and o.name != "accuracy"]


class MOSuccessiveHalving:
    """Asynchronous multi-objective successive halving (decisions only, no execution).

    Args:
        objectives: The run's objectives; accuracy and the cheap ones are used.
        grace_epochs: First rung, in epochs.
        reduction_factor: Keep the top ``1 / reduction_factor`` at each rung.
        max_epochs: The full budget (no rung at or above it).
    """

    def __init__(
        self,
        objectives: Sequence[Objective],
        grace_epochs: int,
        reduction_factor: int,
        max_epochs: int,
    ) -> None:
        self.objectives = scheduler_objectives(objectives)
        self.reduction_factor = reduction_factor
        self.rungs = rung_epochs(grace_epochs, reduction_factor, max_epochs)
        #: rung epoch -> {trial id -> objective vector (minimisation)} recorded there.
        self.recorded: dict[int, dict[str, np.ndarray]] = {r: {} for r in self.rungs}

    def vector(self, metrics: Mapping[str, Any]) -> np.ndarray:
        """The rung vector (minimisation) of a trial's reported metrics."""
        return objective_matrix([metrics], self.objectives)[0]

    def decide(self, trial_id: str, epoch: int, metrics: Mapping[str, Any]) -> bool:
        """Record a result reported after ``epoch`` epochs; return whether the trial goes on.

        Like ASHA, only the highest rung reached counts, once per trial and rung; a
        trial between rungs (or already judged at this rung) goes on.
        """
        for rung in reversed(self.rungs):
            if epoch < rung:
                continue
            seen = self.recorded[rung]
            if trial_id in seen:
                return True
            seen[trial_id] = self.vector(metrics)
            ids = list(seen)
            return promotable(np.stack([seen[t] for t in ids]), ids.index(trial_id),
                              self.reduction_factor)
        return True
