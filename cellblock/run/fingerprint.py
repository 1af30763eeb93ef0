"""Input fingerprints: content hashes of what a run reads, recorded in its ``run_start``.

A run continued on other data, another supernet checkpoint, another benchmark table or
an edited space file would mix trials scored on different inputs in one front; on
resume the fingerprint is compared with the last recorded one and a change is refused
(one error naming what changed) unless ``allow_changed_inputs`` is set, which is then
recorded. Built-in datasets and spaces are named, not hashed (they ship with the code).
The machine's load average is recorded beside the fingerprint (not compared).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cellblock.core.config import RunConfig
from cellblock.core.errors import CellblockWarning, RunError
from cellblock.records.meta import last_fingerprint as last_fingerprint  # re-exported

CHUNK = 1 << 20


def _hash_file(path: Path, h: Any) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)


def content_hash(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path).as_posix()).encode() + b"\0")
            _hash_file(f, h)
            h.update(b"\0")
    else:
        _hash_file(path, h)
    return h.hexdigest()


def _entry(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.exists():
        return {"path": str(path), "sha256": None}
    return {"path": str(path), "sha256": content_hash(path)}


def _space_source(ref: str) -> str | None:
    from cellblock.search_spaces import SPACES
    from cellblock.search_spaces.api import resolve_space_fn

    if ref in SPACES:
        return None
    try:
        return inspect.getsourcefile(resolve_space_fn(ref))
    except (TypeError, OSError):
        return None


def input_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """``{"dataset", "supernet", "table", "space"}`` entries for the inputs a config reads.

    A path input gets ``{"path", "sha256"}``; a built-in name ``{"name"}``.
    """
    from cellblock.data import dataset_names

    out: dict[str, Any] = {}
    dataset = cfg.dataset
    if dataset and dataset not in dataset_names():
        out["dataset"] = _entry(dataset)
    elif dataset:
        out["dataset"] = {"name": dataset}
    for key, path in (("supernet", cfg.supernet), ("table", cfg.table)):
        if path:
            out[key] = _entry(path)
    source = _space_source(cfg.space) if cfg.space else None
    out["space"] = _entry(source) if source else {"name": cfg.space}
    return out


def machine_load() -> dict[str, Any]:
    """The 1/5/15-minute load averages and the CPU count (where the OS tells them)."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"load_avg": load, "cpus": os.cpu_count()}


def changed_inputs(old: Mapping[str, Any], new: Mapping[str, Any],
                   by_content: bool = False) -> list[str]:
    """Descriptions of the inputs whose content (or identity) differs between fingerprints.

    ``by_content``: a file found under another path (a run read from another directory)
    with the same content is not a change.
    """
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key) or {}, new.get(key) or {}
        if a == b or (by_content and a.get("sha256") and a.get("sha256") == b.get("sha256")):
            continue
        name = b.get("path") or b.get("name") or a.get("path") or a.get("name")
        if a.get("sha256") and b.get("sha256"):
            out.append(f"{key} {name!r} (content {a['sha256'][:12]} then, {b['sha256'][:12]} now)")
        elif b.get("sha256") is None and "path" in b:
            out.append(f"{key} {name!r} (missing now)")
        else:
            out.append(f"{key} {name!r} (was {a.get('path') or a.get('name')!r})")
    return out


def check_inputs(run_dir: Path, events: Sequence[Mapping[str, Any]], now: Mapping[str, Any],
                 allow: bool) -> list[str]:
    """Compare ``now`` with the run's last fingerprint; return the changes (when allowed).

    Raises:
        RunError: naming the changed inputs, unless ``allow``.
    """
    before = last_fingerprint(events)
    if before is None:
        return []
    changed = changed_inputs(before, now, by_content=True)  # a moved folder is no change
    if changed and not allow:
        raise RunError(
            f"the inputs of run {str(run_dir)!r} changed since it was last run: "
            f"{'; '.join(changed)}; restore them, or use --out for a new run, or pass "
            "--allow-changed-inputs to continue anyway (the change is recorded in trials.jsonl)"
        )
    return changed


def check_recorded_inputs(data: Any, allow: bool, command: str) -> list[str]:
    """Compare the inputs a command reads for a finished run (``train``, ``export``,
    ``report``) with those its last ``run_start`` recorded, as ``search`` does.

    Args:
        data: The run (:class:`cellblock.pareto.results.RunData`, with ``inputs``).
        allow: ``--allow-changed-inputs``: go on, with a warning on stderr.
        command: The command, for the message.

    Returns:
        The changes (when allowed).

    Raises:
        RunError: naming the changed inputs, unless ``allow``.
    """
    from cellblock.data import dataset_names
    from cellblock.records.meta import with_inputs_from

    before = data.inputs or {}
    now = input_fingerprint(with_inputs_from(data.config, data.cwd, dataset_names()))
    keys = set(before) & set(now)
    changed = changed_inputs({k: before[k] for k in keys}, {k: now[k] for k in keys},
                             by_content=True)
    if changed and not allow:
        raise RunError(
            f"the inputs of run {str(data.run_dir)!r} changed since it was searched: "
            f"{'; '.join(changed)}; "
            f"restore them, or pass --allow-changed-inputs to {command} with them anyway"
        )
    if changed:
        warnings.warn(f"{command} uses changed inputs (--allow-changed-inputs): "
                      + "; ".join(changed), CellblockWarning, stacklevel=2)
    return changed
