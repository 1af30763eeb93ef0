"""The layout of a run directory: every file name of a run, in one place.

``trials.jsonl`` is the source of truth; every other file is derived from it (and
rewritten atomically), except the final trainings under ``train/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cellblock.core.errors import ConfigError
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
    def tune_scratch(self) -> Path:
        return self.path / self.TUNE_SCRATCH

    def train_dir(self, trial: int) -> Path:
        """Where ``cellblock train`` puts trial ``trial``'s final training (export looks there)."""
        return self.path / "train" / f"trial_{trial}"

    def weights(self, trial: int) -> Path:
        """The trained weights of trial ``trial``."""
        return self.train_dir(trial) / self.WEIGHTS


#: Files a run records (the log, its config copy, trainings' checkpoints, weights and
#: metrics, Optuna's journal, the lock): no ``--out`` of any command writes over one.
RECORD_FILES = (RunDir.LOG, RunDir.CONFIG, RunDir.CHECKPOINT, RunDir.WEIGHTS, RunDir.METRICS,
                RunDir.OPTUNA_JOURNAL, LOCK_NAME)


def check_out_file(path: str | Path, ours: Callable[[bytes], bool] | None = None) -> Path:
    """Refuse an output file ``--out`` that would write over a record or a user's file.

    Args:
        path: The file a command is about to write.
        ours: Tells from the first 4 KiB of an existing file whether this command wrote it
            (it may then be replaced); None: any existing file that is not a record is replaced.

    Raises:
        ConfigError: one line: ``path`` is a directory, a record file (:data:`RECORD_FILES`),
            or (with ``ours``) an existing file this command did not write.
    """
    path = Path(path)
    where = f"--out {str(path)!r}"
    if path.is_dir():
        raise ConfigError(f"{where} is a directory; give a file name")
    if path.name in RECORD_FILES:
        raise ConfigError(f"{where} names a record file of a run ({path.name}); write to another "
                          "file (nothing was changed)")
    if ours is not None and path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if not ours(head):
            raise ConfigError(f"{where} exists and was not written by this command; choose another "
                              "file or delete it yourself (nothing was changed)")
    return path
