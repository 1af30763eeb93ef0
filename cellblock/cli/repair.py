"""``cellblock repair``: rebuild config.yaml from the log, cut a torn last log line."""

from __future__ import annotations

import argparse

from cellblock.cli.common import command


@command("repair")
def _add_repair(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("repair", help="rebuild config.yaml from the log, cut a torn last log line")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=_repair)


def _repair(args: argparse.Namespace) -> int:
    from cellblock.run.repair import repair

    done = repair(args.run)
    for line in done or ["nothing to repair"]:
        print(f"{args.run}: {line}")
    return 0
