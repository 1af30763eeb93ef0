"""Optuna samplers as strategies: no duplicates, directions, constraints, state, storage, CLI."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from spaces import conv_space

import cellblock
from cellblock.cli import main
from cellblock.core.errors import ConfigError
from cellblock.core.objectives import parse_objectives
from cellblock.pareto import nondominated_mask
from cellblock.records import COMPLETE, FAILED, INFEASIBLE, PRUNED, Trial
from cellblock.search_spaces import SearchSpace, arch_id
from cellblock.strategies import STRATEGIES, make_strategy
from cellblock.strategies.optuna.strategy import SAMPLERS


def conditional(s):
    """Depth decides how many width decisions exist (90 architectures)."""
    depth = s.integer("depth", 1, 3)
    widths = [s.choice(f"layer{i}.width", [4, 8, 16]) for i in range(depth)]
    s.choice("act", ["relu", "gelu"])
    return widths


def bits(s, n=12):
    return [s.choice(f"b{i}", [0, 1]) for i in range(n)]


def _toy(arch, n, constraint_bound=None, reject=False):
    """accuracy = fraction of ones (max), macs = ones (min); INFEASIBLE above the bound."""
    ones = sum(v for k, v in arch.items() if k.startswith("b"))
    metrics = {"accuracy": ones / 12, "macs": float(ones)}
    status = COMPLETE
    if constraint_bound is not None and ones > constraint_bound:
        status = INFEASIBLE
        if reject:  # rejected before training: no accuracy
            metrics = {"macs": float(ones)}
    return Trial(n, arch_id(arch), arch, status, metrics,
                 violation=max(0.0, ones - (constraint_bound or 99)))


def _cond_trial(arch, n):
    total = sum(v for k, v in arch.items() if k.startswith("layer"))
    return Trial(n, arch_id(arch), arch, COMPLETE, {"accuracy": total / 48, "macs": float(total)})


def _loop(strategy, budget, make=_cond_trial, start=0):
    trials = []
    for n in range(start, start + budget):
        t = make(strategy.ask(), n)
        strategy.tell(t)
        trials.append(t)
    return trials


NAMES = [f"optuna:{n}" for n in SAMPLERS]


def test_every_sampler_is_registered():
    assert set(NAMES) <= set(STRATEGIES.names())


@pytest.mark.parametrize("name", NAMES)
def test_fifteen_asks_without_duplicates(name):
    if SAMPLERS[name.split(":")[1]].needs:
        pytest.importorskip(SAMPLERS[name.split(":")[1]].needs)
    space = SearchSpace(conditional)
    warns = pytest.warns(UserWarning,
                         match="sampled independently") if "cmaes" in name else nullcontext()
    with warns:  # CMA-ES: the choice decisions fall back to independent random sampling
        options = {"n_startup_trials": 12} if name == "optuna:gp" else {}  # fewer GP fits: fast
        s = make_strategy(name, space, parse_objectives("accuracy"), seed=3, options=options)
    trials = _loop(s, 15)
    assert len({t.arch_id for t in trials}) == 15
    told = [t for t in s.study.trials if t.state == TrialState.COMPLETE]
    # every evaluated architecture is told once; duplicates Optuna proposed are told too
    assert Counter(t.user_attrs["arch_id"] for t in told).keys() >= {t.arch_id for t in trials}
    assert all(t.state.is_finished() for t in s.study.trials)


def test_small_space_exhaustion_returns_known_architecture():
    space = SearchSpace(bits, n=3)  # 8 architectures
    s = make_strategy("optuna:tpe", space, parse_objectives("accuracy"), seed=0)
    trials = _loop(s, 8, make=_toy)
    assert len({t.arch_id for t in trials}) == 8
    again = s.ask()  # nothing new is left
    assert arch_id(again) in {t.arch_id for t in trials} and s.exhausted


@pytest.mark.parametrize("name", ["optuna:tpe", "optuna:nsga2"])
def test_directions_come_from_objectives(name):
    space = SearchSpace(bits)
    objectives = parse_objectives("accuracy,macs")
    s = make_strategy(name, space, objectives, seed=0)
    trials = _loop(s, 30, make=_toy)
    assert s.study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                  optuna.study.StudyDirection.MINIMIZE]
    front = {t.user_attrs["arch_id"] for t in s.study.best_trials}
    mask = nondominated_mask(s.fitness(trials))
    assert front == {t.arch_id for t, m in zip(trials, mask) if m}


def test_outcomes_map_to_optuna_states():
    space = SearchSpace(bits)
    s = make_strategy("optuna:tpe", space, parse_objectives("accuracy"), seed=0,
                      options={"constraints": ["macs<=4"]})
    told = {}
    for n, (status,
            reject) in enumerate([(COMPLETE, False), (INFEASIBLE, False), (INFEASIBLE, True),
                                  (FAILED, False)]):
        arch = s.ask()
        ones = 2 if status == COMPLETE else 9
        arch = dict(arch)
        t = _toy({f"b{i}": int(i < ones) for i in range(12)}, n, 4, reject)
        t = Trial(n, arch_id(arch), arch, status, t.metrics if status != FAILED else {},
                  "boom" if status == FAILED else None)
        s.tell(t)
        told[t.arch_id] = status, reject
    states = {o.user_attrs["arch_id"]: o for o in s.study.trials}
    expect = {(COMPLETE, False): TrialState.COMPLETE, (INFEASIBLE, False): TrialState.COMPLETE,
              (INFEASIBLE, True): TrialState.PRUNED, (FAILED, False): TrialState.FAIL}
    for aid, key in told.items():
        assert states[aid].state == expect[key]
        if key[0] == INFEASIBLE:
            assert states[aid].constraints == {"macs<=4": 5.0}
    assert states[
        next(a for a, k in told.items() if k[0] == COMPLETE)].constraints == {"macs<=4": -2.0}


@pytest.mark.parametrize("reject", [False, True])
def test_constraints_steer_away_from_infeasible_region(reject):
    """Maximising ones pushes into macs > 4; with the constraint TPE stays mostly feasible."""
    space = SearchSpace(bits)
    objectives = parse_objectives("accuracy")
    infeasible = {}
    for name in ("optuna:tpe", "optuna:random"):
        counts = []
        for seed in range(2):
            s = make_strategy(name, space, objectives, seed=seed,
                              options={"constraints": ["macs<=4"]})
            trials = _loop(s, 60, make=lambda a, n: _toy(a, n, 4, reject))
            counts.append(sum(t.status == INFEASIBLE for t in trials[20:]))
        infeasible[name] = np.mean(counts)
    # random: ~81% of the 40 late trials are infeasible (P(ones > 4) = 0.81)
    assert infeasible["optuna:random"] > 25
    assert infeasible["optuna:tpe"] < infeasible["optuna:random"] - 8


def test_state_dict_round_trip_keeps_pending_and_history():
    space = SearchSpace(conditional)
    objectives = parse_objectives("accuracy,macs")
    s = make_strategy("optuna:tpe", space, objectives, seed=1)
    trials = _loop(s, 10)
    pending = s.ask()
    state = json.loads(json.dumps(s.state_dict()))
    assert arch_id(pending) in state["pending"]
    clone = make_strategy("optuna:tpe", space, objectives, seed=5)
    clone.load_state_dict(state)
    complete = [
        t.user_attrs["arch_id"] for t in clone.study.trials if t.state == TrialState.COMPLETE]
    assert sorted(complete) == sorted(t.arch_id for t in trials)
    number = clone.pending[arch_id(pending)]["numbers"][0]
    assert clone.study.trials[number].state == TrialState.RUNNING
    clone.tell(_cond_trial(pending, 10))
    assert clone.study.trials[number].state == TrialState.COMPLETE
    more = _loop(clone, 5, start=11)
    ids = [t.arch_id for t in trials] + [arch_id(pending)] + [t.arch_id for t in more]
    assert len(set(ids)) == 16


def _complete(study):
    return Counter(
        t.user_attrs.get("arch_id") for t in study.trials if t.state == TrialState.COMPLETE)


def test_journal_resume_does_not_double_tell(tmp_path):
    journal = str(tmp_path / "optuna.journal")
    space = SearchSpace(conditional)
    objectives = parse_objectives("accuracy,macs")
    opts = {"storage": journal, "study_name": "run"}
    s = make_strategy("optuna:tpe", space, objectives, seed=0, options=opts)
    first = _loop(s, 10)
    s.ask()  # in flight when the process "crashes"
    before = _complete(s.study)  # duplicates Optuna proposed were told too
    del s
    resumed = make_strategy("optuna:tpe", space, objectives, seed=0, options=opts)
    resumed.replay(first)
    assert _complete(resumed.study) == before  # nothing told twice
    assert not [t for t in resumed.study.trials if t.state == TrialState.RUNNING]  # leftovers: FAIL
    more = _loop(resumed, 5, start=10)
    ids = [t.arch_id for t in first + more]
    assert len(set(ids)) == 15
    reread = optuna.load_study(study_name="run", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal)))
    complete = _complete(reread)
    assert set(complete) == set(ids)
    # a restart after the last tell adds nothing
    again = make_strategy("optuna:tpe", space, objectives, seed=0, options=opts)
    again.replay(first + more)
    assert _complete(again.study) == complete


def test_replay_adds_records_the_journal_lacks(tmp_path):
    space = SearchSpace(conditional)
    objectives = parse_objectives("accuracy")
    trials = _loop(make_strategy("optuna:random", space, objectives, seed=0), 6)
    opts = {"storage": str(tmp_path / "j.journal"), "study_name": "run"}
    s = make_strategy("optuna:tpe", space, objectives, seed=0, options=opts)
    s.replay(trials)
    assert _complete(s.study) == Counter(t.arch_id for t in trials)


@pytest.mark.parametrize("storage", ["nosuchdb://x/y", "sqlite:////no/such/dir/x.db", "://", 5])
def test_bad_storage_is_a_config_error(storage):
    with pytest.raises(ConfigError, match="storage"):
        make_strategy("optuna:tpe", SearchSpace(bits), parse_objectives("accuracy"),
                      options={"storage": storage})


def test_unknown_sampler_option_lists_accepted_ones():
    with pytest.raises(ConfigError, match="n_startup_trials") as err:
        make_strategy("optuna:tpe", SearchSpace(bits), parse_objectives("accuracy"),
                      options={"population_size": 4})
    assert "population_size" in str(err.value)
    s = make_strategy("optuna:nsga2", SearchSpace(bits), parse_objectives("accuracy"),
                      options={"population_size": 4})
    assert s.study.sampler._population_size == 4
    with pytest.raises(ConfigError, match="single objective"):
        make_strategy("optuna:cmaes", SearchSpace(bits), parse_objectives("accuracy,macs"))


SPACE_FILE = conv_space([4, 8], depth=(1, 2), width_name="layer{i}.width")


def test_search_end_to_end_with_journal(tmp_path):
    f = tmp_path / "tiny.py"
    f.write_text(SPACE_FILE)
    out = tmp_path / "run"
    opts = dict(space=f"{f}:space", strategy="optuna:tpe", trials=4, epochs=1, out=str(out),
                device="cpu", objectives=["accuracy", "macs"], batch_size=256)
    run = cellblock.search(**opts)
    assert len(run.trials) == 4 and all(t.status == COMPLETE for t in run.trials)
    assert run.pareto and (out / "optuna.journal").is_file() and (out / "pareto.csv").is_file()
    run = cellblock.search(**{**opts, "trials": 5})  # resume: the journal is reused
    assert len({t.arch_id for t in run.trials}) == 5
    study = optuna.load_study(study_name="run", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal"))))
    complete = Counter(
        t.user_attrs["arch_id"] for t in study.trials if t.state == TrialState.COMPLETE)
    assert set(complete) == {t.arch_id for t in run.trials}


def test_cli_bad_storage_exits_2_without_writing(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["search", "--strategy", "optuna:tpe", "--storage", "nosuchdb://x", "--out", str(out),
               "--trials", "1", "--epochs", "1", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("cellblock: error:") and "\n" not in err and "storage" in err
    assert not out.exists()
    rc = main(["search", "--strategy", "random", "--storage", str(tmp_path / "j.journal"),
               "--out", str(out), "--trials", "1", "--device", "cpu", "--no-progress"])
    assert rc == 2 and "optuna" in capsys.readouterr().err and not out.exists()


def test_storage_defaults_to_journal_in_run_dir(tmp_path):
    from cellblock.core.config import RunConfig
    from cellblock.strategies.optuna.strategy import OptunaStrategy

    run_dir = Path(tmp_path / "r")
    opts = OptunaStrategy.run_options(RunConfig(storage=None, constraints=("macs<=5M",)), run_dir)
    assert opts == {"storage": str(run_dir / "optuna.journal"), "study_name": "r",
                    "constraints": ["macs<=5M"]}


@pytest.mark.parametrize("objectives", ["accuracy", "accuracy,macs"])
def test_pruned_trials_are_told_as_pruned_with_their_rung_value(objectives):
    space = SearchSpace(bits)
    s = make_strategy("optuna:tpe", space, parse_objectives(objectives), seed=0, options={})
    arch = s.ask()
    s.tell(Trial(0, arch_id(arch), arch, PRUNED, {"accuracy": 0.375, "macs": 3.0, "epochs": 2}))
    frozen = next(t for t in s.study.trials if t.user_attrs["arch_id"] == arch_id(arch))
    assert frozen.state == TrialState.PRUNED
    if objectives == "accuracy":  # single objective: the rung value is kept as the trial's value
        assert frozen.intermediate_values == {2: 0.375}
        assert frozen.value == 0.375
    else:  # Optuna takes no intermediate values in multi-objective studies
        assert frozen.values is None
    arch2 = s.ask()  # the study goes on after a pruned trial
    assert arch_id(arch2) != arch_id(arch)
