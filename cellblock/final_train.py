"""``cellblock train``: full training of one architecture of a run, with checkpoints and resume.

Same recipe as the search (:class:`cellblock.evaluators.training.TrainConfig` from the run's
config, same per-architecture seed), only longer. A checkpoint (model, optimizer, data-order
generator, RNG, step: the LR schedule is a function of the step) is written atomically
after every ``--checkpoint-every`` epochs; repeating the same command after a kill continues
from the last checkpoint. The final weights go to ``RUN/train/trial_<N>/weights.pt``
(where ``cellblock export`` finds them) and the metrics, including the only use of the
TEST split, to ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cellblock.cli import command
from cellblock.errors import ConfigError, RunError
from cellblock.fileio import atomic_save, atomic_write_text

CHECKPOINT = "checkpoint.pt"


def train_dir(run_dir: str | Path, trial: int) -> Path:
    """Default output directory of ``cellblock train`` for a trial."""
    return Path(run_dir) / "train" / f"trial_{trial}"


def weights_path(run_dir: str | Path, trial: int) -> Path:
    """Where the final trained weights of a trial are saved (and where export looks)."""
    return train_dir(run_dir, trial) / "weights.pt"


def _identity(cfg: Mapping[str, Any], arch_id: str, trial: int, epochs: int) -> dict[str, Any]:
    keys = ("space", "space_args", "dataset", "batch_size", "lr", "weight_decay", "label_smoothing", "seed")
    # val_fraction only when set, so trainings of runs from before the key keep their identity.
    split = {"val_fraction": cfg["val_fraction"]} if cfg.get("val_fraction") is not None else {}
    return {"trial": trial, "arch_id": arch_id, "epochs": epochs, **{k: cfg.get(k) for k in keys}, **split}


def final_train(
    run_dir: str | Path,
    trial: int,
    epochs: int,
    out: str | Path | None = None,
    device: str | None = None,
    checkpoint_every: int = 1,
    log: Any = print,
    init: str | None = None,
) -> dict[str, Any]:
    """Train trial ``trial`` of a run for ``epochs``; resume from ``out``'s checkpoint if any.

    ``init``: ``supernet:CKPT`` starts from the weights the child inherits from that
    supernet (:mod:`cellblock.supernet.inherit`) instead of a random initialisation.

    Returns:
        The metrics written to ``metrics.json`` (``test_accuracy``, ``val_accuracy``...).

    Raises:
        ConfigError: bad epochs / checkpoint interval.
        RunError: unknown or incomplete trial, or a checkpoint of a different training.
    """
    from cellblock.data import load_dataset
    from cellblock.evaluators.base import resolve_device
    from cellblock.evaluators.cost import count_macs, count_params
    from cellblock.evaluators.pipeline import trial_seed
    from cellblock.evaluators.training import TrainConfig, evaluate_accuracy, train_and_evaluate
    from cellblock.export import run_space
    from cellblock.results import load_run

    if epochs < 1 or checkpoint_every < 1:
        raise ConfigError("--epochs and --checkpoint-every must be integers >= 1")
    run = load_run(run_dir)
    match = [t for t in run.trials if t.number == trial]
    if not match:
        raise RunError(f"run has no trial {trial}; see 'cellblock show {run_dir}' for trial numbers")
    t = match[0]
    if t.status != "COMPLETE":
        raise RunError(f"trial {trial} is {t.status}; train a COMPLETE trial")
    cfg = run.config
    out_dir = Path(out) if out else train_dir(run.run_dir, trial)
    identity = _identity(cfg, t.arch_id, trial, epochs)
    if init is not None:
        identity["init"] = init
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file():
        done = json.loads(metrics_path.read_text(encoding="utf-8"))
        if done.get("identity") == json.loads(json.dumps(identity)):
            log(f"already trained: {metrics_path}")
            return done
    ckpt_path = out_dir / CHECKPOINT
    resume = None
    if ckpt_path.is_file():
        resume = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if resume.get("identity") != identity:
            raise RunError(
                f"{str(ckpt_path)!r} belongs to another training ({resume.get('identity')}); "
                "repeat that command to continue it, or pass a new --out"
            )
    dev = resolve_device(device or cfg.get("device", "auto"))
    data = load_dataset(cfg["dataset"], cfg.get("data_dir"), False, seed=0, val_fraction=cfg.get("val_fraction"))
    space = run_space(cfg, data)
    seed = trial_seed(cfg.get("seed", 0), t.arch_id)
    torch.manual_seed(seed)
    model = space.build(t.arch)
    if init is not None:
        from cellblock.supernet.inherit import inherited_state, parse_init

        model.load_state_dict(inherited_state(parse_init(init), space, t.arch, cfg.get("val_fraction")))
        log(f"initialised from {init}")
    train_cfg = TrainConfig(
        epochs=epochs, batch_size=cfg["batch_size"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
        label_smoothing=cfg["label_smoothing"], seed=seed, device=str(dev),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    before_s = resume["train_s"] if resume else 0.0
    if resume:
        log(f"resuming from {ckpt_path} after epoch {resume['state']['epoch']}/{epochs}")
    t0 = time.perf_counter()

    def checkpoint(state: dict[str, Any]) -> None:
        if state["epoch"] % checkpoint_every and state["epoch"] != epochs:
            return
        elapsed = before_s + time.perf_counter() - t0
        atomic_save({"identity": identity, "state": state, "train_s": elapsed}, ckpt_path)
        log(f"checkpoint: epoch {state['epoch']}/{epochs} saved (loss {state['final_loss']:.4f})")

    result = train_and_evaluate(
        model, data, train_cfg, on_epoch_end=checkpoint, resume=resume["state"] if resume else None
    )
    model = model.cpu().eval()
    test_acc = evaluate_accuracy(model, data.x_test, data.y_test, train_cfg.eval_batch_size, "cpu")
    input_shape = tuple(space.kwargs["input_shape"])
    metrics = {
        "identity": identity, "trial": trial, "arch_id": t.arch_id, "arch": t.arch,
        "epochs": epochs, "val_accuracy": result["accuracy"], "test_accuracy": test_acc,
        "search_val_accuracy": t.value("accuracy"), "final_loss": result["final_loss"],
        "train_s": before_s + time.perf_counter() - t0, "resumed_from_epoch": resume["state"]["epoch"] if resume else 0,
        "params": count_params(model), "macs": count_macs(model, input_shape), "device": str(dev),
        "dataset": cfg["dataset"], "test_size": len(data.y_test),
    }
    atomic_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                out_dir / "weights.pt")
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    return metrics


@command("train")
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fully train one architecture of a run (checkpoints, resume, test accuracy)")
    p.add_argument("run", help="run directory")
    p.add_argument("--trial", type=int, required=True, help="trial number (see 'cellblock show RUN')")
    p.add_argument("--epochs", type=int, required=True, help="training epochs")
    p.add_argument("--out", help="output directory (default RUN/train/trial_<N>, where export looks)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the run's device)")
    p.add_argument("--checkpoint-every", type=int, default=1, dest="checkpoint_every",
                   help="epochs between checkpoints (default 1)")
    p.add_argument("--init", help="supernet:CKPT: start from the weights inherited from that supernet")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.init is not None:
        from cellblock.supernet.inherit import parse_init

        parse_init(args.init)  # a bad form fails before anything is loaded
    m = final_train(args.run, args.trial, args.epochs, args.out, args.device, args.checkpoint_every, log,
                    args.init)
    log(f"trial {m['trial']} ({m['arch_id']}): {m['epochs']} epochs, val accuracy {m['val_accuracy']:.4f}, "
        f"TEST accuracy {m['test_accuracy']:.4f} ({m['test_size']} images), train {m['train_s']:.1f} s")
    return 0


__all__ = ["final_train", "train_dir", "weights_path"]
