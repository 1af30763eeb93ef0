"""``cellblock search``: run or continue a search."""

from __future__ import annotations

import argparse
import sys
import time

from cellblock.cli.common import _key_value, _overrides, command, show_config_defaults

SEARCH_OPTIONS = (
    "space", "strategy", "evaluator", "table", "metric", "supernet", "supernet_prior", "trials", "epochs", "batch_size", "lr", "dataset",
    "val_fraction", "data_dir", "download", "objectives", "device", "out", "seed", "storage",
    "backend", "address", "concurrency", "resources_per_trial", "scheduler", "threads_per_trial", "infra_retries",
    "grace_epochs", "reduction_factor", "allow_changed_inputs", "remap_labels", "allow_unstable_latency",
    "latency_max_spread", "trials_per_gpu", "cuda_graphs", "cudnn_benchmark", "latency_runtime", "latency_table",
)


def _auto_or_int(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer, got {text!r}") from None


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
    p.add_argument("--supernet-prior", dest="supernet_prior",
                   help="none, macs or params: --evaluator supernet also reports supernet_score, its "
                        "accuracy fused with this cost (use it as an objective; default none)")
    p.add_argument("--trials", type=int, help="number of trials")
    p.add_argument("--epochs", type=int, help="training epochs per candidate")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="training batch size")
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
    p.add_argument("--seed", type=int, help="random seed of the search (and of each trial's init)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage of optuna:* strategies: journal file or SQLAlchemy URL "
                   "(default RUN/optuna.journal)")
    p.add_argument("--backend", help="where trials run: auto (a process pool packed on every "
                   "visible GPU, else local), local, process or ray")
    p.add_argument("--address", help="Ray cluster for --backend ray: auto or HOST:PORT "
                   "(default: a local Ray instance started for the run)")
    p.add_argument("--concurrency", type=_auto_or_int, metavar="N",
                   help="trials evaluated at the same time (default: GPUs x --trials-per-gpu with "
                   "GPUs, else 1); auto (--backend ray): as many as the cluster's resources allow, "
                   "following nodes that join or leave")
    p.add_argument("--infra-retries", dest="infra_retries", type=int, metavar="N",
                   help="re-runs of a trial whose worker process, actor or node died (default 2); "
                   "an exception of the candidate is FAILED and never re-run")
    p.add_argument("--resources-per-trial", dest="resources_per_trial", metavar="SPEC",
                   help="Ray resources of one trial, e.g. cpu=1,gpu=0.5 (default cpu=1, "
                   "plus gpu=1/K with GPUs: K = --trials-per-gpu)")
    p.add_argument("--scheduler", help="early stopping (ray backend): none, asha, mo-asha")
    p.add_argument("--grace-epochs", dest="grace_epochs", type=int,
                   help="epochs before the first early-stopping rung (default 1)")
    p.add_argument("--reduction-factor", dest="reduction_factor", type=int,
                   help="early stopping keeps the top 1/N at each rung (default 3)")
    p.add_argument("--threads-per-trial", dest="threads_per_trial", type=int,
                   help="torch threads per trial; may change when a run is continued (default: 1 "
                   "for candidates under 5e8 MACs per training batch or with --concurrency > 1, "
                   "else the cores free of other load)")
    p.add_argument("--trials-per-gpu", dest="trials_per_gpu", type=_auto_or_int, metavar="K",
                   help="trials packed on each GPU: auto (from CPU cores and GPU memory) or K")
    p.add_argument("--cuda-graphs", dest="cuda_graphs", action=argparse.BooleanOptionalAction,
                   help="capture training steps as CUDA graphs on CUDA (eager when capture fails)")
    p.add_argument("--cudnn-benchmark", dest="cudnn_benchmark", action=argparse.BooleanOptionalAction,
                   help="cudnn autotuning of each trial's training shapes on CUDA; without either flag: auto, on for fixed shapes of networks over 1e9 MACs per batch")
    p.add_argument("--latency-runtime", dest="latency_runtime",
                   help="runtime of measured latency: torch (default), torchscript, onnxruntime")
    p.add_argument("--latency-table", dest="latency_table", metavar="FILE",
                   help="latency_ms predicted by this table ('cellblock latency profile'), not measured")
    p.add_argument("--remap-labels", dest="remap_labels", action="store_const", const=True,
                   help="map an .npz's non-contiguous labels to 0..K-1 (recorded) instead of refusing them")
    p.add_argument("--allow-changed-inputs", dest="allow_changed_inputs", action="store_const", const=True,
                   help="continue although the dataset, supernet, table or space file changed (recorded)")
    p.add_argument("--latency-max-spread", dest="latency_max_spread", type=float, metavar="RATIO",
                   help="latency p90/p10 above which it is re-measured, then marked unstable")
    p.add_argument("--allow-unstable-latency", dest="allow_unstable_latency", action="store_const",
                   const=True, help="let trials with an unstable latency onto the Pareto front")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_search)
    show_config_defaults(p)


def _search(args: argparse.Namespace) -> int:
    from cellblock.run import config as config_mod
    from cellblock.run.backends.startup import prestart

    layers = [config_mod.load_yaml(args.config)] if args.config else []
    cfg = config_mod.resolve(*layers, _overrides(args, SEARCH_OPTIONS))
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
