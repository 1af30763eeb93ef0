"""Ray resources of the ``ray`` backend: ``resources_per_trial`` parsed, checked against the
nodes, and how many trials the cluster holds now (``concurrency: auto``). Imports no Ray."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cellblock.core.errors import ConfigError

RAY_NAMES = {"cpu": "CPU", "gpu": "GPU"}


def parse_resources(text: str | None) -> dict[str, float]:
    """``"cpu=1,gpu=0.5"`` -> ``{"CPU": 1.0, "GPU": 0.5}`` (Ray names; cpu defaults to 1;
    None: ``cpu=1``).

    Raises:
        ConfigError: for a malformed spec, a negative amount or a repeated key.
    """
    out: dict[str, float] = {}
    for part in (text or "cpu=1").split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        name = RAY_NAMES.get(key.lower(), key)
        if not sep or not key or not math.isfinite(amount) or amount < 0 or name in out:
            raise ConfigError(f"resources_per_trial {text!r} is malformed at {part.strip()!r}; "
                              "use NAME=AMOUNT pairs such as cpu=1,gpu=0.5")
        out[name] = amount
    out.setdefault("CPU", 1.0)
    return out


def _fmt(resources: Mapping[str, float]) -> str:
    return ",".join(
        f"{k.lower() if k in ('CPU', 'GPU') else k}={v:g}" for k, v in resources.items()
    )


def _node_fits(node: Mapping[str, float], want: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v for k, v in want.items() if v > 0)


def _check_fits(
    nodes: Sequence[Mapping[str, float]], want: Mapping[str, float], where: str
) -> None:
    if any(_node_fits(n, want) for n in nodes):
        return
    largest = (
        ", ".join(f"{k.lower()}={max(n.get(k, 0.0) for n in nodes):g}" for k in want)
        if nodes
        else "none"
    )
    raise ConfigError(
        f"no node of {where} can give one trial {_fmt(want)} (largest: {largest}); "
        "lower --resources-per-trial or add such a node"
    )


def trials_on(node: Mapping[str, float], want: Mapping[str, float]) -> int:
    """How many trials of ``want`` one node's resources hold at once."""
    counts = [math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in want.items() if v > 0]
    return max(0, min(counts)) if counts else 0


class ClusterCapacity:
    """The cluster as the driver sees it, looked at (``ray.nodes()``) at most every
    ``every_s`` seconds: how many trials of ``want`` the alive nodes hold at once
    (``concurrency: auto``, so it follows nodes that join or leave), and a record of each
    node that leaves (``node_lost``, with Ray's reason) or joins (``node_joined``).

    Args:
        want: Resources of one trial (Ray names).
        nodes: Returns Ray's node table (``ray.nodes()``: NodeID, Alive, Resources...).
        record: Called with each node event (the run's log); None: not recorded.
        every_s: Seconds between two looks at the cluster.
        clock: A monotonic clock (injected by tests).
    """

    def __init__(
        self,
        want: Mapping[str, float],
        nodes: Callable[[], list[dict[str, Any]]],
        record: Callable[[dict[str, Any]], None] | None = None,
        every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.want, self.nodes, self.record = dict(want), nodes, record
        self.every_s, self.clock = every_s, clock
        self._at: float | None = None
        self._value = 0
        self.alive: dict[str, dict[str, Any]] | None = None

    def poll(self) -> None:
        """Look at the cluster if ``every_s`` passed since the last look."""
        now = self.clock()
        if self._at is not None and now - self._at < self.every_s:
            return
        self._at = now
        table = self.nodes()
        alive = {n["NodeID"]: n for n in table if n.get("Alive")}
        self._value = sum(trials_on(n.get("Resources") or {}, self.want) for n in alive.values())
        if self.alive is not None and self.record is not None:
            dead = {n["NodeID"]: n for n in table if not n.get("Alive")}
            for node_id in self.alive.keys() - alive.keys():
                why = dead.get(node_id, {}).get("DeathReasonMessage") or "it left the cluster"
                self.record(
                    {
                        "event": "node_lost",
                        "node": _label(self.alive[node_id]),
                        "reason": " ".join(str(why).split())[:300],
                        "t": time.time(),
                    }
                )
            for node_id in alive.keys() - self.alive.keys():
                self.record(
                    {"event": "node_joined", "node": _label(alive[node_id]), "t": time.time()}
                )
        self.alive = alive

    def __call__(self) -> int:
        self.poll()
        return self._value


def _label(node: Mapping[str, Any]) -> str:
    """``IP node-ID-prefix``, as :func:`cellblock.run.backends.ray_tune_adapter.node_label`."""
    return f"{node.get('NodeManagerAddress') or '?'} {str(node.get('NodeID') or '?')[:12]}"
