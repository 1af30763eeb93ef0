"""A supernet's accuracy fused with a cost prior: ``supernet_score``.

Parameter count and MACs are strong zero-cost rankers (bigger networks tend to train to
higher accuracy), and a weight-sharing supernet ranks children by what their inherited
weights do, which is partly different information. :class:`FusedScore` combines both
without a tuned weight: each is mapped to its empirical CDF over a reference sample of
the space (the fraction of the sample it beats, ties counted half), and the score is the
mean of the two, in ``[0, 1]``. Within one cost the order is the supernet's; across costs
the prior pulls larger networks up.

``cellblock supernet rank`` reports the score's Kendall tau on its own sample (which is
then the reference), and ``--evaluator supernet --supernet-prior macs`` reports it as the
``supernet_score`` metric of every candidate, against a stratified reference sample of
:data:`REFERENCE_SAMPLES` children scored once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.core.objectives import SUPERNET_PRIORS

#: The cost metrics a supernet's accuracy can be fused with (higher cost ranks higher).
PRIORS = SUPERNET_PRIORS
#: Children in the reference sample of the evaluator's score (``supernet rank``'s default size).
REFERENCE_SAMPLES = 40


def check_prior(prior: str | None) -> str | None:
    """``prior`` if it is one of :data:`PRIORS` (None and ``"none"`` mean no prior).

    Raises:
        ConfigError: naming the allowed values.
    """
    if prior is None or prior == "none":
        return None
    if prior not in PRIORS:
        raise ConfigError(
            f"--supernet-prior must be one of none, {', '.join(PRIORS)}; got {prior!r}")
    return prior


def _half_counts(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Twice the number of ``reference`` values below each value, ties counted once."""
    return (np.searchsorted(reference, values, side="left")
            + np.searchsorted(reference, values, side="right"))


def ecdf(reference: np.ndarray, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Fraction of the sorted ``reference`` below each value, ties counted half."""
    return _half_counts(reference, np.asarray(values, dtype=float)) / (2.0 * len(reference))


@dataclass(frozen=True)
class FusedScore:
    """The mean empirical CDF of a supernet accuracy and a cost, over a reference sample.

    Attributes:
        prior: The cost metric (one of :data:`PRIORS`).
        accuracy_ref: The reference children's supernet accuracies, sorted.
        cost_ref: The reference children's costs, sorted.
    """

    prior: str
    accuracy_ref: np.ndarray
    cost_ref: np.ndarray

    @classmethod
    def of(cls, prior: str, accuracies: Sequence[float], costs: Sequence[float]) -> FusedScore:
        """The score against the reference children's ``accuracies`` and ``costs``.

        Raises:
            ValueError: for an empty reference, lengths that differ or a non-finite value.
        """
        acc, cost = np.sort(np.asarray(accuracies, float)), np.sort(np.asarray(costs, float))
        if len(acc) == 0 or len(acc) != len(cost):
            raise ValueError(f"reference needs as many accuracies as costs, at least one; "
                             f"got {len(acc)} and {len(cost)}")
        if not (np.isfinite(acc).all() and np.isfinite(cost).all()):
            raise ValueError("reference accuracies and costs must be finite")
        return cls(prior, acc, cost)

    def __call__(self, accuracy: float, cost: float) -> float:
        """``supernet_score`` of one child in ``[0, 1]`` (NaN for a NaN input)."""
        if not (np.isfinite(accuracy) and np.isfinite(cost)):
            return float("nan")
        # integer counts, divided once: equal sums give exactly equal scores (ties stay ties)
        counts = (_half_counts(self.accuracy_ref, np.array([accuracy], float))
                  + _half_counts(self.cost_ref, np.array([cost], float)))
        return float(counts[0]) / (4.0 * len(self.accuracy_ref))

    def scores(self, accuracies: Sequence[float], costs: Sequence[float]) -> list[float]:
        """:meth:`__call__` of each ``(accuracy, cost)`` pair."""
        return [self(float(a), float(c)) for a, c in zip(accuracies, costs, strict=True)]
