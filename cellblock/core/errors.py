"""One exception hierarchy for every user-facing error.

Every error says what is wrong and how to fix it. The CLI prints
``cellblock: error: <message>`` on one line and exits with code 2.
"""

from __future__ import annotations


class CellblockError(Exception):
    """Base class of every error cellblock raises on bad input or state."""


class ConfigError(CellblockError):
    """A configuration value or CLI option is unknown, of the wrong type or out of range."""


class RegistryError(CellblockError):
    """A name is registered twice, or an unknown name is looked up."""


class SpaceError(CellblockError):
    """A search space function is malformed (bad decision name, conflicting domains...)."""


class ArchValidationError(SpaceError):
    """An architecture dict does not fit its space (unknown, missing or out-of-domain decision)."""


class DataError(CellblockError):
    """A dataset is missing, malformed or cannot be loaded."""


class EvaluationError(CellblockError):
    """A candidate could not be evaluated (the trial is marked FAILED with this message)."""


class RunError(CellblockError):
    """A run directory is inconsistent with the requested run."""


class CheckpointError(CellblockError):
    """A ``.pt`` file is missing or corrupt, or holds more than tensors and plain values."""


class ExportError(CellblockError):
    """A network cannot be exported, or an exported copy does not match the original."""


class CellblockWarning(UserWarning):
    """Something the user should fix that does not stop the command (``warnings.warn``).

    The CLI shows it as ``cellblock: warning: <message>`` on one line on stderr.
    """
