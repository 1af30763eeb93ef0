"""Where trials run: in-process, in a local process pool, or on Ray.

A backend takes trials (``submit``) and hands back finished ones with their outcome
(``wait``); it never records or tells: the run loop does, so every backend gives the
same records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cellblock.core.config import RunConfig
from cellblock.core.errors import ConfigError
from cellblock.core.registry import Registry
from cellblock.evaluators.pipeline import Outcome, trial_seed
from cellblock.records import Trial

#: Backends by name; Ray lives in an optional module imported on its first look-up.
BACKENDS: Registry[type[Backend]] = Registry(
    "backend", lazy={"process": ("cellblock.run.backends.process", None),
                "ray": ("cellblock.run.backends.ray_backend", "cellblock[ray]")})


@dataclass(frozen=True)
class Lost:
    """An attempt lost to the infrastructure (its worker process, actor or node died): not
    an outcome of the architecture; the run loop re-runs the trial (``TrialBook.lose``).

    Attributes:
        node: Where the attempt ran (None when unknown).
        reason: Why it was lost, one line.
        counted: Whether it counts against the retry cap (False for a bystander).
    """

    node: str | None
    reason: str
    counted: bool = True


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator registering a backend under ``name``."""
    return BACKENDS.register(name)  # type: ignore[return-value]


def set_threads(cfg: RunConfig) -> None:
    """Apply the run's fixed thread count, if any (see :mod:`cellblock.core.threads`; the
    pipeline sets each trial's own count from its size)."""
    from cellblock.core.threads import apply_threads, threads_for

    apply_threads(threads_for(cfg))


class Backend(ABC):
    """Runs trials' evaluations.

    Args:
        prepared: The validated run (config, pipeline...).
    """

    def __init__(self, prepared: Any) -> None:
        self.prepared = prepared
        self.config = prepared.config
        self.seed = prepared.config.seed

    @classmethod  # noqa: B027  (optional hook, a no-op by default)
    def check_config(cls, cfg: RunConfig) -> None:
        """Validate backend options before anything is written (raise ConfigError)."""

    @property
    def capacity(self) -> int:
        """Trials that may be in flight at once."""
        return 1

    def drive(self, book: Any, after: Callable[[int], None]) -> None:
        """Run trials until the book's budget is spent or the space is exhausted.

        The default loop keeps up to :attr:`capacity` trials (plus :meth:`ahead`, queued)
        in flight through :meth:`submit` and :meth:`wait`, submitting the trials it starts
        at once in the order of :meth:`order` (they are asked and recorded in ask order);
        an attempt that :meth:`wait` reports :class:`Lost` goes back to the book (``lose``:
        re-run first, or held past the retry cap). A
        backend with its own scheduler (Ray Tune) overrides this, using the same ``book``
        (``next_trial``, ``start``, ``finish``, ``lose``) so that the records are the same.

        Args:
            book: The run's :class:`cellblock.run.book.TrialBook`.
            after: Called with the number of trials that just finished.
        """
        while book.done + len(book.held) < book.budget:
            batch: list[Trial] = []
            while self.capacity + self.ahead(book) > len(book.in_flight) and book.wants_more():
                trial = book.next_trial()
                if trial is None:
                    break
                book.start(trial)
                batch.append(trial)
            for trial in self.order(batch):
                self.submit(trial)
            if not book.in_flight:
                book.exhausted = not book.rerun
                return
            finished = 0
            for trial, outcome in self.wait():
                if isinstance(outcome, Lost):
                    book.lose(trial, outcome.node, outcome.reason, outcome.counted)
                else:
                    book.finish(trial, outcome, self.node_of(trial))
                    finished += 1
            after(finished)

    def ahead(self, book: Any) -> int:
        """Trials to start beyond :attr:`capacity`, queued until a slot frees (default 0)."""
        return 0

    def order(self, batch: list[Trial]) -> list[Trial]:
        """The order in which trials started together are submitted (default: as asked)."""
        return batch

    def node_of(self, trial: Trial) -> str | None:
        """Where ``trial``'s finished attempt ran (None: this machine)."""
        return None

    @abstractmethod
    def submit(self, trial: Trial) -> None:
        """Start evaluating ``trial``."""

    @abstractmethod
    def wait(self) -> list[tuple[Trial, Outcome | Lost]]:
        """Block until at least one submitted trial finished or was lost; return those."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release workers."""


@register_backend("local")
class LocalBackend(Backend):
    """Evaluates in the search process, one trial at a time."""

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        _no_scheduler(cfg, "local")
        if cfg.concurrency != 1:
            raise ConfigError(
                "the local backend runs one trial at a time; use --backend process or ray "
                "for --concurrency > 1"
            )

    def __init__(self, prepared: Any) -> None:
        super().__init__(prepared)
        set_threads(self.config)
        self.queue: list[Trial] = []

    def submit(self, trial: Trial) -> None:
        self.queue.append(trial)

    def wait(self) -> list[tuple[Trial, Outcome]]:
        trial = self.queue.pop(0)
        return [(trial, self.prepared.pipeline(trial.arch, trial_seed(self.seed, trial.arch_id)))]


def _no_scheduler(cfg: RunConfig, backend: str) -> None:
    if cfg.scheduler not in (None, "none"):
        raise ConfigError(
            f"--scheduler {cfg.scheduler} needs --backend ray (Ray Tune's schedulers); "
            f"the {backend} backend trains every trial fully"
        )
