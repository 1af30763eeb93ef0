"""``cellblock train``: fully train one architecture of a run."""

from __future__ import annotations

import argparse

from cellblock.cli.common import command
from cellblock.core.errors import ConfigError


@command("train")
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train",
                       help="fully train one architecture of a run (checkpoints, resume, test "
                            "accuracy)")
    p.add_argument("run", help="run directory")
    p.add_argument("--trial", type=int, required=True,
                   help="trial number (see 'cellblock show RUN')")
    p.add_argument("--epochs", type=int, required=True, help="training epochs")
    p.add_argument("--out",
                   help="output directory (default RUN/train/trial_<N>, where export looks)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the run's device)")
    p.add_argument("--checkpoint-every", type=int, default=1, dest="checkpoint_every",
                   help="epochs between checkpoints (default 1)")
    p.add_argument("--init",
                   help="supernet:CKPT: start from the weights inherited from that supernet")
    p.add_argument("--threads", type=int, help="torch threads (default: 1 for a candidate under "
                   "5e8 MACs per training batch, else the cores free of other load)")
    p.add_argument("--allow-changed-inputs", dest="allow_changed_inputs", action="store_true",
                   help="go on although the dataset, space file, table or supernet changed since "
                        "the search (as 'search --allow-changed-inputs')")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from cellblock.export.final_train import final_train

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.init is not None:
        from cellblock.supernet.inherit import parse_init

        parse_init(args.init)  # a bad form fails before anything is loaded
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    m = final_train(args.run, args.trial, args.epochs, args.out, args.device, args.checkpoint_every,
                    log,
                    progress=not args.no_progress, init=args.init, threads=args.threads,
                    allow_changed_inputs=args.allow_changed_inputs)
    log(f"trial {m['trial']} ({m['arch_id']}): {m['epochs']} epochs, val accuracy "
        f"{m['val_accuracy']:.4f}, TEST accuracy {m['test_accuracy']:.4f} ({m['test_size']} "
        f"images), train {m['train_s']:.1f} s")
    if args.out is None:  # where export looks: the next export of this trial uses these weights
        log(f"next: cellblock export {args.run} --trial {args.trial} --out "
            f"export_trial_{args.trial}  # exports these trained weights")
    return 0
