"""Whether a trial's training runs with cudnn autotuning (``cudnn_benchmark``).

cudnn's benchmark mode times every applicable algorithm of each convolution the first time
it meets a shape (forward and both backward passes), then keeps the fastest. That search
is paid again for every new architecture, i.e. for every trial, and it only pays back when
(1) the training shapes stay fixed, so that it is paid once per trial and not on every
odd-sized batch, and (2) the network is large enough that the choice of algorithm changes
the step time at all.

Rule of ``cudnn_benchmark: auto`` (the default), :func:`autotune_decision`:

- off away from CUDA (there is nothing to tune);
- off when the training batches change shape: a partial last batch that is kept (neither
  dropped nor avoided by a train split divisible by the batch size), or an augmentation that
  resizes images;
- off when a training batch costs under :data:`AUTOTUNE_MIN_BATCH_MACS` forward
  multiply-accumulates (MACs per image x batch size), or its cost is unknown;
- on otherwise. ``true`` or ``false`` force it on or off for every trial.

Why :data:`AUTOTUNE_MIN_BATCH_MACS` = 1e9: a training step costs about 3x its forward
MACs, 2 FLOPs each, so 1e9 MACs is ~6 GFLOP a step, ~0.1 ms at the ~50 TFLOP/s that small
bf16 convolutions reach on an H100/H200. Below that a step is bound by its kernel launches
(tens of kernels at ~5 us each: 0.1-0.3 ms) whatever algorithm runs, so autotuning can
save next to nothing while its search still costs milliseconds per convolution shape.
The default digits search's candidates cost 0.2-2.2 MMACs an image, 12-140 MMACs per batch
of 64 (results/benchmarks/default_search.md): all of them train without autotuning
(issue 32: there it cost more than it returned, results/benchmarks/gpu_throughput.md);
ResNet-18 at 32x32, batch 256, costs ~140 GMACs per batch and is tuned.
"""

from __future__ import annotations

from typing import Any

from cellblock.core.errors import ConfigError

#: Forward MACs of one training batch from which ``cudnn_benchmark: auto`` tunes.
AUTOTUNE_MIN_BATCH_MACS = 1e9

#: The values of the ``cudnn_benchmark`` config key.
SETTINGS = ("auto", True, False)


def autotune_decision(setting: Any, device_type: str, *, n_train: int, batch_size: int,
                      drop_last: bool, resizes: bool, macs: float | None) -> tuple[bool, str]:
    """Whether one trial trains with cudnn autotuning, and why (one line).

    Args:
        setting: The ``cudnn_benchmark`` config value: ``"auto"``, True or False.
        device_type: The training device's type (``"cuda"``, ``"cpu"``...).
        n_train: Images in the train split.
        batch_size: Images per training step.
        drop_last: Whether an epoch's partial last batch is dropped.
        resizes: Whether the training augmentation changes the image size.
        macs: Forward MACs per image (None: unknown).

    Raises:
        ConfigError: for a setting other than auto, true or false.
    """
    if setting not in SETTINGS or not isinstance(setting, (str, bool)):
        raise ConfigError(f"cudnn_benchmark must be auto, true or false, got {setting!r}")
    if setting is False:
        return False, "off (cudnn_benchmark: false)"
    if device_type != "cuda":
        return False, f"off (no cudnn on {device_type})"
    if setting is True:
        return True, "on (cudnn_benchmark: true)"
    if not drop_last and batch_size < n_train and n_train % batch_size:
        return False, (f"off (auto: the last batch of an epoch has {n_train % batch_size} "
                       f"images, not {batch_size})")
    if resizes:
        return False, "off (auto: the augmentation resizes images)"
    if macs is None:
        return False, "off (auto: the candidate's MACs are unknown)"
    per_batch = float(macs) * min(batch_size, n_train)
    if per_batch < AUTOTUNE_MIN_BATCH_MACS:
        return False, (f"off (auto: {per_batch:.3g} MACs per batch, under "
                       f"{AUTOTUNE_MIN_BATCH_MACS:.0e})")
    return True, f"on (auto: fixed shapes, {per_batch:.3g} MACs per batch)"


__all__ = ["AUTOTUNE_MIN_BATCH_MACS", "SETTINGS", "autotune_decision"]
