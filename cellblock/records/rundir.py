"""The layout of a run directory: every file name of a run, in one place.

``trials.jsonl`` is the source of truth; every other file is derived from it (and
rewritten atomically), except the final trainings under ``train/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cellblock.core.runlock import LOCK_NAME


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory.

    Args:
        path: The run directory.
    """

    path: Path

    CONFIG = "config.yaml"
    LOG = "trials.jsonl"
    TRIALS_CSV = "trials.csv"
    PARETO_CSV = "pareto.csv"
    PARETO_PNG = "pareto.png"
    REPORT = "report.html"
    OPTUNA_JOURNAL = "optuna.journal"
    #: Ray Tune's own state while a ``--backend ray`` search runs (removed at its end, and at
    #: the start of the next one when a killed driver left it).
    TUNE_SCRATCH = ".tune"
    LOCK = LOCK_NAME
    #: Files rebuilt from the log (``cellblock repair`` and every run rewrite them).
    DERIVED = (TRIALS_CSV, PARETO_CSV, PARETO_PNG, REPORT)
    #: Files of one final training (``cellblock train``), under :meth:`train_dir`.
    WEIGHTS = "weights.pt"
    CHECKPOINT = "checkpoint.pt"
    METRICS = "metrics.json"

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        """The resolved config (a copy of the log's last ``run_start``)."""
        return self.path / self.CONFIG

    @property
    def log(self) -> Path:
        """The append-only trial log."""
        return self.path / self.LOG

    @property
    def trials_csv(self) -> Path:
        return self.path / self.TRIALS_CSV

    @property
    def pareto_csv(self) -> Path:
        return self.path / self.PARETO_CSV

    @property
    def pareto_png(self) -> Path:
        return self.path / self.PARETO_PNG

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def optuna_journal(self) -> Path:
        return self.path / self.OPTUNA_JOURNAL

    @property
    def tune_scratch(self) -> Path:
        return self.path / self.TUNE_SCRATCH

    def train_dir(self, trial: int) -> Path:
        """Where ``cellblock train`` puts trial ``trial``'s final training (export looks there)."""
        return self.path / "train" / f"trial_{trial}"

    def weights(self, trial: int) -> Path:
        """The trained weights of trial ``trial``."""
        return self.train_dir(trial) / self.WEIGHTS
