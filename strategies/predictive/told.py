"""What the predictive strategy derives from its told trials (a mixin of
:class:`~.search.PredictiveSearch`), kept from one ask to the next.

* :meth:`Told._observed_F`: their minimisation values, grown by rows as trials are told;
* :meth:`Told._fenced` and :meth:`Told._front`: the rows that may set the front and the
  front itself;
* :meth:`Told._parents`: the best trials, from the
  :class:`~cellblock.strategies.selection.Contenders` (updated per tell, instead of
  ranking every trial per ask);
* :meth:`Told._training_rows`: the observations a model is fitted on (at most
  :data:`FIT_ROWS`).

Everything here is a function of the told trials alone, so a resumed run derives the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cellblock.pareto import nondominated_rank
from cellblock.records import Trial
from cellblock.strategies.predictive.acquisition import fenced
from cellblock.strategies.selection import best_rows

#: Observations a model is fitted on at most (the rest: :meth:`Told._training_rows`).
FIT_ROWS = 256


class Told:
    """The told-trial half of the predictive strategy (the strategy holds ``observed``)."""

    def _observed_F(self: Any) -> np.ndarray:
        """Minimisation values of the told trials (rows appended as trials come, not per ask)."""
        if len(self._F) < len(self.observed):
            self._F = np.vstack([self._F, self.fitness(self.observed[len(self._F):])])
        return self._F

    def _derived(self: Any, F: np.ndarray) -> dict[str, Any]:
        """What this ask derived from ``F`` (:meth:`_observed_F`) so far; reset per tell."""
        if self._cached[0] != len(F):
            self._cached = (len(F), {})
        return self._cached[1]

    def _fenced(self: Any, F: np.ndarray) -> np.ndarray:
        """:func:`~.acquisition.fenced` rows of ``F``: those that may set the front."""
        got = self._derived(F)
        if "fenced" not in got:
            got["fenced"] = fenced(F, self.objectives)
        return got["fenced"]

    def _front(self: Any, F: np.ndarray) -> np.ndarray:
        """The non-dominated :meth:`_fenced` rows of ``F``, in row order."""
        got = self._derived(F)
        if "front" not in got:
            rows = self._contenders.update(F)
            front = rows[(self._contenders.dominators == 0) & self._fenced(F)[rows]]
            got["front"] = F[front]
        return got["front"]

    def _parents(self: Any, F: np.ndarray) -> list[Trial]:
        """The best feasible trials: the front (at most ``4 * parents``), at least ``parents``.

        The :meth:`_fenced` rows in NSGA-II order
        (:func:`~cellblock.strategies.selection.survivors`), taken from the contenders: the
        same rows as from all of them.
        """
        got = self._derived(F)
        if "parents" not in got:
            fin = self._fenced(F)
            rows = self._contenders.update(F)
            inside = fin[rows]
            ok = rows[inside]
            n_front = int((self._contenders.dominators[inside] == 0).sum())
            k = min(max(self.parents, n_front), 4 * self.parents, int(fin.sum()))
            got["parents"] = [self.observed[int(ok[i])] for i in best_rows(F[ok], k)] if k else []
        return list(got["parents"])

    def _training_rows(self: Any, rows: list[int]) -> list[int]:
        """At most :data:`FIT_ROWS` of the observations ``rows`` (indices, in order): the best
        half by non-dominated rank (ties: the earlier told) and a random half of the others
        (drawn from the seed and ``n_fit``, so a resumed run fits the same rows). A fit's
        cost grows with its rows; those far from the front matter least to the acquisition
        near it."""
        if len(rows) <= FIT_ROWS:
            return rows
        idx = np.asarray(rows)
        ranks = nondominated_rank(self._observed_F()[idx])
        best = idx[np.argsort(ranks, kind="stable")[: FIT_ROWS // 2]]
        others = np.setdiff1d(idx, best)
        rng = np.random.default_rng([self.seed, self.n_fit, 2])
        drawn = rng.choice(others, size=FIT_ROWS - len(best), replace=False)
        return sorted(int(i) for i in np.concatenate([best, drawn]))
