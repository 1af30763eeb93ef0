"""``cellblock bench``: compare strategies on a tabular benchmark."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cellblock.cli.common import command, show_defaults
from cellblock.cli.options import add_config_option
from cellblock.core.errors import ConfigError


@command("bench")
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench",
                       help="compare strategies on a tabular benchmark (best, hv_ratio vs budget)")
    p.add_argument("--space", default="nb201", help="space with a table key (default nb201)")
    add_config_option(p, "space_args", dest="space_arg")  # as search's
    p.add_argument("--table", required=True, help="benchmark table (CSV or parquet)")
    p.add_argument("--metric",
                   help="table column used as accuracy (default: its only numeric column)")
    p.add_argument("--strategies", default="random,evolution,predictive",
                   help="comma-separated strategy names")
    p.add_argument("--seeds", type=int, default=10, help="seeds per strategy (START..START+N-1)")
    p.add_argument("--seed-start", type=int, default=0,
                   help="first seed (e.g. 100 to tune on seeds kept apart from the reported ones)")
    p.add_argument("--budgets", default="25,50,100,200,300",
                   help="comma-separated evaluation budgets")
    p.add_argument("--objectives", default="accuracy,macs", help="objectives of the hv_ratio runs")
    p.add_argument("--workers", type=int, default=2, help="processes for missing network costs")
    p.add_argument("--out", required=True, help="output directory (bench.csv, bench.md, bench.png)")
    p.set_defaults(func=_bench)
    show_defaults(p)


def command_line(args: argparse.Namespace) -> str:
    """The canonical ``cellblock bench`` command of parsed ``args``."""
    parts = ["cellblock", "bench", "--space", args.space]
    for k, v in args.space_arg or []:
        parts += ["--space-arg", f"{k}={v}"]
    parts += ["--table", args.table]
    if args.metric:
        parts += ["--metric", args.metric]
    parts += ["--strategies", args.strategies, "--seeds", str(args.seeds)]
    if args.seed_start:
        parts += ["--seed-start", str(args.seed_start)]
    parts += ["--budgets", args.budgets,
              "--objectives", args.objectives, "--out", args.out]
    return shlex.join(parts)


def _bench(args: argparse.Namespace) -> int:
    from cellblock.core.objectives import parse_objectives
    from cellblock.run.bench import (
        check_strategies,
        parse_budgets,
        run_bench,
        table_components,
        write_csv,
        write_markdown,
        write_plot,
    )

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise ConfigError("--strategies must name at least one strategy, e.g. random,evolution")
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    budgets = parse_budgets(args.budgets)
    objectives = parse_objectives(args.objectives)
    comps = table_components(args.space, dict(args.space_arg or []), args.table, args.metric,
                             objectives)
    space = comps.space
    check_strategies(strategies, space, objectives)
    size = space.size()
    if size.exact and max(budgets) > size.value:
        raise ConfigError(
            f"budget {max(budgets)} exceeds the {int(size.value)} architectures of space "
            f"{space.name!r}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    result = run_bench(comps, strategies, seeds, budgets, objectives, args.workers, log)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "bench.csv", result.rows)
    write_markdown(out / "bench.md", result, budgets, command_line(args), args.seeds)
    write_plot(out / "bench.png", result, budgets)
    print((out / "bench.md").read_text(encoding="utf-8"))
    return 0
