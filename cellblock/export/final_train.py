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

import json
import time
from pathlib import Path
from typing import Any

import torch

from cellblock.core.config import RunConfig
from cellblock.core.errors import ConfigError, RunError
from cellblock.core.fileio import atomic_save, atomic_write_text
from cellblock.records.rundir import RunDir

CHECKPOINT = RunDir.CHECKPOINT


def train_dir(run_dir: str | Path, trial: int) -> Path:
    """Default output directory of ``cellblock train`` for a trial."""
    return RunDir(run_dir).train_dir(trial)


def weights_path(run_dir: str | Path, trial: int) -> Path:
    """Where the final trained weights of a trial are saved (and where export looks)."""
    return RunDir(run_dir).weights(trial)


def run_inputs(run: Any) -> RunConfig:
    """A loaded run's config with its relative input paths found from any directory
    (:func:`cellblock.records.meta.with_inputs_from`)."""
    from cellblock.data import dataset_names
    from cellblock.records.meta import with_inputs_from

    return with_inputs_from(run.config, run.cwd, dataset_names())


def _identity(cfg: RunConfig, arch_id: str, trial: int, epochs: int) -> dict[str, Any]:
    keys = ("space", "space_args", "dataset", "batch_size", "lr", "weight_decay", "label_smoothing",
            "seed")
    # val_fraction only when set, so trainings of runs from before the key keep their identity.
    split = {"val_fraction": cfg.val_fraction} if cfg.val_fraction is not None else {}
    plain = cfg.to_dict()
    return {"trial": trial, "arch_id": arch_id, "epochs": epochs, **{k: plain[k] for k in keys},
            **split}


def _set_threads(cfg: RunConfig, model: Any, space: Any, threads: int | None) -> int:
    """Apply ``threads``, or the search's per-trial rule for this model; return the count."""
    from cellblock.core.threads import apply_threads, threads_for
    from cellblock.evaluators.cost import count_macs

    n = threads or threads_for(cfg.replace(concurrency=1), count_macs(model, space.input_shape))
    apply_threads(n)
    return int(n)


def final_train(
    run_dir: str | Path,
    trial: int,
    epochs: int,
    out: str | Path | None = None,
    device: str | None = None,
    checkpoint_every: int = 1,
    log: Any = print,
    progress: bool = False,
    init: str | None = None,
    threads: int | None = None,
    allow_changed_inputs: bool = False,
) -> dict[str, Any]:
    """Train trial ``trial`` of a run for ``epochs``; resume from ``out``'s checkpoint if any.

    ``init``: ``supernet:CKPT`` starts from the weights the child inherits from that
    supernet (:mod:`cellblock.supernet.inherit`) instead of a random initialisation.

    Args:
        progress: Show a progress bar (epochs, loss, elapsed time and ETA) on stderr.
        threads: Torch threads; None: the search's rule (the run's ``threads_per_trial``,
            else 1 for a small candidate, else the cores free of other load).
        allow_changed_inputs: Train although the run's inputs (dataset, space file...)
            changed since the search (else RunError).

    Returns:
        The metrics written to ``metrics.json`` (``test_accuracy``, ``val_accuracy``...).

    Raises:
        ConfigError: bad epochs / checkpoint interval.
        RunError: unknown or incomplete trial, changed inputs, or a checkpoint of a
            different training.
        CheckpointError: a checkpoint that is not a 'cellblock train' one (nothing in it runs).
    """
    from cellblock.core.devices import resolve_device
    from cellblock.data import load_dataset
    from cellblock.evaluators.pipeline import trial_seed
    from cellblock.evaluators.training import TrainConfig
    from cellblock.pareto.results import load_run
    from cellblock.run.components import build_space

    if epochs < 1 or checkpoint_every < 1:
        raise ConfigError("--epochs and --checkpoint-every must be integers >= 1")
    run = load_run(run_dir)
    match = [t for t in run.trials if t.number == trial]
    if not match:
        raise RunError(
            f"run has no trial {trial}; see 'cellblock show {run_dir}' for trial numbers")
    t = match[0]
    if t.status != "COMPLETE":
        raise RunError(f"trial {trial} is {t.status}; train a COMPLETE trial")
    from cellblock.run.fingerprint import check_recorded_inputs

    check_recorded_inputs(run, allow_changed_inputs, "train")
    cfg = run_inputs(run)
    out_dir = Path(out) if out else train_dir(run.run_dir, trial)
    if (out_dir / RunDir.LOG).exists() or (out_dir / RunDir.CONFIG).exists():
        raise ConfigError(f"--out {str(out_dir)!r} is a run directory; a training goes into a "
                          "directory of its own (default RUN/train/trial_<N>)")
    identity = _identity(cfg, t.arch_id, trial, epochs)
    if init is not None:
        identity["init"] = init
    metrics_path = out_dir / RunDir.METRICS
    if metrics_path.is_file():
        try:
            done = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RunError(
                f"{str(metrics_path)!r} is not valid JSON; delete it to train again") from None
        if isinstance(done, dict) and done.get("identity") == json.loads(json.dumps(identity)):
            log(f"already trained: {metrics_path}")
            return done
    ckpt_path = out_dir / CHECKPOINT
    resume = None
    if ckpt_path.is_file():
        resume = _load_checkpoint(ckpt_path)
        if resume.get("identity") != identity:
            raise RunError(
                f"{str(ckpt_path)!r} belongs to another training ({resume.get('identity')}); "
                "repeat that command to continue it, or pass a new --out"
            )
    dev = resolve_device(device or cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_dir, False, seed=0,
                        val_fraction=cfg.val_fraction,
                        remap_labels=bool(cfg.remap_labels))
    space = build_space(cfg, data)
    seed = trial_seed(cfg.seed, t.arch_id)
    torch.manual_seed(seed)
    model = space.build(t.arch)
    if init is not None:
        from cellblock.supernet.inherit import inherited_state, parse_init

        model.load_state_dict(
            inherited_state(parse_init(init), space, t.arch, cfg.val_fraction))
        log(f"initialised from {init}")
    train_cfg = TrainConfig.from_run(cfg, seed=seed, device=str(dev), epochs=epochs)
    n_threads = _set_threads(cfg, model, space, threads)  # not part of the training's identity
    log(f"torch threads: {n_threads}")
    from cellblock.core.runlock import LOCK_NAME, RunLock

    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir / LOCK_NAME, f"training directory {str(out_dir)!r}"):  # one writer
        if ckpt_path.is_file():  # another process may have written it since the check above
            resume = _load_checkpoint(ckpt_path)
            if resume.get("identity") != identity:
                raise RunError(f"{str(ckpt_path)!r} belongs to another training; pass a new --out")
        return _train_locked(model, data, space, train_cfg, t, cfg, identity, epochs,
                             checkpoint_every,
                      ckpt_path, out_dir, metrics_path, resume, trial, dev, log, progress)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint: tensors and plain values only (nothing in it is executed).

    Raises:
        CheckpointError: unreadable, holding other objects, or not a checkpoint.
    """
    from cellblock.core.errors import CheckpointError
    from cellblock.core.fileio import load_tensors

    hint = "delete it to train from scratch, or pass another --out"
    ckpt = load_tensors(path, "training checkpoint", hint)
    state = ckpt.get("state")
    if not isinstance(state, dict) or not isinstance(state.get("epoch"),
                                                     int) or "identity" not in ckpt:
        raise CheckpointError(
            f"training checkpoint {str(path)!r} is not a 'cellblock train' checkpoint; {hint}")
    return ckpt


def _train_locked(model: Any, data: Any, space: Any, train_cfg: Any, t: Any, cfg: RunConfig,
                  identity: dict[str, Any], epochs: int, checkpoint_every: int, ckpt_path: Path,
                  out_dir: Path, metrics_path: Path, resume: Any, trial: int, dev: Any,
                  log: Any, progress: bool) -> dict[str, Any]:
    from cellblock.evaluators.cost import count_macs, count_params
    from cellblock.evaluators.training import evaluate_accuracy, train_and_evaluate

    before_s = resume["train_s"] if resume else 0.0
    if resume:
        log(f"resuming from {ckpt_path} after epoch {resume['state']['epoch']}/{epochs}")
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, initial=resume["state"]["epoch"] if resume else 0, unit="epoch",
               desc=f"train trial {trial}", disable=not progress, dynamic_ncols=True)

    def checkpoint(state: dict[str, Any]) -> None:
        bar.update(state["epoch"] - bar.n)
        bar.set_postfix(loss=f"{state['final_loss']:.4f}")
        if state["epoch"] % checkpoint_every and state["epoch"] != epochs:
            return
        elapsed = before_s + time.perf_counter() - t0
        atomic_save({"identity": identity, "state": state, "train_s": elapsed}, ckpt_path)
        message = (f"checkpoint: epoch {state['epoch']}/{epochs} saved "
                   f"(loss {state['final_loss']:.4f})")
        if progress:
            bar.write(message)
        else:
            log(message)

    try:
        result = train_and_evaluate(
            model, data, train_cfg, on_epoch_end=checkpoint,
            resume=resume["state"] if resume else None
        )
    finally:
        bar.close()
    model = model.cpu().eval()
    test_acc = evaluate_accuracy(model, data.x_test, data.y_test, train_cfg.eval_batch_size, "cpu")
    input_shape = space.input_shape
    metrics = {
        "identity": identity, "trial": trial, "arch_id": t.arch_id, "arch": t.arch,
        "epochs": epochs, "val_accuracy": result["accuracy"], "test_accuracy": test_acc,
        "search_val_accuracy": t.value("accuracy"), "final_loss": result["final_loss"],
        "train_s": before_s + time.perf_counter() - t0,
        "resumed_from_epoch": resume["state"]["epoch"] if resume else 0,
        "params": count_params(model), "macs": count_macs(model, input_shape), "device": str(dev),
        "dataset": cfg.dataset, "test_size": len(data.y_test),
        "train_step": result["train_step"], "graph_fallback": result["graph_fallback"],
    }
    atomic_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                out_dir / RunDir.WEIGHTS)
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    return metrics


__all__ = ["final_train", "train_dir", "weights_path"]
