"""The ``cellblock`` command line.

Bad input prints one line, ``cellblock: error: ...``, and exits with code 2; no run
directory is created or changed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import yaml

from cellblock.errors import CellblockError, ConfigError

COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}

# Modules that add sub-commands with ``@command``; imported when the parser is built.
COMMAND_MODULES: tuple[str, ...] = ("cellblock.bench", "cellblock.export", "cellblock.final_train", "cellblock.report", "cellblock.supernet.cli",
                                  "cellblock.latency_cli")


def command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a function that adds the sub-command ``name`` to the parser."""

    def add(fn: Callable[..., None]) -> Callable[..., None]:
        COMMANDS[name] = fn
        return fn

    return add


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"cellblock: error: {message} (see '{self.prog} --help')\n")


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot parse the value in {text!r}") from None


def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    for group in ("space_args", "strategy_args"):
        pairs = getattr(args, group.replace("_args", "_arg"), None)
        if pairs:
            out[group] = dict(pairs)
    if getattr(args, "constraint", None):
        out["constraints"] = list(args.constraint)
    return out


SEARCH_OPTIONS = (
    "space", "strategy", "evaluator", "table", "metric", "supernet", "trials", "epochs", "batch_size", "lr", "dataset",
    "val_fraction", "data_dir", "download", "objectives", "device", "out", "seed", "storage",
    "backend", "address", "concurrency", "resources_per_trial", "scheduler", "threads_per_trial",
    "grace_epochs", "reduction_factor", "latency_runtime", "latency_table",
)


@command("search")
def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run a search (continues an existing run directory)")
    p.add_argument("config", nargs="?", help="YAML config file (CLI options override it)")
    p.add_argument("--space", help="space name, module:function or file.py:function")
    p.add_argument("--space-arg", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="space (skeleton) option, repeatable; VALUE is YAML, e.g. stages=2")
    p.add_argument("--strategy", help="random, evolution, nsga2, ...")
    p.add_argument("--strategy-arg", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="strategy option, repeatable, e.g. population_size=10")
    p.add_argument("--evaluator", help="how accuracy is obtained (default: train)")
    p.add_argument("--table", help="benchmark table (CSV or parquet) for --evaluator table")
    p.add_argument("--metric", help="table column used as accuracy for --evaluator table")
    p.add_argument("--supernet", help="supernet checkpoint for --evaluator supernet")
    p.add_argument("--trials", type=int, help="number of trials")
    p.add_argument("--epochs", type=int, help="training epochs per candidate")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--dataset", help="digits, mnist, fashion-mnist, cifar10, cifar100, svhn, DIR or FILE.npz")
    p.add_argument("--val-fraction", dest="val_fraction", type=float, metavar="F",
                   help="fraction held out for validation (default 0.15; 0.1 of torchvision train sets)")
    p.add_argument("--data-dir", dest="data_dir", help="directory of torchvision datasets")
    p.add_argument("--download", action="store_const", const=True, help="download the dataset if missing")
    p.add_argument("--objectives", help="comma-separated metrics, e.g. accuracy,macs,latency_ms")
    p.add_argument("--constraint", action="append", metavar="EXPR", help="e.g. 'macs<=5M', repeatable")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--out", help="run directory (default results/runs/<space>-<dataset>-<strategy>-seed<seed>)")
    p.add_argument("--seed", type=int)
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage of optuna:* strategies: journal file or SQLAlchemy URL "
                   "(default RUN/optuna.journal)")
    p.add_argument("--backend", help="where trials run: local, process or ray")
    p.add_argument("--address", help="Ray cluster for --backend ray: auto or HOST:PORT "
                   "(default: a local Ray instance started for the run)")
    p.add_argument("--concurrency", type=int, help="trials evaluated at the same time")
    p.add_argument("--resources-per-trial", dest="resources_per_trial", metavar="SPEC",
                   help="Ray resources of one trial, e.g. cpu=1,gpu=0.5 (default cpu=1)")
    p.add_argument("--scheduler", help="early stopping (ray backend): none, asha, mo-asha")
    p.add_argument("--grace-epochs", dest="grace_epochs", type=int,
                   help="epochs before the first early-stopping rung (default 1)")
    p.add_argument("--reduction-factor", dest="reduction_factor", type=int,
                   help="early stopping keeps the top 1/N at each rung (default 3)")
    p.add_argument("--threads-per-trial", dest="threads_per_trial", type=int,
                   help="torch threads per trial")
    p.add_argument("--latency-runtime", dest="latency_runtime",
                   help="runtime of measured latency: torch (default), torchscript, onnxruntime")
    p.add_argument("--latency-table", dest="latency_table", metavar="FILE",
                   help="latency_ms predicted by this table ('cellblock latency profile'), not measured")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    from cellblock import config as config_mod
    from cellblock.results import load_run, summary
    from cellblock.runner import Runner, prepare

    layers = [config_mod.load_yaml(args.config)] if args.config else []
    cfg = config_mod.resolve(*layers, _overrides(args, SEARCH_OPTIONS))
    prepared = prepare(cfg)
    print(f"run directory: {prepared.run_dir}", file=sys.stderr)
    t0 = time.perf_counter()
    Runner(prepared, progress=not args.no_progress).run()
    wall = time.perf_counter() - t0
    print(summary(load_run(prepared.run_dir)))
    print(f"wall time of this invocation: {wall:.1f} s")
    return 0


@command("show")
def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="summary and Pareto table of a run")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from cellblock.results import load_run, summary

    print(summary(load_run(args.run)))
    return 0


@command("spaces")
def _add_spaces(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spaces", help="built-in spaces (with sizes) and registered blocks")
    p.set_defaults(func=_spaces)


def _spaces(args: argparse.Namespace) -> int:
    from cellblock.search_spaces import SPACES, SearchSpace
    from cellblock.search_spaces.blocks import BLOCKS

    print("spaces (default skeleton):")
    for name in SPACES.names():
        try:
            space = SearchSpace(name)
            decisions = len(space.sample(__import__("numpy").random.default_rng(0)))
            print(f"  {name:<12} size {str(space.size()):>14}   ({decisions} decisions in a sample)")
        except CellblockError as exc:
            print(f"  {name:<12} (needs options: {exc})")
    from cellblock.search_spaces.blocks_space import OPTION_ARGS

    skeleton = SearchSpace("blocks").arguments()
    print("blocks (option choices of the default blocks skeleton; 'own': the block class's "
          "default choices, where they differ):")
    for name in BLOCKS.names():
        options = getattr(BLOCKS.get(name), "options", {}) or {}
        shown = []
        for k, v in options.items():
            arg = OPTION_ARGS.get(k)
            used = list(skeleton[arg]) if arg in skeleton else list(v)
            shown.append(f"{k} {used}" + (f" (own {list(v)})" if used != list(v) else ""))
        print(f"  {name:<12} options: {', '.join(shown) or '-'}")
    return 0


def build_parser() -> Parser:
    """The argument parser with every registered sub-command."""
    import importlib

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


__all__ = ["ConfigError", "build_parser", "main"]
