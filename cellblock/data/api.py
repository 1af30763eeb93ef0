"""Datasets as in-memory tensors: built-in (digits, torchvision) and custom (.npz, image folder).

Every dataset is returned as float32, normalised (train statistics, per channel), NCHW
CPU tensors with int64 labels, split deterministically into train / val / test. The
split depends only on ``seed`` and ``val_fraction`` of :func:`load_dataset` (0 and the
defaults below unless given), never on the search seed, so every trial of a search sees
the same validation set. The loaders themselves are in :mod:`cellblock.data.loaders`.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from cellblock.core.errors import DataError
from cellblock.core.registry import Registry

#: Where torchvision datasets live when no ``data_dir`` is given.
DEFAULT_DATA_DIR = os.environ.get(
    "CELLBLOCK_DATA_DIR", str(Path.home() / ".cache" / "cellblock" / "datasets")
)

#: Fractions of custom and scikit-learn data put in (val, test); the rest is train.
CUSTOM_VAL_FRACTION = 0.15
CUSTOM_TEST_FRACTION = 0.15
#: Fraction of an official torchvision train set held out for validation.
TORCHVISION_VAL_FRACTION = 0.1

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")


@dataclass(frozen=True)
class Augment:
    """Training augmentation, applied on the device batch by batch.

    Args:
        pad: Random shift of up to ``pad`` pixels each way (zero padding + random crop).
        flip: Random horizontal flip with probability 0.5.
    """

    pad: int = 0
    flip: bool = False


@dataclass(frozen=True)
class Normalisation:
    """How raw images became the network's input: ``(x / pixel_scale - mean[c]) / std[c]``.

    Args:
        mean: Per-channel mean of the train split after dividing by ``pixel_scale``.
        std: Per-channel standard deviation of the same.
        pixel_scale: What raw pixels were divided by first: 255 for 8-bit images, 16 for
            scikit-learn's digits, 1 for float data (used as stored).
        value_range: ``(min, max)`` of the train images after that division.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_scale: float = 1.0
    value_range: tuple[float, float] = (0.0, 1.0)

    def to_json(self, input_shape: tuple[int, ...]) -> dict[str, object]:
        """The record an export keeps in ``arch.json`` (``preprocessing``)."""
        return {
            "input_shape": [int(v) for v in input_shape], "layout": "NCHW", "dtype": "float32",
            "pixel_scale": self.pixel_scale, "value_range": list(self.value_range),
            "mean": list(self.mean), "std": list(self.std),
            "formula": "(x / pixel_scale - mean[c]) / std[c]",
        }


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train / val / test tensors.

    Images are float32 NCHW normalised with the train split's per-channel statistics;
    labels are int64 in ``[0, num_classes)``. All tensors are on the CPU. Instances
    compare and hash by identity (training caches device copies per instance).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, int, int]
    num_classes: int
    augment: Augment
    class_names: tuple[str, ...] = ()
    #: The normalisation applied to every split (None for datasets built by hand).
    normalisation: Normalisation | None = None

    def summary(self) -> str:
        """One line: name, shape, classes and split sizes."""
        c, h, w = self.input_shape
        return (
            f"{self.name}: {c}x{h}x{w}, {self.num_classes} classes, "
            f"train {len(self.y_train)} / val {len(self.y_val)} / test {len(self.y_test)}"
        )


class Loader(Protocol):
    """A built-in dataset loader; ``val_fraction`` None means the loader's default."""

    def __call__(
        self, data_dir: Path, download: bool, seed: int, *, val_fraction: float | None = None
    ) -> Dataset: ...


DATASETS: Registry[Loader] = Registry("dataset")


def dataset_names() -> list[str]:
    """Names of the built-in datasets (any other name must be a path to custom data)."""
    return DATASETS.names()


# ----------------------------------------------------------------------------- helpers


def check_val_fraction(val_fraction: float | None, test_fraction: float = 0.0) -> float | None:
    """``val_fraction`` as a float (None stays None) after checking it.

    Raises:
        DataError: if ``val_fraction`` is not a number, is <= 0, or together with
            ``test_fraction`` leaves no training data.
    """
    if val_fraction is None:
        return None
    number = isinstance(val_fraction, numbers.Real) and not isinstance(val_fraction, bool)
    value = float(val_fraction) if number else math.nan
    if not (math.isfinite(value) and value > 0):
        raise DataError(
            f"val_fraction must be a number > 0, got {val_fraction!r}; pass a fraction such as "
            "0.4 or leave it unset for the default"
        )
    if value + test_fraction >= 1:
        plus = f" plus the test fraction {test_fraction:g}" if test_fraction else ""
        raise DataError(
            f"val_fraction {value:g}{plus} leaves no training data; "
            f"pass a value below {1 - test_fraction:g}"
        )
    return value


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
    test_after: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified split of ``range(len(labels))`` into train/val/test indices.

    Each class contributes ``round(n * fraction)`` samples to val and test, keeping at
    least one in train. Indices come back sorted. Each class's shuffled samples go
    val, test, train; with ``test_after`` (a default val fraction) test sits after that
    fraction instead, so it does not move when ``val_fraction`` changes.
    """
    rng = np.random.RandomState(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        n_test = int(round(len(idx) * test_fraction))
        while n_val + n_test >= len(idx) and n_val + n_test > 0:
            if n_test >= n_val and n_test > 0:
                n_test -= 1
            else:
                n_val -= 1
        start = n_val
        if test_after is not None and test_after != val_fraction:
            start = min(int(round(len(idx) * test_after)), len(idx) - n_test)
        rest = np.concatenate([idx[:start], idx[start + n_test :]])
        parts[0].append(rest[n_val:])
        parts[1].append(rest[:n_val])
        parts[2].append(idx[start : start + n_test])
    train, val, test = (np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts)
    return train, val, test


def detect_layout(shape: tuple[int, ...]) -> str:
    """``"NCHW"`` or ``"NHWC"`` for a 4-d image array shape (3-d means N,H,W grayscale).

    Channels must be 1, 3 or 4. When both axes could be channels, the layout whose
    spatial dims are square wins, then NCHW.

    Raises:
        DataError: if neither axis 1 nor axis 3 can be a channel axis.
    """
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise DataError(
            f"x has shape {tuple(shape)}; expected (N, C, H, W), (N, H, W, C) or (N, H, W)"
        )
    chans = (1, 3, 4)
    first, last = shape[1] in chans, shape[3] in chans
    if first and last:
        if shape[2] == shape[3]:
            return "NCHW"
        return "NHWC" if shape[1] == shape[2] else "NCHW"
    if first:
        return "NCHW"
    if last:
        return "NHWC"
    raise DataError(
        f"x has shape {tuple(shape)}; expected (N, C, H, W) or (N, H, W, C) with 1, 3 or 4 channels"
    )
