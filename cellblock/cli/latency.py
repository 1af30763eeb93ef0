"""``cellblock latency``: latency tables made on the target device, and their validation.

* ``profile``: time every distinct unit of a space in a runtime (no training, no data);
* ``check``: measure random whole networks here and compare with a table's predictions;
* ``measure``: time an exported ``model.onnx`` in onnxruntime (on a table's scale with ``--table``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cellblock.cli.common import _key_value, command
from cellblock.core.errors import ConfigError
from cellblock.core.fileio import atomic_write_text

TAU_WARNING = 0.8


def _space(name: str, pairs: list | None) -> Any:
    from cellblock.search_spaces import SearchSpace

    space = SearchSpace(name, **dict(pairs or []))
    defaults = space.arguments()
    for arg in SearchSpace.CONTEXT_ARGS:  # no dataset: the space's own input shape and classes
        if arg in defaults and arg not in space.kwargs:
            space.kwargs[arg] = defaults[arg]
    if "input_shape" not in space.arguments():
        raise ConfigError(
            f"space {space.name!r} has no input_shape argument; give --space-arg input_shape=[C, "
            "H, W]")
    return space


def _threads(n: int | None) -> None:
    import torch

    if n is not None:
        if n < 1:
            raise ConfigError(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)


def _timing_args(p: argparse.ArgumentParser, warmup: int, repeats: int) -> None:
    p.add_argument("--warmup", type=int, default=warmup,
                   help=f"untimed runs first (default {warmup})")
    p.add_argument("--repeats", type=int, default=repeats,
                   help=f"timed runs of each unit or network (default {repeats})")
    p.add_argument("--threads", type=int,
                   help="torch / onnxruntime compute threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")


@command("latency")
def _add_latency(sub: argparse._SubParsersAction) -> None:
    from cellblock.cli.common import Parser

    p = sub.add_parser("latency", help="latency tables of a target device: profile, check, measure")
    lsub = p.add_subparsers(dest="latency_command", metavar="ACTION", parser_class=Parser)
    lsub.required = True

    pr = lsub.add_parser("profile",
                         help="time every distinct unit of a space (no training, no data)")
    pr.add_argument("--space", default="blocks",
                    help="space name, module:function or file.py:function")
    pr.add_argument("--space-arg", action="append", type=_key_value, metavar="KEY=VALUE",
                    help="skeleton option, repeatable (YAML values), e.g. input_shape=[1,32,32]")
    pr.add_argument("--runtime", default="torch", help="torch, torchscript, onnxruntime")
    pr.add_argument("--out", required=True,
                    help="table file (JSON); an unfinished one is continued")
    pr.add_argument("--calibration", type=int, default=30,
                    help="whole networks timed to fit the per-network constant, and a cost per "
                         "kind of unit where cross-validation says it predicts better (default 30)")
    pr.add_argument("--clock", default="wall",
                    help="wall (default) or thread (CPU time of one thread)")
    pr.add_argument("--stat", default="median", choices=("median", "p10"),
                    help="statistic of the timed runs kept (default median; p10 is steadier on a "
                         "shared machine)")
    pr.add_argument("--normalise", default="reference", choices=("reference", "none"),
                    help="reference (default): time everything relative to a fixed reference "
                         "network run alongside, so a machine whose speed drifts gives one "
                         "consistent table; none: raw timings")
    pr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _timing_args(pr, 10, 100)
    pr.set_defaults(func=_profile)

    ch = lsub.add_parser("check",
                         help="measure N random networks here; Kendall tau, Spearman, MAPE")
    ch.add_argument("--table", required=True, help="latency table (JSON)")
    ch.add_argument("--space", default="blocks")
    ch.add_argument("--space-arg", action="append", type=_key_value, metavar="KEY=VALUE")
    ch.add_argument("--samples", type=int, default=100, help="random networks (default 100)")
    ch.add_argument("--seed", type=int, default=1234,
                    help="seed of the sampled networks (default 1234)")
    ch.add_argument("--runtime", help="runtime to measure in (default: the table's)")
    ch.add_argument("--clock", help="wall or thread (default: the table's)")
    ch.add_argument("--passes", type=int, default=1,
                    help="measure every network this many times; with 2, also report the noise "
                         "floor")
    ch.add_argument("--stat", choices=("median", "p10"),
                    help="statistic kept (default: the table's)")
    ch.add_argument("--out", help="write the result (with every network) to this JSON file")
    ch.add_argument("--no-progress", action="store_true")
    _timing_args(ch, 10, 100)
    ch.set_defaults(func=_check)

    me = lsub.add_parser("measure", help="time an exported model.onnx in onnxruntime")
    me.add_argument("--onnx", required=True, help="the model.onnx file (from cellblock export)")
    me.add_argument("--table",
                    help="an onnxruntime latency table: also measure on its scale (its clock, "
                                    "statistic and reference network), comparable with its "
                                    "predictions")
    me.add_argument("--clock", help="wall (default, or the table's) or thread")
    _timing_args(me, 10, 100)
    me.set_defaults(func=_measure)


def _profile(args: argparse.Namespace) -> int:
    from cellblock.evaluators.latency.table import profile

    _threads(args.threads)
    space = _space(args.space, args.space_arg)
    table = profile(space, args.runtime, args.out, device=args.device, warmup=args.warmup,
                    repeats=args.repeats, calibration=args.calibration, clock=args.clock,
                    statistic=args.stat,
                    normalise=args.normalise, progress=not args.no_progress)
    size = Path(args.out).stat().st_size
    print(f"{args.out}: {len(table['units'])} units, {size / 1024:.0f} KiB, constant "
          f"{table['constant_ms']:.4f} ms, profiled in {table['profile_s']:.1f} s "
          f"({table['runtime']}, {table['fingerprint']['threads']} threads, "
          f"{table['fingerprint']['name']})")
    return 0


def _check(args: argparse.Namespace) -> int:
    import torch

    from cellblock.evaluators.latency.check import check, summary_line
    from cellblock.evaluators.latency.table import LatencyTable

    if args.out:  # refused before the networks are timed
        from cellblock.records.rundir import check_out_file

        check_out_file(args.out)
    table = LatencyTable(args.table)
    _threads(args.threads if args.threads is not None else table.data["fingerprint"]["threads"])
    space = _space(args.space, args.space_arg)
    result = check(table, space, args.samples, runtime=args.runtime, device=args.device,
                   warmup=args.warmup, repeats=args.repeats, seed=args.seed, clock=args.clock,
                   statistic=args.stat, passes=args.passes,
                   progress=not args.no_progress)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1))
    print(summary_line(result))
    if not result["kendall_tau"] >= TAU_WARNING:
        print(f"cellblock: warning: Kendall tau {result['kendall_tau']:.3f} < {TAU_WARNING}: the "
              "table "
              "ranks networks poorly on this device (profiled on "
              f"{table.data['fingerprint']['name']}, {table.data['fingerprint']['threads']} "
              "threads; "
              f"here {torch.get_num_threads()} threads); profile it again here", file=sys.stderr)
    return 0


def _measure(args: argparse.Namespace) -> int:
    from cellblock.evaluators.latency.runtimes import measure_onnx_file

    if not Path(args.onnx).is_file():
        raise ConfigError(f"ONNX file {args.onnx!r} not found")
    if args.table:
        return _measure_on_table_scale(args)
    _threads(args.threads)
    clock = args.clock or "wall"
    res = measure_onnx_file(args.onnx, warmup=args.warmup, repeats=args.repeats, clock=clock)
    print(f"{args.onnx}: {res['latency_ms']:.4f} ms median (p10 {res['latency_p10_ms']:.4f}, "
          f"p90 {res['latency_p90_ms']:.4f}) over {args.repeats} runs in onnxruntime "
          f"({res['latency_device']['threads']} threads, {clock} clock)")
    return 0


def _measure_on_table_scale(args: argparse.Namespace) -> int:
    """``measure --table``: time the file as the table's networks were timed."""
    from cellblock.core.devices import resolve_device
    from cellblock.evaluators.latency.runtimes import onnx_file_runner
    from cellblock.evaluators.latency.table import LatencyTable, table_timing

    table = LatencyTable(args.table)
    if table.data["runtime"] != "onnxruntime":
        raise ConfigError(f"latency table {args.table!r} was made with runtime "
                          f"{table.data['runtime']!r}; "
                          "measure --onnx compares with an onnxruntime table")
    _threads(args.threads if args.threads is not None else table.data["fingerprint"]["threads"])
    timing = table_timing(table.data, resolve_device("cpu"), warmup=args.warmup,
                          repeats=args.repeats,
                          clock=args.clock)
    res = timing.time_many([onnx_file_runner(args.onnx)], rounds=10)[0]
    scale = (f"{res['norm_ms']:.4f} ms relative to the table's reference network "
             f"({table.data['reference']['ms']:.4f} ms there); raw " if timing.normalised else "")
    print(f"{args.onnx}: {scale}{res['raw_ms']:.4f} ms {timing.statistic} (median "
          f"{res['median_ms']:.4f}, p10 {res['p10_ms']:.4f}, p90 {res['p90_ms']:.4f}) "
          f"over {args.repeats} runs in onnxruntime ({table.data['fingerprint']['threads']} "
          f"threads, {timing.clock} clock); comparable with the predictions of {args.table}")
    return 0
