"""The schema of ``trials.jsonl`` events, checked on every read.

A line that is valid JSON but not a valid event (``{}``, a ``trial_end`` of a trial that
never started, ``"trial": "../x"``) is refused by :func:`check_events` in one error that
names its line number; nothing downstream sees it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

#: The event kinds a log holds (see :mod:`cellblock.records.log`).
EVENT_KINDS = ("run_start", "trial_start", "trial_end", "trial_lost", "node_lost", "node_joined",
               "run_end")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (
        isinstance(v, float) and math.isnan(v))


def _trial_number(v: Any) -> bool:
    return _is_int(v) and v >= 0


def _arch_id(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


#: Per kind: key -> (required, check, what it must be).
_FIELDS: dict[str, dict[str, tuple[bool, Callable[[Any], bool], str]]] = {
    "run_start": {
        "config": (True, lambda v: isinstance(v, dict), "an object"),
        "inputs": (False, _optional(lambda v: isinstance(v, dict)), "an object"),
        "cwd": (False, _optional(lambda v: isinstance(v, str)), "a string"),
    },
    "trial_start": {
        "trial": (True, _trial_number, "an integer >= 0"),
        "arch_id": (True, _arch_id, "a non-empty string"),
        "arch": (True, lambda v: isinstance(v, dict), "an object"),
    },
    "trial_end": {
        "trial": (True, _trial_number, "an integer >= 0"),
        "arch_id": (True, _arch_id, "a non-empty string"),
        "status": (True, lambda v: isinstance(v, str), "a status"),
        "metrics": (False, _optional(lambda v: isinstance(v, dict)), "an object"),
        "error": (False, _optional(lambda v: isinstance(v, str)), "a string or null"),
        "violation": (False, _optional(_is_number), "a number or null"),
    },
    # an attempt lost to the infrastructure (cellblock.records.log.trial_lost_event)
    "trial_lost": {
        "trial": (True, _trial_number, "an integer >= 0"),
        "arch_id": (True, _arch_id, "a non-empty string"),
        "attempt": (False, _optional(_is_int), "an integer"),
        "node": (False, _optional(lambda v: isinstance(v, str)), "a string or null"),
        "reason": (False, _optional(lambda v: isinstance(v, str)), "a string or null"),
        "retry": (False, _optional(lambda v: isinstance(v, bool)), "true or false"),
    },
    "node_lost": {"node": (False, _optional(lambda v: isinstance(v, str)), "a string or null")},
    "node_joined": {"node": (False, _optional(lambda v: isinstance(v, str)), "a string or null")},
    "run_end": {},
}


def event_problem(event: Any, started: Mapping[int, str],
                  statuses: Collection[str] = ()) -> str | None:
    """Why ``event`` is not a valid log event (None when it is).

    Args:
        event: One parsed line.
        started: ``arch_id`` of every trial number started on an earlier line.
        statuses: The trial statuses a ``trial_end`` may have (``cellblock.records.log.STATUSES``).
    """
    if not isinstance(event, dict):
        return f"is a JSON {type(event).__name__}, not an event object"
    kind = event.get("event")
    if kind not in EVENT_KINDS:
        return f"has no known 'event' (got {kind!r}; expected one of {', '.join(EVENT_KINDS)})"
    if "t" in event and not _optional(_is_number)(event["t"]):
        return f"is a {kind} whose 't' is not a number"
    for key, (required, check, what) in _FIELDS[kind].items():
        if key not in event:
            if required:
                return f"is a {kind} without {key!r}"
            continue
        if not check(event[key]):
            return f"is a {kind} whose {key!r} is not {what} (got {_short(event[key])})"
    if kind == "trial_lost" and started.get(event["trial"]) != event["arch_id"]:
        return f"loses trial {event['trial']}, which no earlier trial_start began with that arch_id"
    if kind == "trial_end":
        if statuses and event["status"] not in statuses:
            return (f"is a trial_end whose 'status' is not one of {', '.join(statuses)} "
                    f"(got {_short(event['status'])})")
        number = event["trial"]
        if number not in started:
            return f"ends trial {number}, which no earlier trial_start began"
        if started[number] != event["arch_id"]:
            return (f"ends trial {number} with arch_id {event['arch_id']!r}, but it began with "
                    f"{started[number]!r}")
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_events(numbered: Iterable[tuple[int, Any]], path: Any,
                 statuses: Collection[str] = ()) -> list[dict[str, Any]]:
    """The events of ``(line number, parsed line)`` pairs, each checked against the schema
    (a ``trial_end``'s status against ``statuses``).

    Raises:
        RunError: one line naming ``path:line`` and what is wrong with it.
    """
    from cellblock.core.errors import RunError

    started: dict[int, str] = {}
    events = []
    for lineno, event in numbered:
        problem = event_problem(event, started, statuses)
        if problem is not None:
            raise RunError(f"{path}:{lineno} {problem}; the record log is damaged or was edited; "
                           "restore trials.jsonl from a backup, or delete that line if you are "
                           "sure")
        if event["event"] == "trial_start":
            started[event["trial"]] = event["arch_id"]
        events.append(event)
    return events


__all__ = ["EVENT_KINDS", "check_events", "event_problem"]
