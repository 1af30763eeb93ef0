"""Predictor-guided search (BANANAS / NPENAS style) for any define-by-run space.

After a space-filling initial design, every ask scores a pool of candidates made by the
space's own operators (one-decision moves of the best trials, mutations and crossovers of
good trials, random samples; never one asked before) with surrogate models
(:mod:`cellblock.strategies.surrogate`) and takes the best; with one objective it then
hill-climbs on the acquisition over one-decision neighbours (the model's optimum near the
pool, found without evaluating anything). With several objectives the candidates are the
untried neighbours of the least explored front member (Pareto local search, as in
``evolution``, with the moves ordered by EHVI); front members whose accuracy is an outlier
(below Tukey's fence: networks that failed to learn) neither set the front's nadir nor
become parents. The acquisition:

* one objective: expected improvement over the best feasible trial;
* several: expected hypervolume improvement (EHVI) over the current front, from the
  project's exact :func:`~cellblock.pareto.hypervolume`. Expensive objectives (accuracy)
  are predicted by a bootstrap ensemble with calibrated spread; cheap ones (MACs,
  params, latency, proxies) are functions of the architecture, fitted by a deterministic
  ridge model on the same encoding (on the log scale when positive), so they count as
  known before training.

Constraints given to the strategy (the run fills them) multiply the acquisition by the
predicted probability of being feasible. Trials asked and not yet told (concurrency > 1)
join the front at their predicted values (kriging believer) and candidates close to them
(few decisions apart) are penalised, so a batch is not a set of near-duplicates. The
whole state is JSON-able; the models are refitted from it, deterministically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.core.errors import ConfigError
from cellblock.core.objectives import Constraint, Objective, get_metric
from cellblock.pareto import hypervolume, nondominated_mask
from cellblock.records import COMPLETE, INFEASIBLE, PRUNED, Trial
from cellblock.search_spaces.api import SearchSpace, arch_id
from cellblock.strategies.base import Strategy, check_positive_int, register_strategy
from cellblock.strategies.selection import survivors, trial_from_state, trial_to_state
from cellblock.strategies.surrogate import Encoder, RidgeEnsemble

SHORTLIST = 8  # candidates whose EHVI is integrated (the others: optimistic HVI only)
CLIMB_STEPS = 2  # hill-climbing steps on the acquisition from the pool's best candidate (one objective)
CLIMB_MOVES = 16  # one-decision moves scored per step (a random subset when there are more)
QUANTILES = 8  # normal quantiles integrating EHVI
REF_OFFSET = 0.1  # reference point = nadir + 10% of the front's range (as in cellblock bench)
MODELLED = (COMPLETE, INFEASIBLE, PRUNED)  # statuses whose metrics are observations


def _cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (scipy imported on first use: it is slow to import for every CLI call)."""
    from scipy.special import ndtr

    return ndtr(x)


def _hamming(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """Number of decisions in which two architectures differ (absent counts as a value)."""
    return sum(1 for k in a.keys() | b.keys() if k not in a or k not in b or a[k] != b[k])


@register_strategy("predictive")
class PredictiveSearch(Strategy):
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
    ) -> None:
        super().__init__(space, objectives, seed)
        self.n_init = check_positive_int("n_init", n_init)
        self.candidates = check_positive_int("candidates", candidates, 2)
        self.parents = check_positive_int("parents", parents)
        self.members = check_positive_int("members", members, 2)
        self.hidden = check_positive_int("hidden", hidden, 0)
        if acquisition not in ("ei", "ts"):
            raise ConfigError(f"strategy option acquisition must be 'ei' or 'ts', got {acquisition!r}")
        self.acquisition = acquisition
        if isinstance(constraints, str):
            raise ConfigError(f"strategy option constraints must be a list, got {constraints!r}")
        self.constraints = [c if isinstance(c, Constraint) else Constraint.parse(c) for c in constraints]
        self.encoder = Encoder(space)
        self.observed: list[Trial] = []  # told trials, one per architecture, in order
        self.observed_ids: set[str] = set()
        self.pending: dict[str, dict[str, Any]] = {}  # asked, not yet told
        self.pool: dict[str, dict[str, Any]] = {}  # explorer candidates, oldest first
        self.hoods: dict[str, list[dict[str, Any]]] = {}  # parent arch_id -> its neighbours
        self.n_asked = 0
        self.n_fit = 0  # observations the models were fitted on
        self.width_fit = 0
        self._models: dict[str, tuple[RidgeEnsemble, bool]] | None = None

    @classmethod
    def run_options(cls, config: Mapping[str, Any], run_dir: Any) -> dict[str, Any]:
        """Options the run fills: its constraints."""
        if config.get("storage") is not None:
            raise ConfigError("storage is used by optuna:* strategies only, not 'predictive'; remove --storage")
        return {"constraints": list(config.get("constraints") or [])}

    # ---- models -------------------------------------------------------------------------------
    def _targets(self) -> dict[str, bool]:
        """Modelled metric -> whether it is cheap (objectives, then constrained metrics)."""
        names = {o.name: o.cheap for o in self.objectives}
        for c in self.constraints:
            names.setdefault(c.metric, get_metric(c.metric).cheap)
        return names

    def _fit(self) -> None:
        """Fit one model per modelled metric on the first ``n_fit`` observations."""
        rng = np.random.default_rng([self.seed, self.n_fit, 1])
        trials = [t for t in self.observed[: self.n_fit] if t.status in MODELLED]
        X = self.encoder.encode([t.arch for t in trials], self.width_fit, [t.arch_id for t in trials])
        self._models = {}
        for name, cheap in self._targets().items():
            y = np.array([t.value(name) if t.value(name) is not None else np.nan for t in trials], dtype=float)
            ok = np.isfinite(y)
            if ok.sum() < 2:
                continue
            if not cheap:  # the worse tail (failed-to-learn networks) would swamp the fit: Tukey's fence
                q1, q3 = np.percentile(y[ok], [25, 75])
                if get_metric(name).direction == "maximize":
                    y = np.maximum(y, q1 - 1.5 * (q3 - q1))
                else:
                    y = np.minimum(y, q3 + 1.5 * (q3 - q1))
            model = RidgeEnsemble(1 if cheap else self.members, self.hidden).fit(X[ok], y[ok], rng)
            self._models[name] = (model, False)
            if cheap and model.loo_rmse > 1e-3 and bool((y[ok] > 0).all()):  # a multiplicative cost: log scale?
                logm = RidgeEnsemble(1, self.hidden).fit(X[ok], np.log(y[ok]), rng)
                if logm.loo_rmse < model.loo_rmse:
                    self._models[name] = (logm, True)

    def _maybe_refit(self) -> None:
        """Refit after every tell up to 100 observations, then after every n/100 (amortised cost)."""
        n = len(self.observed)
        if self._models is None or n - self.n_fit >= max(1, n // 100):
            self.n_fit, self.width_fit = n, self.encoder.width
            self._fit()

    def _predict(self, name: str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) of metric ``name`` in its own units (log scale undone: std is relative)."""
        assert self._models is not None  # noqa: S101  (internal: fitted before use)
        if name not in self._models:
            return None
        model, log = self._models[name]
        mu, sd = model.predict(X)
        return (np.exp(mu), np.exp(mu) * sd) if log else (mu, sd)

    def _objective_preds(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) of the minimisation values of every objective, or None if one is unmodelled."""
        M, S = np.zeros((len(X), len(self.objectives))), np.zeros((len(X), len(self.objectives)))
        for j, o in enumerate(self.objectives):
            pred = self._predict(o.name, X)
            if pred is None:
                return None
            M[:, j] = -pred[0] if o.direction == "maximize" else pred[0]
            S[:, j] = pred[1]
        return M, S

    def _p_feasible(self, X: np.ndarray) -> np.ndarray:
        p = np.ones(len(X))
        for c in self.constraints:
            pred = self._predict(c.metric, X)
            if pred is not None:
                gap = (c.bound - pred[0]) if c.op == "<=" else (pred[0] - c.bound)
                p *= _cdf(gap / pred[1])
        return p

    # ---- candidates -----------------------------------------------------------------------------
    def _fenced(self, F: np.ndarray) -> np.ndarray:
        """Finite rows of ``F`` (minimisation) that are, with several objectives, inside Tukey's
        fence (Q3 + 1.5 IQR) of every expensive objective: a network that failed to learn may
        sit on the front's cheap end, but should not set its nadir."""
        ok = np.isfinite(F).all(axis=1)
        if len(self.objectives) > 1 and ok.sum() >= 4:
            inside = ok.copy()
            for j, o in enumerate(self.objectives):
                if not o.cheap:
                    q1, q3 = np.percentile(F[ok, j], [25, 75])
                    inside &= F[:, j] <= q3 + 1.5 * (q3 - q1)
            if inside.any():
                return inside
        return ok

    def _parents(self, F: np.ndarray) -> list[Trial]:
        """The best feasible trials: the whole front (at most ``4 * parents``), at least ``parents``."""
        ok = np.flatnonzero(self._fenced(F))
        if len(ok) == 0:
            return []
        n_front = int(nondominated_mask(F[ok]).sum())
        k = min(max(self.parents, n_front), 4 * self.parents, len(ok))
        idx, _, _ = survivors(F[ok], k)
        return [self.observed[int(ok[i])] for i in idx]

    def _refresh_pool(self, parents: list[Trial]) -> list[tuple[str, dict[str, Any]]]:
        """The candidates of this ask (never asked before): parents' neighbourhoods and explorers.

        A parent's one-decision neighbours are made once (at most ``candidates // 4``
        of them, a random subset) and kept while it is a parent. With several objectives
        the candidates are the untried neighbours of the front member with the fewest tried
        (Pareto local search, ordered by EHVI); only when every parent's neighbourhood is
        tried do the explorers and the other neighbourhoods compete. Each ask adds
        ``candidates // 8`` explorers: a quarter mutations (one or two decisions) of
        parents, an eighth mutated crossovers of two parents, the rest random samples;
        the oldest leave when more than ``candidates // 2`` are kept.
        """
        pool = self.pool

        def new(arch: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
            aid = arch_id(arch)
            return None if aid in self.seen else (aid, arch)

        current = {p.arch_id for p in parents}
        for aid in [aid for aid in self.hoods if aid not in current]:
            del self.hoods[aid]
        for p in parents:
            if p.arch_id not in self.hoods:
                moves = self.space.moves(p.arch)
                picks = self.rng.permutation(len(moves))[: max(self.candidates // 4, 1)]
                self.hoods[p.arch_id] = [self.space.neighbour(p.arch, *moves[int(i)], self.rng) for i in picks]
        fresh = max(self.candidates // 8, 8)
        made = []
        for _ in range(fresh // 4):
            p = parents[int(self.rng.integers(len(parents)))]
            made.append(self.space.mutate(p.arch, self.rng, n=1 + int(self.rng.integers(2))))
        n_cross = fresh // 8 if len(parents) > 1 else 0
        for _ in range(n_cross):
            i, j = self.rng.choice(len(parents), size=2, replace=False)
            made.append(self.space.mutate(self.space.crossover(parents[int(i)].arch, parents[int(j)].arch,
                                                               self.rng), self.rng))
        made += [self.space.sample(self.rng) for _ in range(fresh - fresh // 4 - n_cross)]
        for item in map(new, made):
            if item is not None:
                pool[item[0]] = item[1]
        for aid in [aid for aid in pool if aid in self.seen]:
            del pool[aid]
        for aid in list(pool)[: max(len(pool) - self.candidates // 2, 0)]:
            del pool[aid]
        if len(self.objectives) > 1:  # Pareto local search: the least explored front member's neighbours
            open_ = [(sum(arch_id(a) in self.seen for a in self.hoods[p.arch_id]), k, p)
                     for k, p in enumerate(parents)
                     if any(new(a) is not None for a in self.hoods[p.arch_id])]
            if open_:
                p = min(open_, key=lambda x: (x[0], x[1]))[2]
                return [item for item in map(new, self.hoods[p.arch_id]) if item is not None]
        out = dict(pool)
        for hood in self.hoods.values():
            for item in map(new, hood):
                if item is not None:
                    out.setdefault(*item)
        return list(out.items())

    def _space_filling(self) -> dict[str, Any]:
        """The farthest (in decisions changed) of a few random samples from everything asked."""
        asked = [t.arch for t in self.observed] + [e["arch"] for e in self.pending.values()]
        best, best_d = None, -1
        for _ in range(8):
            arch = self.space.sample(self.rng)
            if arch_id(arch) in self.seen:
                continue
            d = min((_hamming(arch, a) for a in asked), default=0)
            if d > best_d:
                best, best_d = arch, d
        return best if best is not None else self.fresh(lambda: self.space.sample(self.rng))

    # ---- acquisition --------------------------------------------------------------------------
    def _ei(self, M: np.ndarray, S: np.ndarray, best: float) -> np.ndarray:
        u = (best - M[:, 0]) / S[:, 0]
        return (best - M[:, 0]) * _cdf(u) + S[:, 0] * np.exp(-0.5 * u**2) / np.sqrt(2 * np.pi)

    def _ehvi(self, M: np.ndarray, S: np.ndarray, front: np.ndarray) -> np.ndarray:
        """EHVI of candidates (means ``M``, stds ``S``, minimisation) over ``front``.

        Objectives are scaled by the front's ideal and nadir; the reference point is the
        nadir + 10% of the range (the convention of ``cellblock bench``).
        """
        lo, hi = front.min(axis=0), front.max(axis=0)
        span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1e-12))
        P, Mn, Sn = (front - lo) / span, (M - lo) / span, S / span
        ref = np.full(front.shape[1], 1.0 + REF_OFFSET)
        base = hypervolume(P, ref)
        opt = Mn - 2.0 * Sn  # optimistic points
        eps = np.min(np.max(opt[:, None, :] - P[None, :, :], axis=2), axis=1)  # < 0: not dominated
        open_ = np.flatnonzero(eps < 0)
        if len(open_) == 0:  # nothing can improve the front: closest to doing so (additive epsilon)
            return -eps
        open_ = open_[np.argsort(eps[open_], kind="stable")[: 4 * SHORTLIST]]
        score = np.zeros(len(M))
        hvi = np.array([hypervolume(np.vstack([P, opt[i]]), ref) - base for i in open_])
        short = open_[np.argsort(-hvi, kind="stable")[:SHORTLIST]]
        from scipy.special import ndtri  # the standard normal quantile function

        z = ndtri((np.arange(QUANTILES) + 0.5) / QUANTILES)
        for i in short:
            Y = Mn[i] + np.outer(z, Sn[i])
            score[i] = np.mean([hypervolume(np.vstack([P, y]), ref) - base for y in Y]) + 1e-12
        return score

    def _scorer(self) -> Callable[[list[tuple[str, dict[str, Any]]]], np.ndarray] | None:
        """The acquisition of this ask (None before the models can score): higher is better."""
        F = self.fitness(self.observed)
        finite = self._fenced(F)
        if not finite.any() or any(o.name not in (self._models or {}) for o in self.objectives):
            return None
        best = float(F[finite, 0].min())
        front = F[finite][nondominated_mask(F[finite])]
        pending = [e["arch"] for e in self.pending.values()]
        if pending and len(self.objectives) > 1:  # kriging believer: pending trials at their predicted values
            front = np.vstack([front, self._objective_preds(self.encoder.encode(pending))[0]])
            front = front[nondominated_mask(front)]

        def score(items: list[tuple[str, dict[str, Any]]]) -> np.ndarray:
            X = self.encoder.encode([a for _, a in items], ids=[aid for aid, _ in items])
            M, S = self._objective_preds(X)
            if len(self.objectives) > 1:
                acq = self._ehvi(M, S, front)
            elif self.acquisition == "ts":  # independent Thompson sampling (BANANAS): a draw per candidate
                acq = np.maximum(best - (M[:, 0] + S[:, 0] * self.rng.standard_normal(len(M))), 0.0)
            else:
                acq = self._ei(M, S, best)
            factor = self._p_feasible(X)
            for arch in pending:  # local penalisation of candidates near pending ones
                d = np.array([_hamming(a, arch) for _, a in items])
                factor = factor * d / (d + 1.0)
            return np.where(acq >= 0, acq * factor, acq / np.maximum(factor, 1e-12))

        return score

    def _choose(self, items: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
        """The best candidate of the pool; with one objective, improved by hill climbing on the acquisition."""
        score = self._scorer()
        if score is None:
            return None
        acq = score(items)
        i = int(np.argmax(acq))
        best, best_acq = items[i], float(acq[i])
        for _ in range(CLIMB_STEPS if len(self.objectives) == 1 else 0):  # the front's neighbourhoods are in the pool
            moves = self.space.moves(best[1])
            hood = []
            for k in self.rng.permutation(len(moves))[:CLIMB_MOVES]:
                arch = self.space.neighbour(best[1], *moves[int(k)], self.rng)
                aid = arch_id(arch)
                if aid not in self.seen:
                    hood.append((aid, arch))
            if not hood:
                break
            acq = score(hood)
            i = int(np.argmax(acq))
            if acq[i] <= best_acq:
                break
            best, best_acq = hood[i], float(acq[i])
        return best[1]

    # ---- ask / tell ---------------------------------------------------------------------------
    def ask(self) -> dict[str, Any]:
        self.n_asked += 1
        arch = None
        if len(self.observed) >= self.n_init:
            self._maybe_refit()
            F = self.fitness(self.observed)
            parents = self._parents(F)
            if parents:
                pool = self._refresh_pool(parents)
                arch = self._choose(pool) if pool else None
        if arch is None:
            arch = self._space_filling() if self.n_asked <= self.n_init else None
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

    def replay(self, trials: Iterable[Trial]) -> None:
        super().replay(trials)
        self.pending = {}
        self.n_asked = max(self.n_asked, self.n_told)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(observed=[trial_to_state(t) for t in self.observed], pending=dict(self.pending),
                     pool=list(self.pool.values()), hoods={k: list(v) for k, v in self.hoods.items()},
                     n_asked=self.n_asked, n_fit=self.n_fit, width_fit=self.width_fit,
                     encoder=self.encoder.state_dict(), model_seed=self.seed)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.observed = [trial_from_state(d) for d in state["observed"]]
        self.observed_ids = {t.arch_id for t in self.observed}
        self.pending = {aid: {"arch": dict(e["arch"])} for aid, e in state["pending"].items()}
        self.pool = {arch_id(a): dict(a) for a in state["pool"]}
        self.hoods = {k: [dict(a) for a in v] for k, v in state["hoods"].items()}
        self.n_asked = int(state["n_asked"])
        self.n_fit, self.width_fit = int(state["n_fit"]), int(state["width_fit"])
        self.encoder.load_state_dict(state["encoder"])
        self.seed = int(state["model_seed"])  # the models' random features are drawn from it
        self._models = None
        if self.n_fit:
            self._fit()
