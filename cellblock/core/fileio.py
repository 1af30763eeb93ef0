"""Atomic file writes: a crash leaves either the old file or the new one, never half.

Temporary files are named ``.<name>.<pid>.tmp`` beside the target and removed when the
write fails; :func:`remove_stale_tmp` removes those left by processes killed mid-write.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def tmp_path(path: str | Path) -> Path:
    """The temporary file of this process for an atomic write of ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False,
                 fsync: bool = False) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file is removed if ``write`` raises (or the process is interrupted).
    """
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    return atomic_write(path, lambda fh: fh.write(text))


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh), binary=True, fsync=True)


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove temporary files of atomic writes in ``folder`` whose process is gone.

    Also removes the ``<name>.tmp`` files of older versions. Returns the removed paths.
    """
    from cellblock.core.runlock import pid_alive

    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        stale = (m is not None and not pid_alive(int(m["pid"]))) or (
            m is None and p.name.endswith(".tmp") and (folder / p.name[:-4]).suffix != "")
        if stale and p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new directory under ``parent`` (as :func:`tempfile.mkdtemp`), with the mode an
    ordinary ``mkdir`` gives (``0o777`` less the umask), not mkdtemp's private ``0o700``:
    a directory renamed into place later must be readable as any other the user makes."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o777 & ~mask)
    return path
