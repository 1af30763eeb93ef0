"""``cellblock report``: the interactive HTML report of a run."""

from __future__ import annotations

import argparse

from cellblock.cli.common import command


@command("report")
def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write RUN/report.html: interactive, self-contained, offline")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", help="HTML file (default RUN/report.html; an existing --out must be an "
                   "earlier report)")
    p.add_argument("--allow-changed-inputs", dest="allow_changed_inputs", action="store_true",
                   help="go on although the dataset, space file, table or supernet changed since "
                        "the search (as 'search --allow-changed-inputs')")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from cellblock.pareto.report import write_report
    from cellblock.pareto.results import load_run
    from cellblock.run.fingerprint import check_recorded_inputs

    check_recorded_inputs(load_run(args.run), args.allow_changed_inputs, "report")
    print(f"report: {write_report(args.run, args.out)}")
    return 0
