"""The ask loop shared by the run loop and the bench: dedupe, in-flight skips, exhaustion."""

from __future__ import annotations

import re
from pathlib import Path

from cellblock.core.objectives import parse_objectives
from cellblock.evaluators.pipeline import Outcome
from cellblock.records import COMPLETE, Trial
from cellblock.run.asking import EXHAUSTED_AFTER, AskLoop
from cellblock.run.bench import run_strategy
from cellblock.search_spaces.api import SearchSpace, arch_id

ROOT = Path(__file__).resolve().parents[2]
A, B, C = {"x": "a"}, {"x": "b"}, {"x": "c"}


class Scripted:
    """A strategy proposing a fixed list of architectures and recording its tells."""

    def __init__(self, *archs: dict[str, str]) -> None:
        self.archs = list(archs)
        self.told: list[str] = []

    def ask(self) -> dict[str, str]:
        return dict(self.archs.pop(0))

    def tell(self, trial: Trial) -> None:
        self.told.append(trial.arch_id)


def done(arch: dict[str, str]) -> Trial:
    return Trial(number=0, arch_id=arch_id(arch), arch=arch, status=COMPLETE,
                 metrics={"accuracy": 0.5})


def test_finished_repeat_is_told_again_and_skipped():
    s = Scripted(A, A, B)
    finished = {arch_id(A): done(A)}
    loop = AskLoop()
    assert loop.propose(s, finished) == (arch_id(B), B)
    assert s.told == [arch_id(A), arch_id(A)] and not s.archs
    assert loop.repeats == 0  # reset by the new proposal


def test_in_flight_repeat_is_skipped_without_a_tell():
    s = Scripted(B, A)
    loop = AskLoop()
    assert loop.propose(s, {}, in_flight={arch_id(B)}) == (arch_id(A), A)
    assert s.told == [] and not s.archs


def test_exhausted_after_consecutive_repeats_counted_across_calls():
    finished = {arch_id(A): done(A)}
    s = Scripted(A, A, C, A, C, A)
    loop = AskLoop(exhausted_after=3)
    # Two repeats, then a new proposal: the count starts again.
    assert loop.propose(s, finished) == (arch_id(C), C) and loop.repeats == 0
    # Three consecutive repeats (finished or in flight) exhaust the space...
    assert loop.propose(s, finished, in_flight={arch_id(C)}) is None
    assert loop.repeats == 3 and s.told == [arch_id(A)] * 4 and not s.archs
    # ...and the count is kept: the next call gives up after one more repeat, or resets.
    more = Scripted(A, B)
    assert loop.propose(more, finished) is None and loop.repeats == 4 and more.archs == [B]
    assert loop.propose(more, finished) == (arch_id(B), B) and loop.repeats == 0


def test_default_limit_and_ask_seconds():
    s = Scripted(*[A] * EXHAUSTED_AFTER)
    seconds: list[float] = []
    loop = AskLoop(ask_seconds=seconds)
    assert loop.exhausted_after == EXHAUSTED_AFTER == 200
    assert loop.propose(s, {arch_id(A): done(A)}) is None
    assert not s.archs and len(s.told) == EXHAUSTED_AFTER
    assert len(seconds) == EXHAUSTED_AFTER and all(t >= 0 for t in seconds)


def test_exhausted_after_is_defined_once():
    pattern = re.compile(r"^\s*EXHAUSTED_AFTER\s*[:=]", re.M)
    where = [p.relative_to(ROOT).as_posix()
             for folder in ("cellblock", "strategies", "evaluators", "supernet")
             for p in sorted(
                 (ROOT / folder).rglob("*.py")) if pattern.search(p.read_text(encoding="utf-8"))]
    assert where == ["cellblock/run/asking.py"]


TINY_SPACE = '''
def space(s, input_shape=(1, 4, 4), num_classes=2):
    s.choice("a", [1, 2, 3])
    s.choice("b", ["x", "y"])
    return None
'''


def test_bench_run_stops_when_the_space_is_exhausted(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY_SPACE, encoding="utf-8")
    space = SearchSpace(f"{path}:space")
    evaluated: list[str] = []

    def evaluate(arch, seed):
        evaluated.append(arch_id(arch))
        return Outcome(COMPLETE, {"accuracy": 0.1 * arch["a"]})

    trials = run_strategy("random", space, parse_objectives("accuracy"), 0, 50, evaluate)
    # 3 x 2 architectures, each once
    assert len(trials) == len(set(evaluated)) == len(evaluated) == 6
    assert [t.number for t in trials] == list(range(6))
    assert all(t.status == COMPLETE for t in trials)
