"""Where ``cellblock export`` may write: ``--force`` replaces only what an export made.

An export directory holds a marker, :data:`EXPORT_MARKER`, listing the files it made. A
non-empty ``--out`` is replaced with ``--force`` only when it holds that marker and no other
file; a run directory, its parents, and any directory of a user's own files are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from cellblock.core.errors import ConfigError

#: Written last into every export directory: the files the export made (``--force`` replaces
#: a directory only when it holds this marker and nothing else than those files).
EXPORT_MARKER = ".cellblock-export"
#: Files of a run directory: a directory holding one is never an export's --out.
_RUN_FILES = ("trials.jsonl", "config.yaml")


def check_export_out(final: Path, force: bool, run_dir: str | Path | None = None) -> None:
    """Refuse an ``--out`` that the export may not write or replace (nothing is changed).

    Raises:
        ConfigError: a file; the run directory, one of its parents, or any run directory;
            a non-empty directory without ``force``; with ``force``, a directory that is not
            an earlier export (no marker) or holds files the export did not make.
    """
    where = f"--out {str(final)!r}"
    if final.exists() and not final.is_dir():
        raise ConfigError(f"{where} is a file; give a directory")
    if run_dir is not None:
        run, target = Path(run_dir).resolve(), final.resolve()
        if target == run or target in run.parents:
            raise ConfigError(f"{where} is the run directory or holds it; an export goes into a "
                              "new directory of its own (nothing was changed)")
    if not final.is_dir() or not any(final.iterdir()):
        return
    if any((final / name).exists() for name in _RUN_FILES):
        raise ConfigError(f"{where} is a run directory; an export goes into a new directory of its "
                          "own (nothing was changed)")
    if not force:
        raise ConfigError(f"{where} is not empty (an earlier export?); choose a new "
                          "directory, or pass --force to replace it")
    try:
        made = set(json.loads((final / EXPORT_MARKER).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{where} holds files 'cellblock export' did not write (no valid "
                          f"{EXPORT_MARKER} marker); --force only replaces an earlier export: "
                          "choose a new directory (nothing was changed)") from None
    other = sorted(str(p.relative_to(final)) for p in final.rglob("*")
                   if not p.is_dir() and str(p.relative_to(final)) not in made)
    if other:
        raise ConfigError(f"{where} holds files the export did not write ({', '.join(other[:3])}"
                          f"{'...' if len(other) > 3 else ''}); --force only replaces an earlier "
                          "export: move them away or choose a new directory (nothing was changed)")


def write_marker(out: Path) -> None:
    """Write the marker of an export made in ``out`` (listing every file in it)."""
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())
    text = json.dumps({"made_by": "cellblock export", "files": [*files, EXPORT_MARKER]}, indent=1)
    (out / EXPORT_MARKER).write_text(text + "\n", encoding="utf-8")


__all__ = ["EXPORT_MARKER", "check_export_out", "write_marker"]
