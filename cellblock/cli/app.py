"""The ``cellblock`` command line: builds the parser from the sub-command modules and runs one.

Bad input prints one line, ``cellblock: error: ...``, and exits with code 2; no run
directory is created or changed. Sub-command modules are imported when the parser is
built; each imports its heavy machinery inside its handler, so start-up stays light.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from cellblock.cli.common import COMMANDS, Parser
from cellblock.core.errors import CellblockError

#: Modules that add sub-commands with ``@command``, in ``--help`` order.
COMMAND_MODULES: tuple[str, ...] = tuple(
    f"cellblock.cli.{name}"
    for name in ("search", "show", "spaces", "report", "export", "train", "bench", "supernet")
)


def build_parser() -> Parser:
    """The argument parser with every registered sub-command."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = Parser(prog="cellblock", description="Neural architecture search: accuracy vs cost.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cellblock`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["--help"]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CellblockError as exc:
        message = " ".join(str(exc).split())
        print(f"cellblock: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cellblock: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["COMMAND_MODULES", "build_parser", "main"]
