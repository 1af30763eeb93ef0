"""What cellblock and Optuna say to each other: decisions as suggestions, trials as outcomes.

* :class:`OptunaTrialSampler` takes every decision of a space from an Optuna trial
  (``s.choice`` -> ``suggest_categorical``, ``s.integer`` -> ``suggest_int``).
* :func:`trial_outcome` turns a finished cellblock trial into what Optuna is told: its state,
  objective values, constraint values and the intermediate value of a pruned trial
  (the rules are in :mod:`cellblock.strategies.optuna.strategy`); :func:`tell_outcome`
  tells it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from cellblock.core.errors import SpaceError
from cellblock.core.objectives import Constraint, Objective
from cellblock.records import COMPLETE, FAILED, INFEASIBLE, PRUNED, Trial
from cellblock.search_spaces.domains import Categorical, Domain, IntRange, Value
from cellblock.search_spaces.samplers import Sampler
from cellblock.strategies.optuna.samplers import quiet

_SUGGEST: dict[type[Domain], Callable[[optuna.Trial, str, Any], Value]] = {
    Categorical: lambda t, name, d: t.suggest_categorical(name, list(d.choices)),
    IntRange: lambda t, name, d: t.suggest_int(name, d.low, d.high, step=d.step),
}


class OptunaTrialSampler(Sampler):
    """Takes every decision from an Optuna trial (``suggest_categorical`` / ``suggest_int``)."""

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial

    def _pick(self, name: str, domain: Domain) -> Value:
        suggest = _SUGGEST.get(type(domain))
        if suggest is None:
            raise SpaceError(f"decision {name!r}: Optuna strategies support choice and integer "
                             f"decisions, not {domain.kind!r}")
        try:
            return suggest(self.trial, name, domain)
        except ValueError as exc:
            raise SpaceError(
                f"decision {name!r} ({domain.describe()}) does not fit the Optuna study ({exc}); "
                "give decisions with different choice lists different names"
            ) from None


def trial_outcome(trial: Trial, objectives: Sequence[Objective], constraints: Sequence[Constraint],
            constraint_aware: bool) -> dict[str, Any]:
    """What Optuna is told of ``trial`` (JSON-able; kept in the strategy's state).

    Args:
        trial: A finished cellblock trial.
        objectives: The run's objectives (one value each, None when unknown).
        constraints: The run's constraints (one value each when any: ``metric - bound``,
            0 when the metric is unknown).
        constraint_aware: Whether the sampler reads constraints: if not, an INFEASIBLE
            trial is told as PRUNED even with every objective known.
    """
    values = [trial.value(o.name) for o in objectives]
    known = None not in values
    states = {COMPLETE: ("COMPLETE", "FAIL"), FAILED: ("FAIL", "FAIL"),
              INFEASIBLE: ("COMPLETE" if constraint_aware else "PRUNED", "PRUNED"),
              PRUNED: ("PRUNED", "PRUNED")}
    state = states.get(trial.status, ("FAIL", "FAIL"))[0 if known else 1]
    cons = None
    if constraints:
        cons = [float(v) if (v := c.violation(trial.metrics)) is not None else 0.0
                for c in constraints]
    report = None  # (step, value) of a pruned trial at its rung (single objective only)
    if trial.status == PRUNED and len(values) == 1 and values[0] is not None:
        report = [int(trial.metrics.get("epochs") or 0), float(values[0])]
    return {"arch": dict(trial.arch), "state": state, "trial": trial.number,
            "values": values if state == "COMPLETE" else None, "constraints": cons,
            "report": report}


def tell_outcome(study: optuna.Study, handle: optuna.Trial, outcome: Mapping[str, Any],
                 constraints: Sequence[Constraint], constraint_aware: bool) -> None:
    """Tell ``study`` the :func:`trial_outcome` of its trial ``handle``.

    Constraint values are set (``Trial.set_constraint``) when the sampler reads them and
    the trial did not fail; a pruned trial reports its value at its rung first.
    """
    if outcome["state"] != "FAIL" and constraint_aware:  # read from trial.constraints
        for c, value in zip(constraints, outcome["constraints"] or ()):
            handle.set_constraint(str(c), value)
    handle.set_user_attr("cellblock_trial", outcome["trial"])
    if outcome.get("report") and outcome["state"] == "PRUNED":
        step, value = outcome["report"]
        handle.report(value, step)  # Optuna's tell(PRUNED) keeps the last intermediate value
    with quiet():
        study.tell(handle, values=outcome["values"], state=TrialState[outcome["state"]])
