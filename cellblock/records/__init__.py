"""Records: the append-only JSON-lines log of a run and the trial type read back from it.

Owns: :mod:`.log` (``Trial``, statuses, ``RecordLog``, event replay, ``trials.csv`` rows),
:mod:`.rundir` (``RunDir``: the file layout of a run) and :mod:`.meta` (reading a run's
metadata back, config rebuilt from the log).
May import: :mod:`cellblock.core`.
"""

from __future__ import annotations

from cellblock.records.log import (
    COMPLETE,
    CSV_COLUMNS,
    FAILED,
    INFEASIBLE,
    PRUNED,
    RUNNING,
    STATUSES,
    TABLE_METRICS,
    RecordLog,
    Status,
    Trial,
    read_events,
    replay_trials,
    trial_end_event,
    trial_lost_event,
    trial_row,
    trial_start_event,
    write_csv,
)
from cellblock.records.rundir import RunDir

__all__ = [
    "RunDir",
    "COMPLETE",
    "CSV_COLUMNS",
    "FAILED",
    "INFEASIBLE",
    "PRUNED",
    "RUNNING",
    "RecordLog",
    "STATUSES",
    "TABLE_METRICS",
    "Status",
    "Trial",
    "read_events",
    "replay_trials",
    "trial_end_event",
    "trial_lost_event",
    "trial_row",
    "trial_start_event",
    "write_csv",
]
