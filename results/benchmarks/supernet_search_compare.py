"""Benchmark: a search with the supernet evaluator against one with ``--evaluator train``
at the same wall time (issue 14), on digits (``blocks`` space), one torch thread.

1. ``cellblock supernet train`` (the preset's skeleton, digits, ``--val-fraction``), then
   ``cellblock search --evaluator supernet --trials N``: wall time W = both commands.
2. ``cellblock search --evaluator train --trials M`` (same space, strategy, seed and
   split); only the trials that ended within W of the command's launch count (M is a cap).
3. The best architecture of each (highest ``accuracy`` metric among the trials counted;
   with ``--supernet-prior`` the supernet search optimises and picks by ``supernet_score``)
   is trained stand-alone ``--seeds`` times for ``--final-epochs`` epochs (default
   ``--epochs``) with the rank recipe (``supernet rank``'s stand-alone training); the
   mean ± std validation accuracy of each is printed, with W and the trials each search
   evaluated.

``--final-only`` skips steps 1-2 and trains the two architectures of an earlier run's
``DIR/compare.json`` again for ``--final-epochs``, adding ``final_<E>_epochs`` to it.

Usage:

    OMP_NUM_THREADS=1 python results/benchmarks/supernet_search_compare.py DIR \\
        [--preset supernet] [--supernet-trials 300] [--train-trials 60] [--seeds 3] \\
        [--supernet-epochs 8] [--supernet-prior macs] [--space-arg K=V ...] [--final-epochs 32]
    OMP_NUM_THREADS=1 python results/benchmarks/supernet_search_compare.py DIR --final-only \
        --final-epochs 32 [--preset ...] [--space-arg K=V ...]   # the same skeleton as DIR's run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from cellblock.data import load_dataset
from cellblock.evaluators.training import TrainConfig, train_and_evaluate
from cellblock.records.log import read_events, replay_trials
from cellblock.search_spaces import SearchSpace

sys.path.insert(0, str(Path(__file__).parent))
from supernet_digits import PRESETS  # noqa: E402

LAUNCHED: dict[str, float] = {}


def run(cmd: list[str], name: str = "") -> float:
    print("$", " ".join(cmd[2:]), f"  # load {os.getloadavg()[0]:.2f}", flush=True)
    LAUNCHED[name] = time.time()
    t0 = time.perf_counter()
    subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def best_within(run_dir: Path, launched: float, wall_s: float | None,
                metric: str = "accuracy") -> tuple[dict, float, int]:
    """(best architecture by ``metric``, its search accuracy, trials counted) among the trials
    that ended within ``wall_s`` of the command's launch (all when None)."""
    trials = replay_trials(read_events(run_dir / "trials.jsonl"))
    done = [t for t in trials if t.value(metric) is not None and t.end_t is not None
            and (wall_s is None or t.end_t - launched <= wall_s)]
    best = max(done, key=lambda t: t.value(metric))
    return best.arch, best.value("accuracy"), len(done)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--preset", choices=sorted(PRESETS), default="supernet")
    p.add_argument("--supernet-epochs", type=int, default=8)
    p.add_argument("--supernet-trials", type=int, default=300)
    p.add_argument("--train-trials", type=int, default=60, help="cap; trials past W are ignored")
    p.add_argument("--strategy", default="evolution")
    p.add_argument("--val-fraction", default="0.4")
    p.add_argument("--epochs", type=int, default=8, help="stand-alone epochs (search and final)")
    p.add_argument("--final-epochs", type=int, default=None,
                   help="epochs of the final stand-alone training of each best (default --epochs)")
    p.add_argument("--final-only", action="store_true",
                   help="only train DIR/compare.json's two best architectures again "
                        "(--final-epochs)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supernet-prior", default="none",
                   help="macs or params: the supernet search optimises supernet_score (its "
                        "accuracy fused with that cost) and its best is the best supernet_score")
    p.add_argument("--space-arg", action="append", default=[], metavar="K=V",
                   help="more skeleton arguments after the preset's, e.g. shortcut=shared")
    args = p.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "cellblock"]
    skeleton = PRESETS[args.preset] + args.space_arg
    final_epochs = args.final_epochs or args.epochs
    if args.final_only:
        report = json.loads((out / "compare.json").read_text())
        finals = {name: final_accuracies(skeleton, args, report[name]["arch"], final_epochs)
                  for name in ("supernet", "train")}
        report[f"final_{final_epochs}_epochs"] = finals
        for name, r in finals.items():
            print(f"{name}: best stand-alone after {final_epochs} epochs {r['mean']:.4f} ± "
                  f"{r['std']:.4f} over {args.seeds} seeds", flush=True)
        (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
        return
    space_args = [x for a in skeleton for x in ("--space-arg", a)]
    search = ["search", "--space", "blocks", *space_args, "--dataset", "digits", "--val-fraction",
              args.val_fraction, "--strategy", args.strategy,
              "--seed", str(args.seed), "--device", "cpu", "--backend", "local",
              "--threads-per-trial", "1", "--no-progress"]
    ckpt = out / "supernet.pt"
    sn_train_s = run([*cli, "supernet", "train", "--space", "blocks", *space_args, "--dataset",
                      "digits",
                      "--val-fraction", args.val_fraction, "--batch-size", "32", "--device", "cpu",
                      "--epochs", str(args.supernet_epochs), "--seed", str(args.seed),
                      "--checkpoint-every", str(args.supernet_epochs), "--out", str(ckpt)])
    metric = "accuracy" if args.supernet_prior == "none" else "supernet_score"
    sn_search_s = run([*cli, *search, "--evaluator", "supernet", "--supernet", str(ckpt),
                       "--supernet-prior", args.supernet_prior, "--objectives", metric,
                       "--trials", str(args.supernet_trials), "--out",
                       str(out / "search-supernet")], "supernet")
    wall = sn_train_s + sn_search_s
    tr_search_s = run([*cli, *search, "--objectives", "accuracy", "--evaluator", "train",
                       "--epochs", str(args.epochs),
                       "--trials", str(args.train_trials), "--out", str(out / "search-train")],
                       "train")
    sn_arch, sn_acc, sn_n = best_within(out / "search-supernet", 0.0, None, metric)
    # the train search's trials that ended within W of its command's launch
    tr_arch, tr_acc, tr_n = best_within(out / "search-train", LAUNCHED["train"], wall)
    report = {"supernet_prior": args.supernet_prior, "wall_s": wall, "supernet_train_s": sn_train_s,
              "supernet_search_s": sn_search_s,
              "train_search_s": tr_search_s, "load": os.getloadavg()[0],
              "final_epochs": final_epochs}
    for name, arch, acc, n in (("supernet", sn_arch, sn_acc, sn_n),
                               ("train", tr_arch, tr_acc, tr_n)):
        report[name] = {"trials_counted": n, "search_accuracy": acc, "arch": arch,
                        **final_accuracies(skeleton, args, arch, final_epochs)}
        print(f"{name}: {n} trials within {wall:.1f} s, search accuracy {acc:.4f}, stand-alone "
              f"{report[name]['mean']:.4f} ± {report[name]['std']:.4f} over {args.seeds} seeds",
              flush=True)
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")


def final_accuracies(skeleton: list[str], args: argparse.Namespace, arch: dict,
                     epochs: int) -> dict:
    """``arch`` trained stand-alone ``args.seeds`` times for ``epochs`` (the rank recipe)."""
    data = load_dataset("digits", val_fraction=float(args.val_fraction))
    kw = dict(a.split("=", 1) for a in skeleton)
    kw = {k: yaml.safe_load(v) for k, v in kw.items()}  # as the CLI reads --space-arg
    space = SearchSpace("blocks", input_shape=tuple(data.input_shape), num_classes=10, **kw)
    base = TrainConfig(epochs=epochs, batch_size=64, lr=0.1, device="cpu")
    accs = []
    for s in range(args.seeds):
        torch.manual_seed(s)
        res = train_and_evaluate(space.build(arch), data, dataclasses.replace(base, seed=s))
        accs.append(res["accuracy"])
    return {"standalone_accuracies": accs, "mean": statistics.mean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}


if __name__ == "__main__":
    main()
