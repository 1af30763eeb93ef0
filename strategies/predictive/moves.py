"""How the predictive strategy picks its next candidate (a mixin of
:class:`~.search.PredictiveSearch`).

* :meth:`MoveChoice._local`: the best-scored untried one-decision move of the local-search
  centres (hill climbing with one objective, Pareto local search with several);
* :meth:`MoveChoice._centres`: those centres. With one objective and ``local_restart``,
  the best trial whose neighbourhood is not yet tried; once it is (a local optimum), the
  next best, and so on among the ``parents`` best (iterated first-improvement search from
  the best trials, as the table's rough columns need), before the global pool;
* :meth:`MoveChoice._extreme`: the multi-objective asks for the front's most accurate end;
* :meth:`MoveChoice._choose`: the best of the global pool, improved by hill climbing on
  the acquisition;
* :meth:`MoveChoice._space_filling` and :meth:`MoveChoice._likely_feasible`: asks made
  before the models can score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cellblock.records import Trial
from cellblock.search_spaces.api import arch_id
from cellblock.strategies.local_search import pick_centre
from cellblock.strategies.predictive.acquisition import hamming
from cellblock.strategies.predictive.models import p_feasible
from cellblock.strategies.predictive.pool import Candidate

# hill-climbing steps on the acquisition from the pool's best candidate (one objective)
CLIMB_STEPS = 2
CLIMB_MOVES = 16  # one-decision moves scored per step (a random subset when there are more)
CLIMB_CACHE = 256  # architectures whose climbing neighbours are kept (:meth:`_untried_moves`)


class MoveChoice:
    """The candidate-choosing half of the predictive strategy (the strategy holds state, models)."""

    def _centres(self: Any) -> list[Trial]:
        """The local-search centres of this ask, least explored first (one objective: at most one).

        With several objectives, or one without ``local_restart``, the elite (every
        non-dominated trial). With one objective and ``local_restart``, the best of the
        ``parents`` best trials whose neighbourhood still has untried moves: after the
        best trial's neighbourhood is tried (a local optimum), the search goes on around
        the next best instead of leaving for the global pool, which on rough tables spent
        its asks far from every good trial.
        """
        elite = {t.arch_id for t in self.elite.trials}
        if len(self.objectives) > 1 or not self.local_restart:
            self.hood.keep(elite)
            return sorted(self.elite.trials,
                          key=lambda t: (len(self.hood.tried.get(t.arch_id, ())), t.arch_id))
        parents = self._parents(self._observed_F())
        self.hood.keep(elite | {t.arch_id for t in parents})
        return next(([p] for p in parents if self.hood.untried(p, self.seen, limit=1)), [])

    def _space_filling(self: Any) -> dict[str, Any]:
        """The farthest (in decisions changed) of a few random samples from everything asked."""
        asked = [t.arch for t in self.observed] + [e["arch"] for e in self.pending.values()]
        best, best_d = None, -1
        for _ in range(8):
            arch = self.space.sample(self.rng)
            if arch_id(arch) in self.seen:
                continue
            d = min((hamming(arch, a) for a in asked), default=0)
            if d > best_d:
                best, best_d = arch, d
        return best if best is not None else self.fresh(lambda: self.space.sample(self.rng))

    def _likely_feasible(self: Any) -> dict[str, Any] | None:
        """Of a few unseen random samples, the likeliest feasible (objectives not modelled yet)."""
        items = {}
        for _ in range(max(self.candidates // 8, 8)):
            arch = self.space.sample(self.rng)
            aid = arch_id(arch)
            if aid not in self.seen:
                items[aid] = arch
        if not items:
            return None
        X = self.encoder.encode(list(items.values()), ids=list(items))
        p = p_feasible(self._models or {}, self.constraints, X)
        return list(items.values())[int(np.argmax(p + 1e-9 * self.rng.random(len(p))))]

    def _local(self: Any, score: Callable[[list[Candidate]], np.ndarray]) -> dict[str, Any] | None:
        """The best-scored untried neighbour of the elite (None: every elite neighbourhood is
        tried).

        With one objective the centre is the best trial (hill climbing) or, with
        ``local_restart``, the best trial with untried moves (:meth:`_centres`); with several, the
        untried neighbours of the front members compete (Pareto local search whose next
        move is the one of highest acquisition on the front; the least explored members
        first, at most ``candidates // 4`` moves of each, until ``candidates`` moves are
        scored), except in a ``pls_share`` of the asks, which take a random untried move
        of the least explored member (plain Pareto local search, as ``evolution``; with
        constraints, a move predicted feasible with probability 0.5 or more, else the
        model's choice).
        """
        centres = self._centres()
        k = self.n_asked
        if len(self.objectives) > 1 and int(k * self.pls_share) != int((k - 1) * self.pls_share):
            centre = pick_centre(self.elite.trials, self.elite.F, self.hood, self.rng)
            # plain Pareto local search: the least explored member, a random move
            while centre is not None:
                moves = self.hood.untried(centre, self.seen, limit=self.per_centre)
                if moves:  # of those likely feasible; none: the model's choice below
                    X = self.encoder.encode([a for _, (_, a) in moves],
                                            ids=[aid for _, (aid, _) in moves])
                    ok = np.flatnonzero(p_feasible(self._models or {}, self.constraints, X) >= 0.5)
                    if len(ok):
                        key, (aid, arch) = moves[int(ok[self.rng.integers(len(ok))])]
                        self.hood.take(centre, key, aid, self.seen)
                        return arch
                    break
                centre = pick_centre(self.elite.trials, self.elite.F, self.hood, self.rng)
        moves: list[tuple[Trial, Any, Candidate]] = []
        for centre in centres:
            hood = self.hood.untried(centre, self.seen, limit=self.per_centre)
            moves += [(centre, key, item) for key, item in hood]
            if len(moves) >= self.candidates:  # enough: the least explored members' moves
                break
        if not moves:
            return None
        centre, key, (aid, arch) = moves[int(np.argmax(score([item for _, _, item in moves])))]
        self.hood.take(centre, key, aid, self.seen)
        return arch

    def _extreme(self: Any) -> dict[str, Any] | None:
        """An ask for the front's most accurate end: the one-objective search on the first expensive
        objective.

        Expected improvement on that objective alone: the best untried neighbour of its
        best trial, or, once that neighbourhood is tried (a local optimum), the best of
        the global pool, improved by hill climbing.
        """
        j = next((i for i, o in enumerate(self.objectives) if not o.cheap), 0)
        score = self._scorer(only=j)
        F = self._observed_F()
        ok = np.flatnonzero(np.isfinite(F).all(axis=1))
        if score is None or not len(ok):
            return None
        top = self.observed[int(ok[np.argmin(F[ok, j])])]
        moves = self.hood.untried(top, self.seen, limit=self.per_centre)
        if moves:
            key, (aid, arch) = moves[int(np.argmax(score([item for _, item in moves])))]
            self.hood.take(top, key, aid, self.seen)
            return arch
        pool = self.pool.refresh(self._parents(F), self.seen, self.rng, pareto_local=False)
        return self._choose(pool, score, climb=True) if pool else None

    def _choose(self: Any, items: list[Candidate], score: Callable[[list[Candidate]], np.ndarray],
                climb: bool = False) -> dict[str, Any]:
        """The pool's best candidate; with ``climb``, improved by hill climbing the acquisition."""
        acq = score(items)
        i = int(np.argmax(acq))
        best, best_acq = items[i], float(acq[i])
        for _ in range(CLIMB_STEPS if climb else 0):
            hood = self._untried_moves(best[1])
            if not hood:
                break
            acq = score(hood)
            i = int(np.argmax(acq))
            if acq[i] <= best_acq:
                break
            best, best_acq = hood[i], float(acq[i])
        return best[1]

    def _untried_moves(self: Any, arch: dict[str, Any]) -> list[Candidate]:
        """Up to ``CLIMB_MOVES`` one-decision neighbours of ``arch``, never asked.

        The moves are visited in an order shuffled by ``arch``'s id, and the neighbours are
        made in that order by a generator seeded by it: a function of ``arch`` alone, so
        they are cached (the climb often starts from the same pool candidate in later
        asks) and a resumed run makes the same ones.
        """
        aid = arch_id(arch)
        entry = self._climb.pop(aid, None)
        if entry is None:
            rng = np.random.default_rng(int(aid, 16))
            moves = self.space.moves(arch)
            entry = ([moves[int(k)] for k in rng.permutation(len(moves))], [], rng)
        self._climb[aid] = entry  # most recently used last
        while len(self._climb) > CLIMB_CACHE:
            del self._climb[next(iter(self._climb))]
        moves, made, rng = entry
        hood = []
        for k, (name, value) in enumerate(moves):
            if k == len(made):
                near = self.space.neighbour(arch, name, value, rng)
                made.append((arch_id(near), near))
            if made[k][0] not in self.seen:
                hood.append(made[k])
                if len(hood) >= CLIMB_MOVES:
                    break
        return hood
