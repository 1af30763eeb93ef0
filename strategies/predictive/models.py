"""The surrogate models of the predictive strategy: one per modelled metric, refitted from the
trials.

Expensive objectives (accuracy) get a bootstrap ensemble with calibrated spread; cheap
ones (MACs, params, latency, proxies) and constrained metrics a deterministic ridge
model, on the log scale when that fits better (a multiplicative cost). Models are
``{metric: (RidgeEnsemble, log_scale)}`` dicts; the functions here fit and query them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellblock.core.objectives import Constraint, Objective, get_metric
from cellblock.records import COMPLETE, INFEASIBLE, PRUNED, Trial
from cellblock.strategies.predictive.surrogate import RidgeEnsemble

MODELLED = (COMPLETE, INFEASIBLE, PRUNED)  # statuses whose metrics are observations
Models = dict[str, tuple[RidgeEnsemble, bool]]


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (scipy imported on first use: too slow to import for every CLI call)."""
    from scipy.special import ndtr

    return ndtr(x)


def model_targets(objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> dict[str,
                                                                                              bool]:
    """Modelled metric -> whether it is cheap (objectives, then constrained metrics)."""
    names = {o.name: o.cheap for o in objectives}
    for c in constraints:
        names.setdefault(c.metric, get_metric(c.metric).cheap)
    return names


def fit_models(trials: Sequence[Trial], X: np.ndarray, targets: dict[str, bool], members: int,
               hidden: int,
               rng: np.random.Generator) -> Models:
    """One model per target metric with at least two finite observations (rows of ``X``:
    ``trials``).

    An expensive metric's worse tail (networks that failed to learn) is clipped at
    Tukey's fence first, so it does not swamp the fit.
    """
    models: Models = {}
    for name, cheap in targets.items():
        y = np.array([t.value(name) if t.value(name) is not None else np.nan for t in trials],
                     dtype=float)
        ok = np.isfinite(y)
        if ok.sum() < 2:
            continue
        # the worse tail (failed-to-learn networks) would swamp the fit: Tukey's fence
        if not cheap:
            q1, q3 = np.percentile(y[ok], [25, 75])
            if get_metric(name).direction == "maximize":
                y = np.maximum(y, q1 - 1.5 * (q3 - q1))
            else:
                y = np.minimum(y, q3 + 1.5 * (q3 - q1))
        model = RidgeEnsemble(1 if cheap else members, hidden).fit(X[ok], y[ok], rng)
        models[name] = (model, False)
        # a multiplicative cost: log scale?
        if cheap and model.loo_rmse > 1e-3 and bool((y[ok] > 0).all()):
            logm = RidgeEnsemble(1, hidden).fit(X[ok], np.log(y[ok]), rng)
            if logm.loo_rmse < model.loo_rmse:
                models[name] = (logm, True)
    return models


def predict(models: Models, name: str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) of metric ``name`` in its own units (log scale undone: std is relative)."""
    if name not in models:
        return None
    model, log = models[name]
    mu, sd = model.predict(X)
    return (np.exp(mu), np.exp(mu) * sd) if log else (mu, sd)


def objective_predictions(models: Models, objectives: Sequence[Objective],
                          X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) of the minimisation values of every objective, or None if one is unmodelled."""
    M, S = np.zeros((len(X), len(objectives))), np.zeros((len(X), len(objectives)))
    for j, o in enumerate(objectives):
        pred = predict(models, o.name, X)
        if pred is None:
            return None
        M[:, j] = -pred[0] if o.direction == "maximize" else pred[0]
        S[:, j] = pred[1]
    return M, S


def p_feasible(models: Models, constraints: Sequence[Constraint], X: np.ndarray) -> np.ndarray:
    """Predicted probability that each row of ``X`` meets every constraint (unmodelled: 1)."""
    p = np.ones(len(X))
    for c in constraints:
        pred = predict(models, c.metric, X)
        if pred is not None:
            gap = (c.bound - pred[0]) if c.op == "<=" else (pred[0] - c.bound)
            p *= normal_cdf(gap / pred[1])
    return p
