"""Reproducible resume: rebuild a strategy by replaying its asks and tells from the log.

A strategy is deterministic given its seed and the sequence of asks and tells it sees.
The log records that sequence: a new ``trial_start`` follows the ask that proposed it
(asks of already evaluated architectures in between are re-told, as the run loop does),
and a ``trial_end`` is followed by its tell. Asking and telling again in log order
therefore brings the strategy (random generator included) to exactly the state of the
interrupted run, so the resumed run proposes what the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cellblock.records import Trial
from cellblock.search_spaces.api import arch_id


def fast_forward(strategy: Any, events: Sequence[Mapping[str, Any]], trials: Sequence[Trial],
                 exhausted_after: int) -> bool:
    """Ask and tell ``strategy`` as recorded in ``events``; False if it cannot or diverges.

    Args:
        strategy: A fresh strategy (as built for the run).
        events: The run's log events.
        trials: The trials replayed from those events (the objects told).
        exhausted_after: The run loop's repeat limit; asks beyond 10x it count as divergence.

    Returns:
        True when every recorded proposal was reproduced (the strategy is then in the
        state the run left it in); False when the strategy does not replay by asking
        (``replays_by_asking = False``) or proposed something the log does not record (an
        older log, or a changed strategy); the strategy must then be rebuilt.
    """
    if not getattr(strategy, "replays_by_asking", True):
        return False
    by_number = {t.number: t for t in trials}
    finished: dict[str, Trial] = {}
    in_flight: set[str] = set()
    started: set[int] = set()
    for ev in events:
        kind = ev.get("event")
        if kind == "trial_start":
            number = ev.get("trial")
            if number in started:  # re-run of an interrupted trial: no ask
                continue
            started.add(number)
            want = ev.get("arch_id")
            for _ in range(10 * exhausted_after):
                aid = arch_id(strategy.ask())
                if aid == want:
                    break
                if aid in finished:  # the loop tells a known result again
                    strategy.tell(finished[aid])
                elif aid not in in_flight:
                    return False
            else:
                return False
            in_flight.add(want)
        elif kind == "trial_end":
            trial = by_number.get(ev.get("trial"))
            if trial is None or not trial.done:
                return False
            in_flight.discard(trial.arch_id)
            finished[trial.arch_id] = trial
            strategy.tell(trial)
    return True
