"""``cellblock supernet train`` and ``cellblock supernet rank``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cellblock.cli.common import Parser, _key_value, command, show_defaults
from cellblock.core.errors import ConfigError, DataError


@command("supernet")
def _add_supernet(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("supernet", help="train a weight-sharing supernet, or measure its ranking")
    cmds = p.add_subparsers(dest="supernet_command", metavar="ACTION", parser_class=Parser)
    cmds.required = True

    t = cmds.add_parser("train", help="single-path one-shot training (resumes from --out)")
    t.add_argument("--space", default="blocks",
                   help="space name, module:function or file.py:function")
    t.add_argument("--space-arg", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="space (skeleton) option, repeatable; VALUE is YAML")
    t.add_argument("--dataset", default="digits",
                   help="dataset name, ImageFolder directory or .npz")
    t.add_argument("--data-dir", dest="data_dir", help="directory of torchvision datasets")
    t.add_argument("--val-fraction", dest="val_fraction", type=float,
                   help="fraction held out for validation (default: the dataset's); "
                        "rank and search then use the same split")
    t.add_argument("--epochs", type=int, required=True, help="supernet training epochs")
    t.add_argument("--out", required=True, help="checkpoint file (continued when it exists)")
    t.add_argument("--sampling", default="uniform", help="uniform, fair, sandwich or sandwich-kd")
    t.add_argument("--batch-size", dest="batch_size", type=int, default=64, help="batch size")
    t.add_argument("--lr", type=float, default=0.1, help="peak learning rate (cosine schedule)")
    t.add_argument("--weight-decay", dest="weight_decay", type=float, default=5e-4,
                   help="SGD weight decay")
    t.add_argument("--label-smoothing", dest="label_smoothing", type=float, default=0.1,
                   help="label smoothing")
    t.add_argument("--seed", type=int, default=0, help="seed of the supernet's init and sampling")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    t.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=1,
                   help="epochs between checkpoints (default 1)")
    t.add_argument("--sharing", default="candidate", choices=("candidate", "norm"),
                   help="candidate: each block type/op has its own weights (default); norm: "
                        "they share weights of the same name and module type, each keeps its "
                        "own normalisation layers")
    t.add_argument("--split", help="few-shot: one sub-supernet per value group of these "
                   "comma-separated decisions, or 'auto' (the decisions that change which "
                   "block or operator is used)")
    t.add_argument("--split-groups", dest="split_groups", type=int, default=8,
                   help="most sub-supernets; values are grouped to fit (default 8)")
    t.add_argument("--split-after", dest="split_after", type=float, default=0.5,
                   help="fraction of the steps trained as one supernet before the split (default "
                        "0.5)")
    t.add_argument("--threads", type=int,
                   help="torch threads (default: the cores free of other load)")
    t.add_argument("--no-progress", action="store_true", help="no line per epoch (errors, the "
                   "start and the final result are still printed)")
    t.set_defaults(func=_train)
    show_defaults(t)

    r = cmds.add_parser("rank", help="Kendall tau of supernet vs stand-alone accuracies")
    r.add_argument("--supernet", required=True, help="checkpoint from 'cellblock supernet train'")
    r.add_argument("--samples", type=int, default=30, help="architectures to compare (default 30)")
    r.add_argument("--epochs", type=int, required=True,
                   help="stand-alone training epochs of each: the epochs you will finally train "
                        "with (the ranking is judged against them)")
    r.add_argument("--out", required=True, help="output directory (rank.json, rank.csv)")
    r.add_argument("--dataset", help="dataset (default: the one the supernet was trained on)")
    r.add_argument("--data-dir", dest="data_dir")
    r.add_argument("--batch-size", dest="batch_size", type=int,
                   help="stand-alone batch size (default: the supernet's)")
    r.add_argument("--lr", type=float,
                   help="stand-alone learning rate (default: the supernet's), so that supernets "
                        "trained at different rates can share one reference")
    r.add_argument("--seeds", type=int, default=1,
                   help="stand-alone trainings per architecture; the reference is their mean and "
                        "rank.json gets standalone_seed_tau, the reference's own noise (default 1)")
    r.add_argument("--seed", type=int, default=0, help="seed of the architecture sample")
    r.add_argument("--uniform", action="store_true",
                   help="uniform sample instead of one architecture per parameter-count quantile")
    r.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="skip the equal-cost baselines (proxies, short stand-alone training)")
    r.add_argument("--search-candidates", dest="search_candidates", type=int,
                   help="give the equal-cost stand-alone training the budget of a search scoring "
                        "this many candidates: the supernet's time is paid once for all of them "
                        "(default: the --samples ranked)")
    r.add_argument("--prior", default="macs",
                   help="cost fused with the supernet's accuracy into supernet_score, ranked as "
                        "its own row: none, macs or params (default macs; see --supernet-prior of "
                        "search)")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    r.add_argument("--threads", type=int,
                   help="torch threads (default: the cores free of other load)")
    r.set_defaults(func=_rank)
    show_defaults(r)


def _device(name: str) -> Any:
    from cellblock.core.config_fields import device_name as check
    from cellblock.core.devices import resolve_device

    problem = check(name)
    if problem:
        raise ConfigError(f"--device {problem}, got {name!r}")
    return resolve_device(name)


def _threads(n: int | None) -> int:
    """Apply ``--threads`` (default: the cores free of other load); return the count."""
    from cellblock.core.threads import apply_threads, default_threads

    if n is not None and n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    n = n or default_threads()
    apply_threads(n)
    return n


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cellblock.data import load_dataset
    from cellblock.evaluators.training import TrainConfig
    from cellblock.search_spaces.api import SearchSpace
    from cellblock.supernet.sampler import ARCH_SAMPLERS

    ARCH_SAMPLERS.get(args.sampling)
    if args.checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    device = _device(args.device)
    args.threads = _threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                      seed=args.seed, device=str(device))
    cfg.validate()
    data = load_dataset(args.dataset, args.data_dir, val_fraction=args.val_fraction)
    kwargs = dict(args.space_arg or [])
    kwargs.setdefault("input_shape", tuple(data.input_shape))
    kwargs.setdefault("num_classes", data.num_classes)
    space = SearchSpace(args.space, **kwargs)
    from cellblock.core.runlock import file_lock

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with file_lock(args.out):  # one writer per checkpoint
        return _train_locked(args, cfg, data, space, device)


def _train_locked(args: argparse.Namespace, cfg: Any, data: Any, space: Any, device: Any) -> int:
    from pathlib import Path

    from cellblock.data import dataset_ref
    from cellblock.supernet.checkpoint import RECIPE_KEYS, check_space, load_checkpoint
    from cellblock.supernet.model import Supernet
    from cellblock.supernet.split import Split
    from cellblock.supernet.train import recipe_of, supernet_from_checkpoint, train_supernet

    split = Split.make(space, args.split, args.split_groups) if args.split else None
    resume = None
    if Path(args.out).exists():
        resume = load_checkpoint(args.out)
        check_space(resume, space, args.out)
        want = recipe_of(cfg, args.sampling, split, args.split_after, args.sharing).to_json()
        have = resume.recipe.to_json()
        diff = [k for k in RECIPE_KEYS if want.get(k) != have.get(k)]
        if resume.val_fraction != args.val_fraction:
            raise ConfigError(
                f"checkpoint {args.out!r} was trained with --val-fraction "
                f"{resume.val_fraction}, not {args.val_fraction}; use the same or another "
                "--out"
            )
        if diff:
            raise ConfigError(
                f"checkpoint {args.out!r} was trained with {diff[0]}={have.get(diff[0])!r}, "
                f"not {want.get(diff[0])!r}; use the same options or another --out"
            )
        if resume.done:
            print(f"{args.out}: already trained ({resume.epoch} epochs, "
                  f"{resume.train_s:.1f} s)")
            return 0
        supernet = supernet_from_checkpoint(resume, device)
        print(f"resuming {args.out} after epoch {resume.epoch}", file=sys.stderr)
    else:
        supernet = Supernet.create(space, seed=args.seed, split=split, sharing=args.sharing)
    n_params = sum(p.numel() for p in supernet.bank.parameters())
    print(f"supernet of {space.name}: {n_params:,} shared parameters; torch threads: "
          f"{args.threads}", file=sys.stderr)
    if split is not None:
        print(f"few-shot: {split.n_groups} sub-supernets on {', '.join(split.chunks)} "
              f"(split after {args.split_after:.0%} of the steps)", file=sys.stderr)
        for g in range(split.n_groups):
            print(f"  group {g}: {split.label(g)}", file=sys.stderr)
    result = train_supernet(supernet, data, cfg, sampling=args.sampling, checkpoint=args.out,
                            val_fraction=args.val_fraction, split_after=args.split_after,
                            checkpoint_every=args.checkpoint_every, resume=resume,
                            dataset=dataset_ref(args.dataset),
                            log=None if args.no_progress
                            else lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result))
    return 0


def _rank(args: argparse.Namespace) -> int:
    from cellblock.data import load_dataset
    from cellblock.supernet.baselines import rank_table, tau_warning
    from cellblock.supernet.checkpoint import load_checkpoint
    from cellblock.supernet.prior import check_prior
    from cellblock.supernet.rank import rank_supernet
    from cellblock.supernet.train import supernet_from_checkpoint

    device = _device(args.device)
    check_prior(args.prior)  # a bad --prior is one line, before anything is loaded
    threads = _threads(args.threads)
    ckpt = load_checkpoint(args.supernet)
    if not ckpt.done:
        print(f"note: {args.supernet} is a partial checkpoint (epoch {ckpt.epoch} of "
              f"{ckpt.recipe.train.epochs})", file=sys.stderr)
    # the supernet's own split: its training images must not become validation images
    try:
        data = load_dataset(args.dataset or ckpt.dataset, args.data_dir,
                            val_fraction=ckpt.val_fraction)
    except DataError as exc:
        if args.dataset:
            raise
        raise DataError(f"{exc} (the dataset {args.supernet} was trained on; give its path with "
                        "--dataset)") from exc
    supernet = supernet_from_checkpoint(ckpt, device)
    result = rank_supernet(supernet, ckpt, data, samples=args.samples, epochs=args.epochs,
                           out=args.out, seed=args.seed, device=device, batch_size=args.batch_size,
                           lr=args.lr, seeds=args.seeds, stratified=not args.uniform,
                           baselines=args.baselines, search_candidates=args.search_candidates,
                           prior=args.prior,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"torch threads: {threads}", file=sys.stderr)
    print(rank_table(result), file=sys.stderr)
    keys = ("kendall_tau", "spearman", "kendall_tau_no_recal", "n", "supernet_s",
            "standalone_s", "cost_ratio", "children_per_s", "params_tau", "standalone_seed_tau")
    print(json.dumps({k: result[k] for k in (*keys, "fused") if k in result}))
    warning = tau_warning(result)
    if warning:
        print(warning, file=sys.stderr)
    return 0
