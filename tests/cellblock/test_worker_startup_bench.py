"""The worker start-up benchmark's measures, from a made-up log and trace."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).parents[2] / "results" / "benchmarks" / "worker_startup.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("worker_startup", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measures_of_a_made_up_run(bench):
    events = [{"event": "run_start", "t": 10.0, "pid": 1},
              {"event": "trial_end", "arch_id": "a", "t": 20.0},
              {"event": "trial_end", "arch_id": "b", "t": 22.0},
              {"event": "trial_end", "arch_id": "c", "t": 30.0},
              {"event": "run_end", "t": 30.0}]
    trace = [(1, 11.0, "a"),  # the search process: not a worker
             (7, 12.0, "a"), (8, 14.0, "b"),
             (7, 13.0, "c"),  # counted c's MACs before its trial
             (7, 25.0, "c")]
    m = bench.analyse(events, trace, t_cmd=5.0, t_exit=31.0)
    assert m["first_trial_s"] == 7.0 and m["all_busy_s"] == 9.0 and m["startup_s"] == 4.0
    assert m["idle_between_s"] == 5.0  # worker 7: a ends at 20, c starts at 25
    assert m["workers"] == 2 and m["trials"] == 3 and m["wall_s"] == 26.0
    busy = (20 - 12) + (30 - 25) + (22 - 14)
    assert m["idle_fraction"] == pytest.approx(1 - busy / (2 * 20))


def test_a_queued_trial_that_starts_before_the_last_end_is_recorded_is_not_busy_twice(bench):
    events = [{"event": "run_start", "t": 0.0, "pid": 1},
              {"event": "trial_end", "arch_id": "a", "t": 10.5},
              {"event": "trial_end", "arch_id": "b", "t": 20.0}]
    m = bench.analyse(events, [(7, 0.0, "a"), (7, 10.0, "b")], t_cmd=0.0, t_exit=20.0)
    assert m["idle_between_s"] == 0.0 and m["idle_fraction"] == 0.0
