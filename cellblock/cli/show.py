"""``cellblock show``: summary and Pareto table of a run."""

from __future__ import annotations

import argparse

from cellblock.cli.common import command


@command("show")
def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="summary and Pareto table of a run")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from cellblock.pareto.results import load_run, summary

    print(summary(load_run(args.run)))
    return 0
