"""Atomic file writes: a crash leaves either the old file or the new one, never half.

Temporary files are named ``.<name>.<pid>.tmp`` beside the target and removed when the
write fails; :func:`remove_stale_tmp` removes those left by processes killed mid-write.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def tmp_path(path: str | Path) -> Path:
    """The temporary file of this process for an atomic write of ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def named(exc: BaseException, path: str | Path) -> BaseException:
    """``exc`` with ``path`` as its file name when it is an OS error that names none
    (a write or fsync that failed on a full disk), so its one-line message names the file."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(path)
    return exc


def atomic_write(path: str | Path, write: Callable[[IO[Any]], object], binary: bool = False,
                 fsync: bool = False) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file is removed if ``write`` raises (or the process is interrupted).
    """
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8",
                  newline=None if binary else "") as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        named(exc, path)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    return atomic_write(path, lambda fh: fh.write(text))


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh), binary=True, fsync=True)


def load_tensors(path: str | Path, what: str, hint: str, mapping: bool = True) -> Any:
    """``torch.load`` of a file someone may have handed over: tensors and plain values only.

    Nothing in the file is executed (``weights_only=True``: a pickle naming a function or
    class is refused, not run).

    Args:
        path: The ``.pt`` file.
        what: What the file is, for the message (``"checkpoint"``, ``"weights file"``).
        hint: How to fix it, for the message.
        mapping: Require a dict (a state dict, a checkpoint).

    Raises:
        CheckpointError: one line naming ``path``: missing, corrupt, holding code, not a dict.
    """
    import torch

    from cellblock.core.errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} not found; {hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unpickling / zip failure: not a safe file)
        unsafe = isinstance(exc, pickle.UnpicklingError)
        why = ("holds objects other than tensors and plain values (refused, nothing in it was run)"
               if unsafe else f"is corrupt or not a torch file ({type(exc).__name__})")
        raise CheckpointError(f"{what} {str(path)!r} {why}; {hint}") from None
    if mapping and not isinstance(obj, dict):
        raise CheckpointError(
            f"{what} {str(path)!r} holds a {type(obj).__name__}, not a dict; {hint}")
    return obj


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove temporary files of atomic writes in ``folder`` whose process is gone.

    Also removes the ``<name>.tmp`` files of older versions. Returns the removed paths.
    """
    from cellblock.core.runlock import pid_alive

    removed: list[Path] = []
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
