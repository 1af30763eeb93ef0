"""Metadata integrity of a run directory, and ``cellblock repair RUN``.

``trials.jsonl`` is the only source of truth; ``config.yaml`` is a copy of the config of
the last ``run_start`` and every other file is derived. So:

- an empty or missing log beside derived files (``trials.csv``...) is refused: the
  records are lost, and continuing would overwrite the only surviving copy;
- the config is always the log's last ``run_start``; ``config.yaml`` is never read as
  input. One that is missing, empty, unreadable or disagrees with the log is reported in
  one notice and rewritten from the log (by readers, ``cellblock repair`` and ``search``);
- a corrupt line (not UTF-8, not JSON) is one error, unless it is the torn last line of
  a write cut by a crash (no final newline), which is ignored and cut by ``repair`` or
  the next append.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellblock.core.config import RunConfig
from cellblock.core.errors import RunError
from cellblock.records.log import read_events
from cellblock.records.rundir import RunDir

_log = logging.getLogger(__name__)

DERIVED = RunDir.DERIVED


@dataclass
class RunMeta:
    """What a run directory's metadata says (nothing written)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] | None = None
    #: ``"log"`` (the last run_start) or None (no config recorded yet).
    config_source: str | None = None
    #: config.yaml is missing, unreadable or disagrees with the log (rewrite it from the log).
    config_stale: bool = False
    notices: list[str] = field(default_factory=list)


def _read_config_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(config, problem) of a config.yaml; problem says why it cannot be used."""
    if not path.is_file():
        return None, "is missing"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return None, "is unreadable"
    if not data:
        return None, "is empty"
    if not isinstance(data, dict):
        return None, "is not a mapping"
    return data, None


def log_config(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The config recorded in the log's last ``run_start``."""
    for ev in reversed(events):
        if ev.get("event") == "run_start" and isinstance(ev.get("config"), dict):
            return dict(ev["config"])
    return None


#: Config keys holding paths a run reads (``space`` too, as ``file.py:function``).
INPUT_PATH_KEYS = ("dataset", "data_dir", "supernet", "table", "latency_table")


def last_fingerprint(events: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The input fingerprint of the last ``run_start`` that has one (None for older logs;
    see :mod:`cellblock.run.fingerprint`)."""
    for ev in reversed(events):
        if ev.get("event") == "run_start" and isinstance(ev.get("inputs"), dict):
            return dict(ev["inputs"])
    return None


def run_cwd(events: list[dict[str, Any]]) -> str | None:
    """The working directory of the log's last ``run_start`` (None before it was recorded)."""
    for ev in reversed(events):
        if ev.get("event") == "run_start":
            return ev.get("cwd")
    return None


def with_inputs_from(config: RunConfig, cwd: str | None,
                     builtin_datasets: Collection[str] = ()) -> RunConfig:
    """``config`` with each relative input path that does not exist from here, but does from
    ``cwd`` (where the search ran), made absolute: ``cellblock train`` and ``export`` of a
    run work from any directory. A ``dataset`` in ``builtin_datasets`` is a name, kept."""
    if not cwd:
        return config

    def moved(value: str) -> str | None:
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists() or not (Path(cwd) / path).exists():
            return None
        return str(Path(cwd) / path)

    out: dict[str, Any] = {}
    for key in INPUT_PATH_KEYS:
        value = getattr(config, key)
        if isinstance(value,
                      str) and value and not (key == "dataset" and value in builtin_datasets):
            out[key] = moved(value) or value
    file, sep, fn = config.space.rpartition(":")
    if sep and file.endswith(".py") and (new := moved(file)):
        out["space"] = f"{new}:{fn}"
    return config.replace(**out)


def read_run_meta(run_dir: str | Path) -> RunMeta:
    """Check and read a run directory's log and config (writes nothing).

    Raises:
        RunError: empty/missing log beside derived files, a corrupt log line, or trial
            records with no config anywhere.
    """
    run_dir = Path(run_dir)
    log = RunDir(run_dir).log
    meta = RunMeta()
    empty_log = not log.is_file() or log.stat().st_size == 0
    derived = [n for n in DERIVED if (run_dir / n).exists()]
    if empty_log and derived:
        state = "empty" if log.is_file() else "missing"
        raise RunError(
            f"{str(run_dir)!r} has {', '.join(derived)} but its record log trials.jsonl is "
            f"{state}: the records are lost and a new search would overwrite the only copy left; "
            "restore trials.jsonl from a backup, or use another --out (nothing was changed)"
        )
    meta.events = read_events(log)
    cfg, problem = _read_config_file(RunDir(run_dir).config)
    from_log = log_config(meta.events)
    if from_log is not None:
        meta.config, meta.config_source = from_log, "log"
        if problem is not None:
            meta.config_stale = True
            meta.notices.append(f"config.yaml of {str(run_dir)!r} {problem}; using the config of "
                                "the "
                                "last run_start in trials.jsonl (config.yaml is rewritten from it)")
        elif cfg is not None and (key := _disagreement(cfg, from_log)) is not None:
            meta.config_stale = True
            meta.notices.append(
                f"config.yaml of {str(run_dir)!r} disagrees with trials.jsonl ({key}: "
                f"{cfg.get(key)!r} in config.yaml, {from_log.get(key)!r} in the log); the log is "
                "the record: config.yaml was not used and is rewritten from the log")
    elif meta.events and problem not in (None, "is missing"):
        raise RunError(f"config.yaml of {str(run_dir)!r} {problem} and trials.jsonl records no "
                       "config to rebuild it from; restore config.yaml from a backup")
    elif any(ev.get("event", "").startswith("trial_") for ev in meta.events):
        raise RunError(f"{str(run_dir)!r} has trial records but trials.jsonl has no run_start "
                       "config (config.yaml is only a copy, never the record); restore "
                       "trials.jsonl from a backup or choose another --out")
    return meta


def _disagreement(copy: dict[str, Any] | None, record: dict[str, Any]) -> str | None:
    """The first key whose value differs between config.yaml and the log's config (None: same)."""
    if copy is None:
        return None
    return next(
        (k for k in sorted(set(copy) | set(record), key=str) if copy.get(k) != record.get(k)), None)


def write_config_copy(meta: RunMeta, run_dir: str | Path) -> None:
    """Write config.yaml from the config the log records (as :func:`cellblock.core.config.dump`
    writes it)."""
    from cellblock.core.fileio import atomic_write_text

    atomic_write_text(RunDir(run_dir).config,
                      yaml.safe_dump(dict(meta.config or {}), sort_keys=False))
    meta.config_stale = False


def rewrite_stale_config(meta: RunMeta, run_dir: str | Path) -> None:
    """Rewrite a stale config.yaml from the log (a read-only run directory keeps it)."""
    if not meta.config_stale or meta.config is None:
        return
    try:
        write_config_copy(meta, run_dir)
    except OSError:
        pass


def remapped_labels(run_dir: str | Path) -> tuple[str, ...]:
    """The original labels of a run that remapped its labels (class index order), or ()."""
    for ev in reversed(read_events(RunDir(run_dir).log)):
        labels = (ev.get("inputs") or {}).get("labels") if ev.get("event") == "run_start" else None
        if labels:
            return tuple(labels.get("original_labels") or ())
    return ()


def log_notices(meta: RunMeta) -> None:
    """Log the notices of :func:`read_run_meta` (WARNING: the CLI shows ``cellblock: notice:``)."""
    for n in meta.notices:
        _log.warning("%s", n)
