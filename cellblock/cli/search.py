"""``cellblock search``: run or continue a search.

Its options are the config keys (:data:`cellblock.core.config.FIELDS`), built by
:mod:`cellblock.cli.options`.
"""

from __future__ import annotations

import argparse
import sys
import time

from cellblock.cli.common import command
from cellblock.cli.options import add_config_options, config_overrides


@command("search")
def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run a search (continues an existing run directory)")
    p.add_argument("config", nargs="?", help="YAML config file (CLI options override it)")
    add_config_options(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    from cellblock.core import config as config_mod
    from cellblock.run.backends.startup import prestart

    layers = [config_mod.load_yaml(args.config)] if args.config else []
    cfg = config_mod.resolve(*layers, config_overrides(args))
    prestart(cfg)  # workers' imports begin now, beside this process's own (torch)
    from cellblock.pareto.results import load_run, next_steps, summary
    from cellblock.run.runner import Runner, prepare

    prepared = prepare(cfg)
    from cellblock.core.threads import describe
    from cellblock.core.threads import summary as threads_summary

    print(f"run directory: {prepared.run_dir}", file=sys.stderr)
    if prepared.slots is not None:
        print(prepared.slots.reason, file=sys.stderr)
    print(threads_summary(describe(prepared.config)), file=sys.stderr)
    t0 = time.perf_counter()
    Runner(prepared, progress=not args.no_progress).run()
    wall = time.perf_counter() - t0
    data = load_run(prepared.run_dir)
    print(summary(data))
    print(f"wall time of this invocation: {wall:.1f} s")
    print(next_steps(data))
    return 0
