"""Where an Optuna strategy keeps its study: memory, a journal file or a database.

:func:`check_storage` validates the ``storage`` option at construction (nothing is
written); :func:`open_study` opens the storage and creates or loads the study on
first use, checking its directions against the run's; :func:`settle_study` fails the
trials a dead process left behind, before a resumed strategy reconciles the study.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from cellblock.core.errors import ConfigError, RunError
from cellblock.records.rundir import RunDir
from cellblock.strategies.optuna.samplers import quiet

JOURNAL_NAME = RunDir.OPTUNA_JOURNAL
ARCH_ATTR = "arch_id"  # user attribute of an Optuna trial: the arch_id of its architecture
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def check_storage(storage: Any) -> tuple[str, str | None]:
    """``(kind, location)`` of a storage option: memory, journal (a path) or rdb (a URL).

    Raises:
        ConfigError: for a value that is no path or URL, an unknown database, a missing
            database driver, a directory, or a sqlite file in a missing directory.
    """
    if storage is None:
        return "memory", None
    if not isinstance(storage, (str, Path)) or not str(storage).strip():
        raise ConfigError(f"storage must be a journal file path or a database URL, got {storage!r}")
    text = str(storage).strip()
    if "://" not in text:
        path = Path(text).expanduser()
        if path.is_dir():
            raise ConfigError(f"storage {text!r} is a directory; give a journal file path such as "
                              f"{str(path / JOURNAL_NAME)!r}")
        for parent in path.parents:
            if parent.exists() and not parent.is_dir():
                raise ConfigError(f"storage {text!r}: {str(parent)!r} is a file, not a directory")
        return "journal", str(path)
    return "rdb", _check_rdb(text)


def _check_rdb(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except (ArgumentError, ValueError):
        raise ConfigError(f"bad storage URL {url!r}; use a journal file path or an SQLAlchemy "
                          "URL such as sqlite:///optuna.db or postgresql://user@host/db") from None
    except NoSuchModuleError:
        raise ConfigError(f"storage URL {url!r} names an unknown database {url.split(':')[0]!r}; "
                          "use a journal file path, sqlite:///..., postgresql://... or "
                          "mysql://...") from None
    except ImportError as exc:
        raise ConfigError(f"storage URL {url!r} needs a database driver that is not installed "
                          f"({exc.name or exc}); pip install it or use a journal file "
                          "path") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().parent
        if not folder.is_dir():
            raise ConfigError(f"storage URL {url!r}: directory {str(folder)!r} does not exist")
    return url


def _open_storage(kind: str, location: str | None) -> Any:
    openers: dict[str, Callable[[str | None], Any]] = {
        "memory": lambda _: optuna.storages.InMemoryStorage(),
        "journal": _open_journal,
        "rdb": lambda url: optuna.storages.RDBStorage(url),
    }
    try:
        return openers[kind](location)
    except (OSError, ImportError, ValueError) as exc:
        raise RunError(f"cannot open the Optuna storage {location!r}: {exc}") from None


def _open_journal(path: str | None) -> Any:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    assert path is not None  # noqa: S101  (internal: check_storage gave a path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # the storage's own folder
    return JournalStorage(JournalFileBackend(path))


def open_study(kind: str, location: str | None, study_name: str, directions: Sequence[str],
               sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create or load study ``study_name`` in the storage ``(kind, location)`` of
    :func:`check_storage`.

    Raises:
        RunError: the storage cannot be opened.
        ConfigError: the stored study has other directions than ``directions``.
    """
    storage = _open_storage(kind, location)
    directions = list(directions)
    with quiet():
        study = optuna.create_study(storage=storage, study_name=study_name,
                                    directions=directions, load_if_exists=True, sampler=sampler)
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"Optuna study {study_name!r} in {location!r} has "
                          f"directions {[d.name.lower() for d in study.directions]}, this run "
                          f"{directions}; use another storage or study name")
    return study


def settle_study(study: optuna.Study, keep: set[int]) -> tuple[set[str | None], set[int]]:
    """Fail what a dead process left: enqueued (WAITING) trials and RUNNING ones not in ``keep``.

    Returns:
        The arch_ids of the finished trials, and the numbers of the trials that were
        running (``keep`` among them, still running).
    """
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.tell(study.ask(), state=TrialState.FAIL)  # enqueued by a process that died
    told = {t.user_attrs.get(ARCH_ATTR) for t in study.get_trials(deepcopy=False, states=_FINISHED)}
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for number in sorted(running - keep):  # left by a crash: cellblock re-runs those trials
        study.tell(number, state=TrialState.FAIL)
    return told, running
