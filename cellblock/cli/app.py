"""The ``cellblock`` command line: builds the parser from the sub-command modules and runs one.

Bad input prints one line, ``cellblock: error: ...``, and exits with code 2; no run
directory is created or changed. Sub-command modules are imported when the parser is
built; each imports its heavy machinery inside its handler, so start-up stays light.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cellblock.cli.common import COMMANDS, Parser
from cellblock.cli.messages import user_messages
from cellblock.core.errors import CellblockError

#: Modules that add sub-commands with ``@command``, in ``--help`` order.
COMMAND_MODULES: tuple[str, ...] = tuple(
    f"cellblock.cli.{name}"
    for name in ("search", "show", "spaces", "report", "export", "train", "repair", "bench",
                 "supernet", "latency")
)


def build_parser() -> Parser:
    """The argument parser with every registered sub-command."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    from importlib.metadata import version  # the installed distribution's, not a package import

    __version__ = version("cellblock")

    parser = Parser(prog="cellblock", description="Neural architecture search: accuracy vs cost.")
    parser.add_argument("--version", action="version", version=f"cellblock {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add in COMMANDS.values():
        add(sub)
    return parser


#: OS errors that are the environment's, not a bug: one line and exit 2.
USER_ERRNOS = ("EROFS", "ENOTDIR", "EISDIR", "ENOSPC", "EDQUOT", "EACCES", "EPERM", "ENOENT",
               "EEXIST", "ENAMETOOLONG", "EMFILE", "ENFILE", "EIO", "ELOOP", "EXDEV")


def os_error_message(exc: OSError) -> str | None:
    """One line for an OS error caused by the environment (None for anything else)."""
    import errno
    import os

    name = errno.errorcode.get(exc.errno or 0, "")
    if name not in USER_ERRNOS:
        return None
    where = f" {str(exc.filename)!r}" if exc.filename else ""
    hints = {"EROFS": "the file system is read-only; choose a writable --out",
             "ENOSPC": "the disk is full; free space or choose another --out",
             "EDQUOT": "the disk quota is exceeded; free space or choose another --out",
             "EACCES": "permission denied; choose a directory you can write or fix its permissions",
             "EPERM": "operation not permitted; choose a directory you can write",
             "ENOTDIR": "a part of the path is a file, not a directory; choose another path"}
    hint = hints.get(name, "check the path")
    return f"cannot access{where}: {os.strerror(exc.errno or 0)} ({name}); {hint}"


def _stdout_gone() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's exit flush is quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor behind stdout
        pass


def _what_was_kept(exc: BaseException) -> str:
    """What an interrupted command kept, from the trial counts a search attaches."""
    counts = getattr(exc, "trials_finished", None)
    if counts is None:
        return "what was finished is saved; run the same command again to continue"
    now, total = counts
    if total == 0:
        return "no trial had finished, so none is saved; run the same command again to start"
    if now == 0:
        return (f"no trial finished in this invocation (the run's {total} earlier ones are kept); "
                "run the same command again to continue")
    return (f"{now} trial(s) finished in this invocation and are saved ({total} in the run); run "
            "the same command again to continue")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cellblock`` command; returns the exit code."""
    from cellblock.core.signals import install_sigterm

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["--help"]
    parser = build_parser()
    args = parser.parse_args(argv)
    install_sigterm()
    with user_messages():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; a user error, a signal or an OS error is one line on stderr."""
    from cellblock.core.signals import Terminated

    try:
        return int(args.func(args) or 0)
    except CellblockError as exc:
        message = " ".join(str(exc).split())
        print(f"cellblock: error: {message}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"cellblock: terminated (SIGTERM); {_what_was_kept(exc)}", file=sys.stderr)
        return 143
    except KeyboardInterrupt as exc:
        print(f"cellblock: interrupted; {_what_was_kept(exc)}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _stdout_gone()
        print("cellblock: error: the output pipe was closed before everything was written "
              "(broken pipe)", file=sys.stderr)
        return 2
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:
            raise
        print(f"cellblock: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["COMMAND_MODULES", "build_parser", "main"]
