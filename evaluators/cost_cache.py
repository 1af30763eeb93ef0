"""MACs and parameter counts of a space's networks, cached on disk.

:class:`CostCache` keeps MACs and parameters of built networks on disk (JSON, keyed by
the space's full arguments and source and by ``arch_id``), so that the thousands of
look-ups of a benchmark do not rebuild networks. A space may register a cost
representative (:func:`register_cost_representative`): an architecture with the same
costs, so that one network per cost class is built.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from torch import nn

from cellblock.core.registry import Registry
from cellblock.search_spaces.api import SearchSpace, arch_id

CostRepFn = Callable[[Mapping[str, Any]], dict[str, Any]]
COST_REPRESENTATIVES: Registry[CostRepFn] = Registry("cost representative")


def register_cost_representative(space_name: str, fn: CostRepFn | None = None) -> Any:
    """Register ``fn(arch) -> arch2``: an architecture whose network has the same MACs and
    parameters as ``arch``'s, so that :class:`CostCache` builds one network per class."""
    return COST_REPRESENTATIVES.register(space_name, fn)


def space_arguments(space: SearchSpace) -> dict[str, Any]:
    """The space function's full arguments: its defaults overridden by ``space.kwargs``."""
    return space.arguments()


def _source_digest(fn: Callable[..., Any]) -> str:
    module = sys.modules.get(getattr(fn, "__module__", ""), None)
    try:
        text = inspect.getsource(module) if module is not None else inspect.getsource(fn)
    except (OSError, TypeError):
        text = getattr(fn, "__qualname__", repr(fn))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def space_cost_key(space: SearchSpace, input_shape: Sequence[int]) -> str:
    """Hash of everything the costs of a space's networks depend on."""
    payload = {
        "ref": space.ref,
        "args": space_arguments(space),
        "input_shape": list(input_shape),
        "source": _source_digest(space.fn),
    }
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$CELLBLOCK_CACHE_DIR`` or ``~/.cache/cellblock``."""
    return Path(os.environ.get("CELLBLOCK_CACHE_DIR") or Path.home() / ".cache" / "cellblock")


def compute_costs(space: SearchSpace, arch: Mapping[str, Any],
                  input_shape: Sequence[int]) -> dict[str, int]:
    """``{"macs", "params"}`` of the network ``arch`` builds (one input of ``input_shape``)."""
    from cellblock.evaluators.cost import count_macs, count_params

    model: nn.Module = space.build(arch)
    return {"macs": count_macs(model, input_shape), "params": count_params(model)}


_WORKER: dict[str, Any] = {}


def _worker_init(spec: Mapping[str, Any], input_shape: Sequence[int]) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["space"] = SearchSpace.from_spec(spec)
    _WORKER["shape"] = tuple(input_shape)


def _worker_costs(archs: list[dict[str, Any]]) -> list[tuple[str, dict[str, int]]]:
    return [(arch_id(a), compute_costs(_WORKER["space"], a, _WORKER["shape"])) for a in archs]


class CostCache:
    """MACs and parameter counts of a space's networks, cached on disk.

    Every cost is counted on a built network. When the space registered a cost
    representative (:func:`register_cost_representative`) and ``representatives`` is
    True, architectures of one cost class share the count of their representative.

    Args:
        space: The space (its full arguments and source are part of the cache key).
        input_shape: Input ``(C, H, W)``; default the space's own.
        directory: Cache directory; default :func:`default_cache_dir` ``/ "costs"``.
        representatives: Use the space's cost representative, if it has one.
    """

    def __init__(self, space: SearchSpace, input_shape: Sequence[int] | None = None,
                 directory: str | Path | None = None, representatives: bool = True) -> None:
        self.space = space
        self.rep_fn: CostRepFn | None = None
        if representatives and space.name in COST_REPRESENTATIVES:
            self.rep_fn = COST_REPRESENTATIVES.get(space.name)
        self.input_shape = tuple(input_shape) if input_shape is not None else space.input_shape
        folder = Path(directory) if directory is not None else default_cache_dir() / "costs"
        self.path = folder / f"{space.name}-{space_cost_key(space, self.input_shape)}.json"
        self.costs: dict[str, dict[str, int]] = {}
        self.dirty = False
        if self.path.is_file():
            try:
                self.costs = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.costs = {}  # a corrupt cache is rebuilt

    def __len__(self) -> int:
        return len(self.costs)

    def __contains__(self, arch: Mapping[str, Any]) -> bool:
        return arch_id(arch) in self.costs

    def get(self, arch: Mapping[str, Any]) -> dict[str, int]:
        """``{"macs", "params"}`` of ``arch``: from the cache, else built and counted."""
        aid = arch_id(arch)
        if aid not in self.costs:
            rep = self._representative(arch)
            rid = arch_id(rep)
            if rid not in self.costs:
                self.costs[rid] = compute_costs(self.space, rep, self.input_shape)
            self.costs[aid] = self.costs[rid]
            self.dirty = True
        return dict(self.costs[aid])

    def _representative(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        return dict(arch) if self.rep_fn is None else self.rep_fn(arch)

    def fill(self, archs: Iterable[Mapping[str, Any]], workers: int = 1, chunk: int = 64,
             progress: Callable[[int, int], None] | None = None) -> int:
        """Compute the costs of every missing arch (in ``workers`` processes); return how many."""
        missing = {arch_id(a): dict(a) for a in archs}
        wanted = [a for aid, a in missing.items() if aid not in self.costs]
        if not wanted:
            return 0
        reps = {arch_id(r): r for r in map(self._representative, wanted)}
        todo = [r for rid, r in reps.items() if rid not in self.costs]
        chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
        done = 0
        t0 = time.perf_counter()
        if workers <= 1:
            for part in chunks:
                for a in part:
                    self.get(a)
                done += len(part)
                if progress:
                    progress(done, len(todo))
        else:
            with ProcessPoolExecutor(workers, initializer=_worker_init,
                                     initargs=(self.space.spec(), self.input_shape)) as pool:
                for result in pool.map(_worker_costs, chunks):
                    self.costs.update(result)
                    done += len(result)
                    self.dirty = True
                    if progress:
                        progress(done, len(todo))
        for a in wanted:
            self.get(a)  # every rep is cached now: this only links the arch to its costs
        self.dirty = True
        self.save()
        self._log_fill(len(wanted), len(todo), time.perf_counter() - t0, workers)
        return len(wanted)

    @property
    def log_path(self) -> Path:
        """Side file recording how long each :meth:`fill` took."""
        return self.path.with_suffix(".log.jsonl")

    def _log_fill(self, n: int, built: int, seconds: float, workers: int) -> None:
        entry = {"archs": n, "built": built, "seconds": round(seconds, 2), "workers": workers,
                 "t": time.time()}
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def fill_log(self) -> list[dict[str, Any]]:
        """Entries written by :meth:`fill` (archs filled, networks built, seconds, workers)."""
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines()
                if line.strip()]

    def save(self) -> None:
        """Write the cache atomically (if anything changed)."""
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.costs, fh, separators=(",", ":"))
        os.replace(tmp, self.path)
        self.dirty = False


__all__ = [
    "COST_REPRESENTATIVES",
    "CostCache",
    "CostRepFn",
    "compute_costs",
    "default_cache_dir",
    "register_cost_representative",
    "space_arguments",
    "space_cost_key",
]
