"""The ask loop shared by the run loop and ``cellblock bench``: ask, dedupe, detect exhaustion.

A strategy may propose an architecture that was already evaluated (or is being
evaluated). Such a proposal is never evaluated twice: a finished one is told its earlier
trial again, an in-flight one is skipped, and the strategy is asked again. After
:data:`EXHAUSTED_AFTER` consecutive repeated proposals the space counts as exhausted.
"""

from __future__ import annotations

import time
from collections.abc import Container, Mapping
from typing import Any

from cellblock.records import Trial
from cellblock.search_spaces.api import arch_id

#: Consecutive already-evaluated proposals after which a (small) space counts as exhausted.
EXHAUSTED_AFTER = 200


class AskLoop:
    """Asks a strategy until it proposes an architecture that is neither finished nor in flight.

    The count of consecutive repeated proposals is kept across calls of :meth:`propose`
    and reset only by a new proposal, so a run that is resumed (and replays its asks, see
    :func:`cellblock.strategies.resume.fast_forward`) counts exactly as an uninterrupted one.

    Args:
        exhausted_after: Consecutive repeated proposals after which :meth:`propose` gives up.
        ask_seconds: When a list, the wall time of every ``strategy.ask()`` is appended to it.
    """

    def __init__(self, exhausted_after: int = EXHAUSTED_AFTER,
                 ask_seconds: list[float] | None = None) -> None:
        self.exhausted_after = exhausted_after
        self.ask_seconds = ask_seconds
        #: Consecutive repeated proposals so far (reset by a new one).
        self.repeats = 0

    def _ask(self, strategy: Any) -> dict[str, Any]:
        if self.ask_seconds is None:
            return strategy.ask()
        t0 = time.perf_counter()
        arch = strategy.ask()
        self.ask_seconds.append(time.perf_counter() - t0)
        return arch

    def propose(self, strategy: Any, finished: Mapping[str, Trial],
                in_flight: Container[str] = ()) -> tuple[str, dict[str, Any]] | None:
        """The next new ``(arch_id, arch)`` of ``strategy``, or None when the space looks exhausted.

        Args:
            strategy: The strategy asked (and told the known result of a finished repeat).
            finished: Finished trials by ``arch_id``.
            in_flight: ``arch_id`` of the trials being evaluated now.

        Returns:
            None once :attr:`repeats` reaches ``exhausted_after``; the count is not reset
            then, so the next call gives up after one more repeated proposal.
        """
        while True:
            arch = self._ask(strategy)
            aid = arch_id(arch)
            if aid not in finished and aid not in in_flight:
                self.repeats = 0
                return aid, arch
            if aid in finished:  # never evaluate twice: tell the known result again
                strategy.tell(finished[aid])
            self.repeats += 1
            if self.repeats >= self.exhausted_after:
                return None


__all__ = ["EXHAUSTED_AFTER", "AskLoop"]
