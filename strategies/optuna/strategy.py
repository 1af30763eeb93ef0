"""Optuna samplers as cellblock strategies: ``optuna:tpe``, ``optuna:nsga2``, ``optuna:gp``...

Every Optuna sampler drives the same define-by-run space through Optuna's ask/tell:
``ask()`` creates an Optuna trial and runs the space function with an
:class:`OptunaTrialSampler` (``s.choice`` -> ``suggest_categorical``, ``s.integer`` ->
``suggest_int``); ``tell()`` finishes the Optuna trial. How cellblock outcomes are told:

* COMPLETE -> COMPLETE with the objective values (directions from the run's objectives).
* INFEASIBLE with every objective known (constraint broken after training) -> COMPLETE
  with its values. Every told COMPLETE or PRUNED trial carries one value per constraint
  (``metric - bound`` for ``<=``, feasible when <= 0), set with Optuna 5's
  ``Trial.set_constraint(name, value)``, which replaces the deprecated ``constraints_func``:
  TPE, NSGA-II/III and GP read them, so infeasible trials do not steer the search.
* INFEASIBLE rejected before training (objectives missing) -> PRUNED with its constraint
  values. Optuna's constraint-aware samplers (TPE) then rank it with the infeasible trials
  (the "bad" group), so the search learns to avoid that region; FAIL would hide it from
  every sampler, and inventing objective values would be dishonest. Samplers without
  constraint support (random, CMA-ES) get every INFEASIBLE trial as PRUNED, which they
  ignore. An unknown constraint value (its metric was never measured) is told as 0.
* PRUNED (stopped early by a scheduler) -> PRUNED. In a single-objective study its value at
  the rung is first reported as an intermediate value (step = ``epochs`` trained), so
  Optuna records it as the trial's value and TPE ranks it among the pruned trials;
  multi-objective studies take no intermediate values, so it is told without one.
* FAILED (or a non-finite objective) -> FAIL.

Duplicates: when Optuna proposes an architecture already evaluated, that Optuna trial is
told at once with the cached result (so Optuna learns it is known) and Optuna is asked
again, :data:`OPTUNA_TRIES` times, then :data:`RANDOM_TRIES` random samples are tried
(enqueued as fixed Optuna trials); a proposal equal to an architecture still in flight
waits on it and is told with its result. Only an exhausted space yields a known one.

Storage: ``storage=None`` keeps the study in memory; a path is an Optuna journal file;
an SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://...``) an RDB storage. The run
loop fills ``storage`` (default ``RUN/optuna.journal``), ``study_name`` (the run
directory's name) and ``constraints`` through :meth:`OptunaStrategy.run_options`. The
strategy itself writes no file: the storage backend writes its journal, opened lazily
on first use so that ``prepare`` writes nothing. One run (one process) per study.

Resume: :meth:`replay` (from the records) and :meth:`load_state_dict` both reconcile the
study with the strategy's state: trials already told in the storage are not told again,
running trials the state does not know (left by a crash; cellblock re-runs in-flight
trials itself) are marked FAIL, and results the study lacks are added as fixed trials.
The sampler's random state is not part of the state: it is reseeded from
``(seed, trials told)``.

CMA-ES handles only numeric parameters: ``optuna:cmaes`` raises ConfigError for a space
without integer decisions, and warns once that choice decisions (and conditional ones)
are sampled independently at random. It needs the ``cmaes`` package and optimises a
single objective.

The parts live in their own modules: :mod:`.samplers` (the samplers and the
checks of their options), :mod:`.study` (storage and study) and
:mod:`.mapping` (decisions as suggestions, trials as outcomes).
"""


from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import optuna

from cellblock.core.config import RunConfig
from cellblock.core.errors import ConfigError, RunError
from cellblock.core.objectives import Constraint, Objective
from cellblock.records import Trial
from cellblock.search_spaces.api import SearchSpace, arch_id
from cellblock.search_spaces.domains import Value
from cellblock.strategies.base import STRATEGIES, Strategy
from cellblock.strategies.optuna.mapping import OptunaTrialSampler, tell_outcome, trial_outcome
from cellblock.strategies.optuna.samplers import (
    OWN_OPTIONS,
    SAMPLERS,
    SamplerSpec,
    check_numeric,
    check_sampler_options,
    make_sampler,
    quiet,
)
from cellblock.strategies.optuna.study import (
    ARCH_ATTR,
    JOURNAL_NAME,
    check_storage,
    open_study,
    settle_study,
)

__all__ = ["JOURNAL_NAME", "SAMPLERS", "OptunaStrategy", "OptunaTrialSampler", "SamplerSpec",
           "check_storage"]

OPTUNA_TRIES = 10
RANDOM_TRIES = 50


class OptunaStrategy(Strategy):
    """An Optuna sampler behind cellblock's ask/tell (see the module docs).

    Registered once per entry of :data:`SAMPLERS` as ``optuna:<name>``; each registered
    subclass lists its sampler's options in :meth:`options`.

    Args:
        storage: Journal file path, SQLAlchemy URL, or None (in memory).
        study_name: Name of the Optuna study (loaded if it exists).
        constraints: The run's constraints (``"macs<=5M"`` strings or Constraint objects).
        **sampler_options: Options of the Optuna sampler (e.g. ``n_startup_trials``).
    """

    replays_by_asking = False  # the study (trials, sampler state) lives in its storage

    sampler_name: ClassVar[str] = "tpe"

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        seed: int = 0,
        storage: str | None = None,
        study_name: str = "cellblock",
        constraints: Iterable[str | Constraint] = (),
        **sampler_options: Any,
    ) -> None:
        super().__init__(space, objectives, seed)
        self.spec = SAMPLERS[self.sampler_name]
        self.label = f"optuna:{self.sampler_name}"
        self.sampler_options = check_sampler_options(self.label, self.spec, sampler_options,
                                                     len(self.objectives))
        self.constraints = [
            c if isinstance(c, Constraint) else Constraint.parse(c) for c in constraints]
        if self.constraints and not hasattr(optuna.trial.Trial, "set_constraint"):
            raise ConfigError(f"constraints with {self.label!r} need optuna >= 5.0 "
                              f"(installed {optuna.__version__}); pip install -U optuna")
        self.storage_kind, self.storage_location = check_storage(storage)
        self.study_name = str(study_name)
        self.sampler_seed = seed
        self._make_sampler(seed)  # bad option values fail now
        if self.spec.numeric_only:
            check_numeric(self.label, self.space, self.seed)
        self.results: dict[str, dict[str, Any]] = {}  # arch_id -> outcome told (in order)
        self.pending: dict[str, dict[str, Any]] = {}  # arch_id -> {"arch", "numbers"}
        self.n_asked = 0
        self.exhausted = False
        self._study: optuna.Study | None = None
        self._handles: dict[int, optuna.Trial] = {}

    @classmethod
    def options(cls) -> list[str]:
        """The strategy's own options, then the sampler's."""
        return [*OWN_OPTIONS, *SAMPLERS[cls.sampler_name].params()]

    @classmethod
    def run_options(cls, config: RunConfig, run_dir: Path) -> dict[str, Any]:
        """Options the run loop fills: storage (``RUN/optuna.journal``), study, constraints."""
        storage = config.storage or str(Path(run_dir) / JOURNAL_NAME)
        return {"storage": storage, "study_name": Path(run_dir).name or "cellblock",
                "constraints": list(config.constraints or [])}

    # ---- sampler and study ------------------------------------------------------------------
    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return make_sampler(self.label, self.spec, self.sampler_options, seed)

    @property
    def study(self) -> optuna.Study:
        """The Optuna study, created or loaded on first use."""
        if self._study is None:
            self._study = open_study(self.storage_kind, self.storage_location, self.study_name,
                                     [o.direction for o in self.objectives],
                                     self._make_sampler(self.sampler_seed))
        return self._study

    def _reseed(self) -> None:
        """Reseed the sampler from ``(seed, trials told)``: its random state is not saved."""
        self.sampler_seed = int(
            np.random.SeedSequence([self.seed, self.n_told]).generate_state(1)[0])
        if self._study is not None:
            self._study.sampler = self._make_sampler(self.sampler_seed)

    def _handle(self, number: int) -> optuna.Trial:
        """The live Optuna trial ``number`` (rebuilt for trials asked before a restart)."""
        if number not in self._handles:
            frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)
            self._handles[number] = optuna.Trial(self.study, frozen._trial_id)
        return self._handles[number]

    def _suggest(self, trial: optuna.Trial) -> dict[str, Value]:
        sampler = OptunaTrialSampler(trial)
        self.space.run(sampler)  # build is False: decisions only, on the meta device
        return dict(sampler.decisions)

    def _ask_fixed(self, arch: Mapping[str, Any]) -> optuna.Trial:
        """An Optuna trial whose parameters are exactly ``arch`` (enqueued, then asked)."""
        with quiet():
            self.study.enqueue_trial(dict(arch))
            trial = self.study.ask()
        aid = arch_id(arch)
        if arch_id(self._suggest(trial)) != aid:
            raise RunError(f"Optuna did not replay architecture {aid}; another process may be "
                           f"using study {self.study_name!r}")
        trial.set_user_attr(ARCH_ATTR, aid)
        self._handles[trial.number] = trial
        return trial

    # ---- ask / tell -------------------------------------------------------------------------
    def _is_new(self, aid: str) -> bool:
        return aid not in self.results and aid not in self.pending

    def _register(self, trial: optuna.Trial, arch: dict[str, Value]) -> dict[str, Value]:
        aid = arch_id(arch)
        self.pending[aid] = {"arch": arch, "numbers": [trial.number]}
        self.seen.add(aid)
        self.n_asked += 1
        self.exhausted = False
        return arch

    def ask(self) -> dict[str, Any]:
        arch: dict[str, Value] = {}
        for _ in range(0 if self.exhausted else OPTUNA_TRIES):
            trial = self.study.ask()
            self._handles[trial.number] = trial
            arch = self._suggest(trial)
            aid = arch_id(arch)
            trial.set_user_attr(ARCH_ATTR, aid)
            if self._is_new(aid):
                return self._register(trial, arch)
            if aid in self.results:  # known: Optuna learns its result now
                self._finish(trial.number, self.results[aid])
            else:  # in flight: told with its result when it ends
                self.pending[aid]["numbers"].append(trial.number)
        for _ in range(RANDOM_TRIES):
            arch = self.space.sample(self.rng)
            if self._is_new(arch_id(arch)):
                return self._register(self._ask_fixed(arch), arch)
        self.exhausted = True
        return arch  # every try was known: the space looks exhausted

    def _outcome(self, trial: Trial) -> dict[str, Any]:
        return trial_outcome(trial, self.objectives, self.constraints, self.spec.constraints)

    def _finish(self, number: int, outcome: Mapping[str, Any]) -> None:
        tell_outcome(self.study, self._handle(number), outcome, self.constraints,
                     self.spec.constraints)
        self._handles.pop(number, None)

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        aid = trial.arch_id
        first = aid not in self.results
        if first:
            self.results[aid] = self._outcome(trial)
        entry = self.pending.pop(aid, None)
        if entry is not None:
            for number in entry["numbers"]:
                self._finish(number, self.results[aid])
        elif first:  # not asked here (a trial re-run after a restart, or told by hand)
            self._finish(self._ask_fixed(trial.arch).number, self.results[aid])

    # ---- state ------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Reconcile the study with ``results`` and ``pending`` (see the module docs)."""
        keep = {n for e in self.pending.values() for n in e["numbers"]}
        told, running = settle_study(self.study, keep)
        for aid, outcome in self.results.items():
            if aid not in told:
                self._finish(self._ask_fixed(outcome["arch"]).number, outcome)
        for entry in self.pending.values():
            entry["numbers"] = [n for n in entry["numbers"] if n in running]
            if not entry["numbers"]:
                entry["numbers"] = [self._ask_fixed(entry["arch"]).number]

    def replay(self, trials: Iterable[Trial]) -> None:
        """Rebuild from recorded trials; those already told in the storage are not told again."""
        for trial in trials:
            Strategy.tell(self, trial)
            self.results.setdefault(trial.arch_id, self._outcome(trial))
        self.rng = np.random.default_rng([self.seed, self.n_told])
        self._reseed()
        self._sync()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(results=[[aid, dict(o)] for aid, o in self.results.items()],
                     pending={aid: {"arch": e["arch"], "numbers": list(e["numbers"])}
                              for aid, e in self.pending.items()},
                     n_asked=self.n_asked, exhausted=self.exhausted, study_name=self.study_name)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.results = {aid: dict(o) for aid, o in state["results"]}
        self.pending = {aid: {"arch": dict(e["arch"]), "numbers": list(e["numbers"])}
                        for aid, e in state["pending"].items()}
        self.n_asked = int(state["n_asked"])
        self.exhausted = bool(state["exhausted"])
        self._handles = {}
        self._reseed()
        self._sync()


def _register_sampler(name: str, spec: SamplerSpec) -> type[OptunaStrategy]:
    """Register ``optuna:<name>``: a subclass bound to the sampler (options: :meth:`options`)."""
    cls = type(f"Optuna_{name.replace('-', '_')}", (OptunaStrategy,),
               {"sampler_name": name, "__doc__": f"Optuna's {spec.cls.__name__} ({name})."})

    return STRATEGIES.register(f"optuna:{name}")(cls)  # type: ignore[return-value]


for _name, _spec in SAMPLERS.items():
    _register_sampler(_name, _spec)
