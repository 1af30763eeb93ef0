"""Trial records: an append-only JSON-lines log, flushed and fsync'd per event.

Every other file of a run (CSV, Pareto table, plots, reports) is derived from the log,
and all state of a run is rebuilt from it on resume.

Events (one JSON object per line, key ``event``):
    ``run_start``   a (re)start of the search, with the resolved config
    ``trial_start`` trial number, ``arch_id``, ``arch``
    ``trial_end``   trial number, ``arch_id``, ``status``, ``metrics``, ``error``, and the
                    ``attempt`` that ended it with its ``node`` (where it ran)
    ``trial_lost``  an attempt lost to the infrastructure (its worker process, actor or
                    node died): trial number, ``attempt``, ``node``, ``reason``, ``retry``
                    (whether it runs again now). The trial is not finished: it stays
                    RUNNING, never counts as done and is re-run by a resume.
    ``node_lost`` / ``node_joined``  a Ray node left (with Ray's reason) or joined the
                    cluster during the run (``node``: IP and node-ID prefix)
    ``run_end``     the search finished its budget
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from cellblock.core.errors import RunError


class Status(str, Enum):
    """The status of a trial; a ``str`` (it compares equal to, and is written as, its name)."""

    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    INFEASIBLE = "INFEASIBLE"
    RUNNING = "RUNNING"
    #: Stopped early by a multi-fidelity scheduler: metrics hold its accuracy at that rung
    #: and ``epochs`` trained; never on the Pareto front (not fully trained).
    PRUNED = "PRUNED"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


COMPLETE, FAILED, INFEASIBLE, RUNNING, PRUNED = (Status.COMPLETE, Status.FAILED, Status.INFEASIBLE,
                                                 Status.RUNNING, Status.PRUNED)
STATUSES = tuple(Status)


@dataclass
class Trial:
    """One evaluated (or in-flight) candidate."""

    number: int
    arch_id: str
    arch: dict[str, Any]
    status: str = RUNNING
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    violation: float = 0.0
    start_t: float | None = None
    end_t: float | None = None
    #: Attempts lost to the infrastructure (``trial_lost`` events: attempt, node, reason).
    lost: list[dict[str, Any]] = field(default_factory=list)
    #: Where the attempt that ended the trial ran (``trial_end``'s node), when known.
    node: str | None = None

    @property
    def done(self) -> bool:
        """Whether the trial has ended (complete, failed or infeasible)."""
        return self.status != RUNNING

    @property
    def feasible_complete(self) -> bool:
        """Completed and feasible (constraints met). Whether its objective values are finite
        is checked where a front is built (:func:`cellblock.pareto.results.pareto_trials`)."""
        return self.status == COMPLETE and self.violation <= 0

    def value(self, name: str) -> float | None:
        """A metric as float, or None when missing or not finite."""
        v = self.metrics.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"cannot record {type(obj).__name__} in trials.jsonl")


class RecordLog:
    """Append-only JSON-lines event log.

    Every event is written and flushed to the kernel before :meth:`append` returns, so
    it survives the process being killed at any moment. Every event is then fsync'd:
    with ``fsync="background"`` (default) a group-commit thread fsyncs behind the
    writer (one fsync covers all events written before it), keeping the disk's sync
    latency off the search loop; :meth:`close` waits for the last fsync. With
    ``fsync="sync"``, :meth:`append` itself fsyncs. ``fsync="off"`` only flushes.

    Args:
        path: The ``trials.jsonl`` file (created on first append).
        fsync: "background", "sync" or "off".
    """

    MODES = ("background", "sync", "off")

    def __init__(self, path: str | Path, fsync: str = "background") -> None:
        if fsync not in self.MODES:
            raise ValueError(f"fsync must be one of {self.MODES}, got {fsync!r}")
        self.path = Path(path)
        self.mode = fsync
        self._fh: Any = None
        self._cond = threading.Condition()
        self._written = 0
        self._synced = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        self.fsyncs = 0

    def append(self, event: Mapping[str, Any]) -> None:
        """Write one event as a line and flush it; fsync it (see the class docs)."""
        if self._fh is None:
            self._open()
        from cellblock.core.fileio import named

        line = json.dumps(dict(event), default=_json_default, separators=(",", ":"))
        try:
            with self._cond:
                self._fh.write(line + "\n")
                self._fh.flush()
                self._written += 1
                if self.mode == "background":
                    self._cond.notify()
            if self.mode == "sync":
                os.fsync(self._fh.fileno())
                self.fsyncs += 1
        except OSError as exc:
            raise named(exc, self.path) from None

    def _open(self) -> None:
        self._repair_tail()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._closing = False
        if self.mode == "background":
            self._thread = threading.Thread(
                target=self._sync_loop, name="cellblock-fsync", daemon=True
            )
            self._thread.start()

    def _sync_loop(self) -> None:
        while True:
            with self._cond:
                while self._synced == self._written and not self._closing:
                    self._cond.wait()
                if self._synced == self._written and self._closing:
                    return
                target = self._written
                fd = self._fh.fileno()
            os.fsync(fd)
            self.fsyncs += 1
            with self._cond:
                self._synced = target
                self._cond.notify_all()

    def _repair_tail(self) -> None:
        """Cut a partial last line left by a crash mid-write, so appends stay parseable."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            cut = fh.read().rfind(b"\n") + 1
            fh.truncate(cut)

    def close(self) -> None:
        """Wait for the last fsync and close the file."""
        if self._fh is None:
            return
        if self._thread is not None:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()
            self._thread = None
        self._fh.close()
        self._fh = None

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All events of a log; a partial last line (a torn write: no final newline) is ignored.

    Raises:
        RunError: if a complete line is not valid UTF-8 JSON, or not a valid event
            (:mod:`cellblock.records.schema`); one line naming its line number.
    """
    path = Path(path)
    if not path.exists():
        return []
    from cellblock.records.schema import check_events

    lines = path.read_bytes().split(b"\n")
    parsed: list[tuple[int, Any]] = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            parsed.append((i + 1, json.loads(raw.decode("utf-8"))))
        except (UnicodeDecodeError, ValueError, RecursionError):
            if i == len(lines) - 1:  # torn write of the final line (cut on the next append)
                continue
            kind = "is not valid UTF-8" if _not_utf8(raw) else "is not valid JSON"
            raise RunError(
                f"{path}:{i + 1} {kind}; the record log is corrupt (edited or damaged, not a torn "
                "write); restore trials.jsonl from a backup, or delete that line if you are sure"
            ) from None
    return check_events(parsed, path, tuple(s.value for s in STATUSES))


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def replay_trials(events: Iterable[Mapping[str, Any]]) -> list[Trial]:
    """Rebuild trials (ordered by number) from events; in-flight ones stay RUNNING."""
    trials: dict[int, Trial] = {}
    for ev in events:
        kind = ev.get("event")
        if kind == "trial_start":
            before = trials.get(ev["trial"])
            trials[ev["trial"]] = Trial(
                number=ev["trial"],
                arch_id=ev["arch_id"],
                arch=ev["arch"],
                start_t=ev.get("t"),
                lost=before.lost if before is not None else [],
            )
        elif kind == "trial_lost" and ev["trial"] in trials:
            trials[ev["trial"]].lost.append(
                {k: ev.get(k) for k in ("attempt", "node", "reason", "retry", "t")}
            )
        elif kind == "trial_end" and ev["trial"] in trials:
            t = trials[ev["trial"]]
            t.status = ev["status"]
            t.metrics = dict(ev.get("metrics") or {})
            t.error = ev.get("error")
            t.violation = float(ev.get("violation") or 0.0)
            t.end_t = ev.get("t")
            t.node = ev.get("node")
    return [trials[k] for k in sorted(trials)]


def trial_start_event(trial: Trial) -> dict[str, Any]:
    """The ``trial_start`` event of a trial."""
    return {
        "event": "trial_start",
        "trial": trial.number,
        "arch_id": trial.arch_id,
        "arch": trial.arch,
        "t": trial.start_t if trial.start_t is not None else time.time(),
    }


def trial_end_event(trial: Trial) -> dict[str, Any]:
    """The ``trial_end`` event of a finished trial."""
    return {
        "event": "trial_end",
        "trial": trial.number,
        "arch_id": trial.arch_id,
        "status": trial.status,
        "metrics": trial.metrics,
        "error": trial.error,
        "violation": trial.violation,
        "attempt": len(trial.lost) + 1,
        "node": trial.node,
        "t": trial.end_t if trial.end_t is not None else time.time(),
    }


def trial_lost_event(trial: Trial, node: str | None, reason: str, retry: bool) -> dict[str, Any]:
    """The ``trial_lost`` event of ``trial``'s current attempt (lost to the infrastructure)."""
    return {
        "event": "trial_lost",
        "trial": trial.number,
        "arch_id": trial.arch_id,
        "attempt": len(trial.lost) + 1,
        "node": node,
        "reason": reason,
        "retry": retry,
        "t": time.time(),
    }


#: Metrics every trials table shows; a run's other objectives and constraint metrics
#: (``synflow``, ``supernet_score``...) are added after them.
TABLE_METRICS = ("accuracy", "macs", "params", "latency_ms", "train_s")
CSV_COLUMNS = ("trial", "arch_id", "status", *TABLE_METRICS, "error", "arch")


def trial_row(trial: Trial, extra: Sequence[str] = ()) -> dict[str, Any]:
    """A flat row of the trials table (``arch`` as canonical JSON), with ``extra`` metrics."""
    m = trial.metrics
    return {
        "trial": trial.number,
        "arch_id": trial.arch_id,
        "status": trial.status,
        **{name: m.get(name) for name in (*TABLE_METRICS, *extra)},
        "error": trial.error or "",
        "arch": json.dumps(trial.arch, sort_keys=True),
    }


def write_csv(
    path: str | Path,
    trials: Iterable[Trial],
    extra: Sequence[str] = (),
    unstable: Mapping[int, str] | None = None,
) -> None:
    """Write trials as CSV with :data:`CSV_COLUMNS`, ``extra`` metric columns before ``error``
    (atomically, via a temp file).

    Args:
        unstable: Trial number -> why its latency is not trusted
            (:func:`cellblock.core.load.unstable_latency`); adds ``latency_unstable`` (true,
            false, or empty without a latency) and ``latency_unstable_reason`` after ``extra``.
    """
    from cellblock.core.fileio import atomic_write

    flag_cols = ["latency_unstable", "latency_unstable_reason"] if unstable is not None else []
    fields = [*CSV_COLUMNS[:-2], *extra, *flag_cols, *CSV_COLUMNS[-2:]]

    def write(fh: Any) -> None:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for t in trials:
            row = trial_row(t, extra)
            if unstable is not None:
                measured = t.value("latency_ms") is not None
                row["latency_unstable"] = (
                    ("true" if t.number in unstable else "false") if measured else None
                )
                row["latency_unstable_reason"] = unstable.get(t.number)
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in fields})

    atomic_write(path, write)
