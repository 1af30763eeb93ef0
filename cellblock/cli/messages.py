"""How the CLI shows the library's warnings and log lines to the user.

Library code prints nothing: it raises :class:`~cellblock.core.errors.CellblockWarning`
with :func:`warnings.warn` for what the user should fix, and logs progress (INFO) and
notices (WARNING) with :mod:`logging` under the ``cellblock`` logger. While a command
runs, :func:`user_messages` shows them on stderr, one line each:

* a ``CellblockWarning``: ``cellblock: warning: <message>`` (every time it is raised);
* a ``cellblock.*`` log record at WARNING or above: ``cellblock: notice: <message>``;
* one at INFO: ``<message>`` as it is.

Other warnings keep Python's own format.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from cellblock.core.errors import CellblockWarning

#: The logger every library module's ``logging.getLogger(__name__)`` descends from.
LOGGER = "cellblock"


def format_warning(message: Warning | str) -> str:
    """The one line shown for a :class:`CellblockWarning`."""
    return f"cellblock: warning: {' '.join(str(message).split())}\n"


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (tests swap it), one line per record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream: TextIO = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001  (logging never raises into the caller)
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"cellblock: notice: {text}" if record.levelno >= logging.WARNING else text


@contextmanager
def user_messages() -> Iterator[None]:
    """Show the library's warnings and log lines on stderr while the block runs."""
    logger = logging.getLogger(LOGGER)
    handler = _StderrHandler(logging.INFO)
    handler.setFormatter(_Formatter())
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # shown here once, not again by a handler of the root logger
    with warnings.catch_warnings():
        warnings.simplefilter("always", CellblockWarning)
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            if issubclass(category, CellblockWarning):
                stream = file or sys.stderr
                stream.write(format_warning(message))
                stream.flush()
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
