"""No shared disk: the ``ray`` backend ships the files trials read through Ray's object store.

On a cluster (``address`` set), the driver puts each input file of the run in the object
store once (:func:`ship`): a ``.npz`` dataset, the space file (``file.py:function``), a
``supernet`` checkpoint, a ``table`` and a ``latency_table``. A worker writes each file it
needs once per node, under ``<tmp>/cellblock-inputs/<sha256>/`` (:func:`materialize`), and
reads it from there, so no node needs the driver's paths. (A space file that imports
sibling modules needs them installed on every node.) Names and directories are left
as they are: built-in datasets, ImageFolder directories and torchvision ``data_dir`` must
be reachable by path on every node (a shared disk), or downloaded there (``download``).

A file over :data:`SHIP_MAX_BYTES` is not shipped (the object store holds it in memory on
every node that reads it): its path must then exist on every node, and the driver says so.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellblock.core.config import RunConfig
from cellblock.records.meta import INPUT_PATH_KEYS

#: Files larger than this are not shipped through the object store (their path is used).
SHIP_MAX_BYTES = 2 * 1024**3
#: Under the node's temp directory: one folder per shipped file's content hash.
CACHE_DIR = "cellblock-inputs"


def _space_file(cfg: RunConfig) -> tuple[str, str] | None:
    file, sep, fn = str(cfg.space).rpartition(":")
    return (file, fn) if sep and file.endswith(".py") and Path(file).is_file() else None


def shippable(cfg: RunConfig) -> dict[str, Path]:
    """Config key -> the local file it names, for the input files a worker reads."""
    out: dict[str, Path] = {}
    space = _space_file(cfg)
    if space:
        out["space"] = Path(space[0])
    for key in INPUT_PATH_KEYS:
        value = getattr(cfg, key)
        if key != "data_dir" and isinstance(value, str) and value and Path(value).is_file():
            out[key] = Path(value)
    return out


def ship(cfg: RunConfig, put: Any) -> tuple[dict[str, Any], list[str]]:
    """Put the run's input files in the object store.

    Args:
        cfg: The config with absolute paths.
        put: ``ray.put``.

    Returns:
        ``{key: {"name", "sha256", "ref"}}`` for :func:`materialize`, and one line per
        file too large to ship (its path must exist on every node).
    """
    shipped: dict[str, Any] = {}
    notes = []
    for key, path in shippable(cfg).items():
        size = path.stat().st_size
        if size > SHIP_MAX_BYTES:
            notes.append(
                f"{key} {str(path)!r} ({size / 1024**3:.1f} GiB) is too large to ship through "
                "Ray's object store: it must exist at that path on every node"
            )
            continue
        data = path.read_bytes()
        shipped[key] = {
            "name": path.name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "ref": put(data),
        }
    return shipped, notes


def _write_once(target: Path, ref: Any, get: Any) -> None:
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(get(ref))
    os.replace(tmp, target)  # atomic: another worker of this node may write it too


def materialize(
    cfg: RunConfig, shipped: Mapping[str, Any], get: Any, root: str | Path | None = None
) -> RunConfig:
    """``cfg`` with each shipped input's path replaced by a copy on this node.

    Args:
        cfg: The run's config (driver paths).
        shipped: What :func:`ship` returned.
        get: ``ray.get``.
        root: Where the copies go (default: the temp directory).
    """
    base = Path(root or tempfile.gettempdir()) / CACHE_DIR
    out: dict[str, Any] = {}
    for key, item in shipped.items():
        target = base / item["sha256"][:32] / item["name"]
        _write_once(target, item["ref"], get)
        if key == "space":
            fn = str(cfg.space).rpartition(":")[2]
            out["space"] = f"{target}:{fn}"
        else:
            out[key] = str(target)
    return cfg.replace(**out)
