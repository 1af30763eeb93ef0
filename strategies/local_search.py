"""Local search over one-decision neighbours, shared by the evolutionary strategies.

:class:`Elite` keeps every non-dominated trial seen so far (with one objective: the best
ones). :class:`Neighbourhood` proposes, around a chosen centre, the one-decision
neighbours (:meth:`SearchSpace.moves`) not yet evaluated, in random order or by a score
(:class:`Marginals`, a univariate model of the fitness), and marks a centre *exhausted*
once every move from it has been tried. Walking the elite's
neighbourhoods is first-improvement hill climbing with one objective and Pareto local
search with several (Paquete et al., 2004). Both are space-generic: they only use the
space's traced decisions and domains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.records import Trial
from cellblock.search_spaces.api import SearchSpace, arch_id
from cellblock.strategies.selection import best_index, trial_from_state, trial_to_state


def check_bool(name: str, value: Any) -> bool:
    """Validate a strategy option that must be true or false."""
    if not isinstance(value, bool):
        raise ConfigError(f"strategy option {name} must be true or false, got {value!r}")
    return value


class Elite:
    """The non-dominated set of all feasible completed trials told so far.

    Args:
        n_objectives: Number of objectives (rows of ``F`` are minimisation values).
    """

    def __init__(self, n_objectives: int) -> None:
        self.trials: list[Trial] = []
        self.F = np.zeros((0, n_objectives))

    def __len__(self) -> int:
        return len(self.trials)

    def add(self, trial: Trial, f: np.ndarray) -> bool:
        """Insert ``trial`` (minimisation values ``f``) unless dominated; whether it entered."""
        if not np.isfinite(f).all():
            return False
        le, lt = np.all(self.F <= f, axis=1), np.any(self.F < f, axis=1)
        if np.any(le & lt):
            return False
        equal = np.flatnonzero(le & ~lt)
        if any(self.trials[int(i)].arch_id == trial.arch_id for i in equal):
            return False  # told again (a repeated proposal)
        keep = np.flatnonzero(~(np.all(f <= self.F, axis=1) & np.any(f < self.F, axis=1)))
        self.trials = [self.trials[int(i)] for i in keep] + [trial]
        self.F = np.vstack([self.F[keep], f[None, :]])
        return True

    def state_dict(self) -> list[dict[str, Any]]:
        """The members as JSON-able trial states (objective values are recomputed on load)."""
        return [trial_to_state(t) for t in self.trials]


MoveKey = tuple[str, bool, Any]


def move_key(name: str, value: Any) -> MoveKey:
    """Hashable key of a (decision, value) pair that keeps ``True`` apart from ``1``."""
    return (name, isinstance(value, bool), value)


class Neighbourhood:
    """Untried one-decision neighbours of centres, in random order or by a score.

    Args:
        space: The search space (its :meth:`~SearchSpace.moves` define the neighbourhood).
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.tried: dict[str, set[MoveKey]] = {}  # centre arch_id -> keys of the moves tried
        self.exhausted: set[str] = set()
        # centre arch_id -> (moves in order, made neighbours, rng): :meth:`untried`
        self.made: dict[str, Any] = {}

    def propose(self, centre: Trial, rng: np.random.Generator, seen: set[str],
                score: Callable[[str, Any], float] | None = None) -> dict[str, Any] | None:
        """A neighbour of ``centre`` whose id is not in ``seen`` (added to it), or None if
        exhausted.

        Moves are tried in random order, or by increasing ``score(name, value)`` (ties at random).
        """
        if centre.arch_id in self.exhausted:
            return None
        tried = self.tried.setdefault(centre.arch_id, set())
        moves = [m for m in self.space.moves(centre.arch) if move_key(*m) not in tried]
        order = rng.permutation(len(moves))
        if score is not None:
            keys = np.array([score(*moves[int(i)]) for i in order])
            order = order[np.argsort(keys, kind="stable")]
        for i in order:
            name, value = moves[int(i)]
            tried.add(move_key(name, value))
            arch = self.space.neighbour(centre.arch, name, value, rng)
            aid = arch_id(arch)
            if aid not in seen:
                seen.add(aid)
                return arch
        self.exhausted.add(centre.arch_id)
        self.tried.pop(centre.arch_id, None)
        return None

    def untried(self, centre: Trial, seen: set[str],
                limit: int | None = None) -> list[tuple[MoveKey, tuple[str, dict[str, Any]]]]:
        """``(move key, (arch_id, arch))`` of neighbours of ``centre`` not tried and not in
        ``seen``.

        Moves are visited in an order shuffled once per centre, at most ``limit`` returned.
        Neighbours are made on first visit and cached; the order and the decisions a move
        activates come from a generator seeded by the centre's id, so the cache is a
        function of the centre and needs no state. Neighbours already in ``seen`` count
        as tried; a centre with none left is exhausted. Take one with :meth:`take`;
        drop the cache of former centres with :meth:`keep`.
        """
        if centre.arch_id in self.exhausted:
            return []
        cache = self.made.get(centre.arch_id)
        if cache is None:
            rng = np.random.default_rng(int(centre.arch_id, 16))
            moves = self.space.moves(centre.arch)
            cache = self.made[
                centre.arch_id] = ([moves[int(i)] for i in rng.permutation(len(moves))], {}, rng)
        moves, made, rng = cache
        tried = self.tried.setdefault(centre.arch_id, set())
        out = []
        for name, value in moves:
            key = move_key(name, value)
            if key in tried:
                continue
            if key not in made:
                arch = self.space.neighbour(centre.arch, name, value, rng)
                made[key] = (arch_id(arch), arch)
            if made[key][0] in seen:
                tried.add(key)
                continue
            out.append((key, made[key]))
            if limit is not None and len(out) >= limit:
                return out
        if not out:
            self.exhausted.add(centre.arch_id)
            self.tried.pop(centre.arch_id, None)
            self.made.pop(centre.arch_id, None)
        return out

    def keep(self, centre_ids: set[str]) -> None:
        """Forget the cached neighbours of centres not in ``centre_ids``."""
        for aid in [aid for aid in self.made if aid not in centre_ids]:
            del self.made[aid]

    def take(self, centre: Trial, key: MoveKey, aid: str, seen: set[str]) -> None:
        """Mark the move ``key`` of ``centre`` tried and its neighbour ``aid`` seen."""
        self.tried.setdefault(centre.arch_id, set()).add(key)
        seen.add(aid)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (sorted, so that equal states serialise equally)."""
        return {
            "tried": {k: [[m[0], m[2]] for m in sorted(v, key=repr)]
                      for k, v in sorted(self.tried.items())},
            "exhausted": sorted(self.exhausted),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.tried = {k: {move_key(n, x) for n, x in v} for k, v in state["tried"].items()}
        self.exhausted = set(state["exhausted"])


class Marginals:
    """Mean fitness of the evaluated trials per (decision, value): a univariate model.

    Used to try the most promising moves first with one objective (lower is better).
    """

    def __init__(self) -> None:
        self.sums: dict[MoveKey, list[float]] = {}  # (decision, value) -> [sum of fitness, count]
        self.total = [0.0, 0]

    def add(self, arch: Mapping[str, Any], f: float) -> None:
        """Count a trial with fitness ``f`` (finite values only)."""
        if not np.isfinite(f):
            return
        self.total[0] += f
        self.total[1] += 1
        for name, value in arch.items():
            s = self.sums.setdefault(move_key(name, value), [0.0, 0])
            s[0] += f
            s[1] += 1

    def score(self, name: str, value: Any) -> float:
        """Mean fitness of trials with ``name == value``, shrunk towards the overall mean."""
        mean = self.total[0] / self.total[1] if self.total[1] else 0.0
        s = self.sums.get(move_key(name, value), [0.0, 0])
        return (s[0] + mean) / (s[1] + 1)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        rows = [[k[0], k[2], v[0], v[1]] for k, v in sorted(self.sums.items(), key=repr)]
        return {"sums": rows, "total": list(self.total)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.sums = {move_key(n, x): [float(t), int(c)] for n, x, t, c in state["sums"]}
        self.total = [float(state["total"][0]), int(state["total"][1])]


def pick_centre(trials: Sequence[Trial], F: np.ndarray, hood: Neighbourhood,
                rng: np.random.Generator) -> Trial | None:
    """The trial to search around, or None when all are exhausted.

    Among the trials not exhausted: with several objectives, those with the fewest moves
    tried (the effort is spread over the front); then the lowest non-dominated rank, then
    the least crowded; ties at random.
    """
    open_ = [i for i, t in enumerate(trials) if t.arch_id not in hood.exhausted
             and np.isfinite(F[i]).all()]
    if not open_:
        return None
    idx = np.asarray(open_)
    if len(idx) == 1:
        return trials[int(idx[0])]
    if F.shape[1] > 1:
        n = np.array([len(hood.tried.get(trials[i].arch_id, ())) for i in idx])
        idx = idx[n == n.min()]
    return trials[int(idx[best_index(F[idx], rng)])]


def load_elite(states: Sequence[Mapping[str, Any]], fitness: Any, n_objectives: int) -> Elite:
    """Rebuild an :class:`Elite` from :meth:`Elite.state_dict` with the strategy's ``fitness``."""
    elite = Elite(n_objectives)
    trials = [trial_from_state(d) for d in states]
    elite.trials = trials
    elite.F = fitness(trials) if trials else np.zeros((0, n_objectives))
    return elite
