"""Predictor-guided search (BANANAS / NPENAS style) for any define-by-run space.

After a space-filling initial design, every ask first walks the neighbourhoods of the
best trials, as ``evolution`` does (first-improvement hill climbing with one objective,
Pareto local search with several), but takes from the chosen centre the untried
one-decision neighbour that the surrogate models (:mod:`cellblock.strategies.predictive.surrogate`)
score highest, instead of a random one. Once every elite neighbourhood has been tried
(a local optimum), with one objective and ``local_restart`` (off by default) it walks the
next best trial's neighbourhood, and so on among the ``parents`` best; then (at once
without it) it scores a global pool of candidates made by the space's own
operators (neighbourhoods of good trials, mutations, crossovers, random samples; never
one asked before) and takes the best; with one objective it then hill-climbs on the
acquisition over one-decision neighbours. Front members whose accuracy is an outlier
(below Tukey's fence: networks that failed to learn) neither set the front's nadir nor
become pool parents. The acquisition:

* one objective: expected improvement over the best feasible trial;
* several: the predicted probability of not being dominated by the current front
  (``mo_acquisition="pnd"``, the default) or the expected hypervolume improvement
  (``"ehvi"``, from the project's exact :func:`~cellblock.pareto.hypervolume`).
  Expensive objectives (accuracy) are predicted by a bootstrap ensemble with calibrated
  spread; cheap ones (MACs, params, latency, proxies) are functions of the architecture,
  fitted by a deterministic ridge model on the same encoding (on the log scale when
  positive), so they count as known before training.

Constraints given to the strategy (the run fills them) multiply the acquisition by the
predicted probability of being feasible. Trials asked and not yet told (concurrency > 1)
join the front at their predicted values (kriging believer) and candidates close to them
(few decisions apart) are penalised, so a batch is not a set of near-duplicates. The
whole state is JSON-able; the models are refitted from it, deterministically.

The parts live in their own modules: :mod:`.models` (fitting and querying
the surrogates, built on :mod:`.surrogate`), :mod:`.acquisition` (EI, probability of
non-domination, EHVI, Tukey's fence), :mod:`.pool` (the candidates) and :mod:`.moves`
(choosing among them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.core.config import RunConfig
from cellblock.core.errors import ConfigError
from cellblock.core.objectives import Constraint, Objective
from cellblock.pareto import nondominated_mask
from cellblock.records import Trial
from cellblock.search_spaces.api import SearchSpace, arch_id
from cellblock.strategies.base import (
    Strategy,
    check_positive_int,
    check_probability,
    register_strategy,
)
from cellblock.strategies.local_search import (
    Elite,
    Neighbourhood,
    check_bool,
    load_elite,
)
from cellblock.strategies.predictive.acquisition import (
    ehvi,
    expected_improvement,
    hamming,
    p_nondominated,
)
from cellblock.strategies.predictive.models import (
    MODELLED,
    Models,
    fit_models,
    model_targets,
    objective_predictions,
    p_feasible,
)
from cellblock.strategies.predictive.moves import MoveChoice
from cellblock.strategies.predictive.pool import Candidate, CandidatePool
from cellblock.strategies.predictive.surrogate import Encoder
from cellblock.strategies.predictive.told import Told
from cellblock.strategies.selection import Contenders, trial_from_state, trial_to_state

#: The models are refitted every max(1, n // REFIT_EVERY) tells: after every tell below
#: 2 * REFIT_EVERY (100) observations.
REFIT_EVERY = 50


@register_strategy("predictive")
class PredictiveSearch(MoveChoice, Told, Strategy):
    """Surrogate-guided search: EI (one objective) or EHVI (several) over operator-made candidates.

    Args:
        n_init: Space-filling random architectures before the models are used.
        candidates: Size of the candidate pool scored per ask.
        parents: Best trials whose neighbourhoods, mutations and crossovers make candidates.
        members: Ensemble size of the expensive-objective models.
        hidden: Random ReLU features per ensemble member.
        constraints: The run's constraints (``"macs<=5M"`` strings); the run fills them.
        acquisition: With one objective, ``"ei"`` (expected improvement) or ``"ts"``
            (independent Thompson sampling: the best of one draw per candidate).
        local_search: Walk the best trials' neighbourhoods first, as ``evolution`` does
            (hill climbing with one objective, Pareto local search with several), taking
            each centre's untried neighbour of highest acquisition; the global pool
            only once every elite neighbourhood is tried.
        mo_acquisition: With several objectives, ``"pnd"`` (the predicted probability of
            not being dominated by the current front) or ``"ehvi"`` (expected hypervolume
            improvement).
        pls_share: With several objectives, the share of the local-search asks that take
            a random untried move of the least explored front member instead of the
            model's choice (the acquisition alone left parts of the front unexplored).
        extreme_share: With several objectives, the share of the asks that search for the
            best value of the first expensive objective (accuracy) alone, as the
            one-objective search does: the front's most accurate end.
        local_restart: With one objective, once the best trial's neighbourhood is tried
            (a local optimum), walk the next best trial's, and so on among the
            ``parents`` best, before the global pool. Off by default: it helps on rough
            tables but locks some seeds into a poor basin (issue 31,
            ``results/benchmarks/predictive/stalls.md``).
    """

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        seed: int = 0,
        n_init: int = 10,
        candidates: int = 256,
        parents: int = 5,
        members: int = 8,
        hidden: int = 64,
        constraints: Iterable[str | Constraint] = (),
        acquisition: str = "ei",
        local_search: bool = True,
        mo_acquisition: str = "pnd",
        pls_share: float = 0.5,
        extreme_share: float = 0.25,
        local_restart: bool = False,
    ) -> None:
        super().__init__(space, objectives, seed)
        self.n_init = check_positive_int("n_init", n_init)
        self.candidates = check_positive_int("candidates", candidates, 2)
        self.per_centre = max(self.candidates // 4, 1)  # moves scored per local-search centre
        self.parents = check_positive_int("parents", parents)
        self.members = check_positive_int("members", members, 2)
        self.hidden = check_positive_int("hidden", hidden, 0)
        if acquisition not in ("ei", "ts"):
            raise ConfigError(
                f"strategy option acquisition must be 'ei' or 'ts', got {acquisition!r}")
        self.acquisition = acquisition
        self.local_search = check_bool("local_search", local_search)
        if mo_acquisition not in ("pnd", "ehvi"):
            raise ConfigError(
                f"strategy option mo_acquisition must be 'pnd' or 'ehvi', got {mo_acquisition!r}")
        self.mo_acquisition = mo_acquisition
        self.pls_share = check_probability("pls_share", pls_share)
        self.extreme_share = check_probability("extreme_share", extreme_share)
        self.local_restart = check_bool("local_restart", local_restart)
        self.elite = Elite(len(self.objectives))
        self.hood = Neighbourhood(space)
        if isinstance(constraints, str):
            raise ConfigError(f"strategy option constraints must be a list, got {constraints!r}")
        self.constraints = [
            c if isinstance(c, Constraint) else Constraint.parse(c) for c in constraints]
        self.encoder = Encoder(space)
        self.observed: list[Trial] = []  # told trials, one per architecture, in order
        self.observed_ids: set[str] = set()
        self.pending: dict[str, dict[str, Any]] = {}  # asked, not yet told
        self.pool = CandidatePool(space, self.candidates)
        self.n_asked = 0
        self.n_fit = 0  # observations the models were fitted on
        self.width_fit = 0
        self._models: Models | None = None
        # scorer key -> (arch_id -> row, rows of (means, stds, p feasible)): :meth:`_predicted`
        # arch_id -> (moves in order, neighbours made, generator): climbing's cache
        self._climb: dict[str, tuple[list[Any], list[Candidate], np.random.Generator]] = {}
        self._predictions: dict[int | None, tuple[dict[str, int], list[Any]]] = {}
        self._F = np.zeros((0, len(self.objectives)))  # :meth:`_observed_F`
        self._cached: tuple[int, dict[str, Any]] = (-1, {})  # :meth:`_derived`
        self._contenders = Contenders(4 * self.parents)  # :meth:`_parents`

    @classmethod
    def run_options(cls, config: RunConfig, run_dir: Any) -> dict[str, Any]:
        """Options the run fills: its constraints."""
        if config.storage is not None:
            raise ConfigError(
                "storage is used by optuna:* strategies only, not 'predictive'; remove --storage")
        return {"constraints": list(config.constraints or [])}

    # ---- models -------------------------------------------------------------------------------
    def _fit(self) -> None:
        """Fit one model per modelled metric on the first ``n_fit`` observations (at most
        :data:`~.told.FIT_ROWS` of them: :meth:`_training_rows`)."""
        rng = np.random.default_rng([self.seed, self.n_fit, 1])
        rows = [i for i, t in enumerate(self.observed[: self.n_fit]) if t.status in MODELLED]
        trials = [self.observed[i] for i in self._training_rows(rows)]
        X = self.encoder.encode([t.arch for t in trials], self.width_fit,
                                [t.arch_id for t in trials])
        targets = model_targets(self.objectives, self.constraints)
        self._models = fit_models(trials, X, targets, self.members, self.hidden, rng)
        self._predictions = {}

    def _maybe_refit(self) -> None:
        """Refit after every tell below 2 * :data:`REFIT_EVERY` (100) observations, then every
        n // :data:`REFIT_EVERY` tells (amortised cost)."""
        n = len(self.observed)
        if self._models is None or n - self.n_fit >= max(1, n // REFIT_EVERY):
            self.n_fit, self.width_fit = n, self.encoder.width
            self._fit()

    # ---- acquisition --------------------------------------------------------------------------
    def _scorer(self, only: int | None = None) -> Callable[[list[Candidate]], np.ndarray] | None:
        """The acquisition of this ask (None before the models can score): higher is better.

        ``only``: the index of the one objective to score (expected improvement on it alone).
        """
        F = self._observed_F()
        finite = self._fenced(F)
        models = self._models or {}
        objectives = self.objectives if only is None else [self.objectives[only]]
        if not finite.any() or any(o.name not in models for o in objectives):
            return None
        best = float(F[finite, 0 if only is None else only].min())
        front = self._front(F)
        pending = [e["arch"] for e in self.pending.values()]
        # kriging believer: pending trials at their predicted values
        if pending and len(objectives) > 1:
            front = np.vstack([front, objective_predictions(models, self.objectives,
                                                            self.encoder.encode(pending))[0]])
            front = front[nondominated_mask(front)]

        def score(items: list[Candidate]) -> np.ndarray:
            M, S, factor = self._predicted(items, objectives, only)
            if len(objectives) > 1 and self.mo_acquisition == "pnd":
                acq = p_nondominated(M, S, front) + 1e-9 * self.rng.random(len(M))  # ties at random
            elif len(objectives) > 1:
                acq = ehvi(M, S, front)
            elif self.acquisition == "ts":
                # independent Thompson sampling (BANANAS): a draw per candidate
                acq = np.maximum(best - (M[:, 0] + S[:, 0] * self.rng.standard_normal(len(M))), 0.0)
            else:
                acq = expected_improvement(M, S, best)
            for arch in pending:  # local penalisation of candidates near pending ones
                d = np.array([hamming(a, arch) for _, a in items])
                factor = factor * d / (d + 1.0)
            return np.where(acq >= 0, acq * factor, acq / np.maximum(factor, 1e-12))

        return score

    def _predicted(self, items: list[Candidate], objectives: Sequence[Objective],
                   key: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(means, stds, probability feasible) of ``items`` under the current models.

        Cached per architecture until the next refit (``key``: the scorer's objective set):
        the pool's explorers and the centres' neighbours are scored again in later asks.
        """
        index, rows = self._predictions.setdefault(key, ({}, []))
        new = {aid: a for aid, a in items if aid not in index}
        if new:
            models = self._models or {}
            X = self.encoder.encode(list(new.values()), ids=list(new))
            M, S = objective_predictions(models, objectives, X)
            block = np.hstack([M, S, p_feasible(models, self.constraints, X)[:, None]])
            base = len(index)
            index.update((aid, base + i) for i, aid in enumerate(new))
            rows[:] = [np.vstack(rows + [block])]
        at = rows[0][np.fromiter((index[aid] for aid, _ in items), int, len(items))]
        m = len(objectives)
        return at[:, :m], at[:, m:2 * m], at[:, 2 * m]

    # ---- ask / tell ---------------------------------------------------------------------------
    def ask(self) -> dict[str, Any]:
        self.n_asked += 1
        arch = None
        if len(self.observed) >= self.n_init:
            self._maybe_refit()
            k = self.n_asked
            share = self.extreme_share
            if len(self.objectives) > 1 and int(k * share) != int((k - 1) * share):
                arch = self._extreme()
            score = self._scorer() if arch is None else None
            if score is not None and self.local_search:
                arch = self._local(score)
            parents = self._parents(
                self._observed_F()) if score is not None and arch is None else []
            if parents:
                pool = self.pool.refresh(parents, self.seen, self.rng,
                                         pareto_local=len(self.objectives) > 1)
                arch = self._choose(pool, score, climb=len(self.objectives) == 1) if pool else None
        if arch is None:
            arch = self._space_filling() if self.n_asked <= self.n_init else None
        if arch is None and self.constraints and self._models:
            arch = self._likely_feasible()
        if arch is None:
            arch = self.fresh(lambda: self.space.sample(self.rng))
        aid = arch_id(arch)
        self.seen.add(aid)
        self.encoder.learn(arch)
        self.pending[aid] = {"arch": dict(arch)}
        return arch

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        self.pending.pop(trial.arch_id, None)
        if trial.arch_id in self.observed_ids:
            return  # a repeated proposal told again
        self.observed_ids.add(trial.arch_id)
        self.encoder.learn(trial.arch)
        self.observed.append(trial)
        self.elite.add(trial, self.fitness([trial])[0])

    def replay(self, trials: Iterable[Trial]) -> None:
        super().replay(trials)
        self.pending = {}
        self.n_asked = max(self.n_asked, self.n_told)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(observed=[trial_to_state(t) for t in self.observed],
                     pending=dict(self.pending),
                     pool=list(self.pool.explorers.values()),
                     hoods={k: list(v) for k, v in self.pool.hoods.items()},
                     n_asked=self.n_asked, n_fit=self.n_fit, width_fit=self.width_fit,
                     encoder=self.encoder.state_dict(), model_seed=self.seed,
                     elite=self.elite.state_dict(), neighbourhood=self.hood.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.observed = [trial_from_state(d) for d in state["observed"]]
        self._F = np.zeros((0, len(self.objectives)))
        self._cached = (-1, {})
        self._contenders = Contenders(4 * self.parents)
        self.observed_ids = {t.arch_id for t in self.observed}
        self.pending = {aid: {"arch": dict(e["arch"])} for aid, e in state["pending"].items()}
        self.pool.explorers = {arch_id(a): dict(a) for a in state["pool"]}
        self.pool.hoods = {k: [dict(a) for a in v] for k, v in state["hoods"].items()}
        self.pool.hood_ids = {}
        self.n_asked = int(state["n_asked"])
        self.n_fit, self.width_fit = int(state["n_fit"]), int(state["width_fit"])
        self.encoder.load_state_dict(state["encoder"])
        self.elite = load_elite(state["elite"], self.fitness, len(self.objectives))
        self.hood.load_state_dict(state["neighbourhood"])
        self.seed = int(state["model_seed"])  # the models' random features are drawn from it
        self._models = None
        self._predictions = {}
        if self.n_fit:
            self._fit()
