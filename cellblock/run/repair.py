"""``cellblock repair``: fix what can be proven right in a run directory."""

from __future__ import annotations

from pathlib import Path

from cellblock.core.errors import RunError
from cellblock.core.fileio import remove_stale_tmp
from cellblock.core.runlock import run_dir_lock
from cellblock.pareto.results import write_outputs
from cellblock.records import RecordLog
from cellblock.records.meta import read_run_meta, write_config_copy
from cellblock.records.rundir import RunDir


def repair(run_dir: str | Path) -> list[str]:
    """Repair what can be proven right: cut a torn last log line, rebuild config.yaml from
    the log, remove stale temporary files, rewrite the derived files. Returns what was done.

    Raises:
        RunError: what cannot be repaired (a corrupt line inside the log, lost records).
    """
    run_dir = Path(run_dir)
    if not RunDir(run_dir).log.is_file():
        raise RunError(f"{str(run_dir)!r} has no trials.jsonl; not a cellblock run directory")
    done = []
    with run_dir_lock(run_dir):
        meta = read_run_meta(run_dir)
        log = RunDir(run_dir).log
        size = log.stat().st_size
        RecordLog(log)._repair_tail()
        if log.stat().st_size != size:
            done.append(f"cut a torn last line of trials.jsonl ({size - log.stat().st_size} bytes)")
        if meta.config_stale:
            write_config_copy(meta, run_dir)
            done.append("rebuilt config.yaml from the last run_start in trials.jsonl")
        removed = remove_stale_tmp(run_dir)
        if removed:
            done.append(f"removed {len(removed)} stale temporary file(s)")
        if meta.config is not None:
            write_outputs(run_dir)
            done.append("rewrote trials.csv, pareto.csv and pareto.png")
    return done
