"""Datasets as in-memory tensors: built-in (digits, torchvision) and custom (.npz, image folder).

Every dataset is returned as float32, normalised (train statistics, per channel), NCHW
CPU tensors with int64 labels, split deterministically into train / val / test. The
split depends only on ``seed`` and ``val_fraction`` of :func:`load_dataset` (0 and the
defaults below unless given), never on the search seed, so every trial of a search sees
the same validation set. The loaders themselves are in :mod:`cellblock.data_loaders`.
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

from cellblock.errors import DataError
from cellblock.registry import Registry

#: Where torchvision datasets live when no ``data_dir`` is given.
DEFAULT_DATA_DIR = os.environ.get(
    "CELLBLOCK_DATA_DIR", str(Path.home() / ".cache" / "cellblock" / "datasets")
)

#: Fractions of custom and scikit-learn data put in (val, test); the rest is train.
CUSTOM_VAL_FRACTION = 0.15
CUSTOM_TEST_FRACTION = 0.15
#: Fraction of an official torchvision train set held out for validation.
TORCHVISION_VAL_FRACTION = 0.1

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class Augment:
    """Training augmentation, applied on the device batch by batch.

    Args:
        pad: Random shift of up to ``pad`` pixels each way (zero padding + random crop).
        flip: Random horizontal flip with probability 0.5.
    """

    pad: int = 0
    flip: bool = False


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


def load_dataset(
    name: str,
    data_dir: str | None = None,
    download: bool = False,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    val_fraction: float | None = None,
    remap_labels: bool = False,
) -> Dataset:
    """Load a built-in dataset by name, or custom data from a path.

    Args:
        name: A name from :func:`dataset_names` (``digits`` needs no files), a path to an
            ``.npz`` file with arrays ``x`` and ``y``, or a path to an image-folder
            directory (one sub-folder of images per class).
        data_dir: Directory of torchvision datasets (default ``$CELLBLOCK_DATA_DIR`` or
            ``~/.cache/cellblock/datasets``).
        download: Download a missing torchvision dataset into ``data_dir``.
        seed: Seed of the deterministic train/val/test split (keep it fixed).
        image_size: ``(H, W)`` or one int that image-folder images are resized to
            (default: the size of the first image).
        val_fraction: Validation fraction in ``(0, 1)``; None keeps the defaults
            (:data:`CUSTOM_VAL_FRACTION`, :data:`TORCHVISION_VAL_FRACTION` of the train set).
            The test split never changes (:data:`CUSTOM_TEST_FRACTION` or the official one).
        remap_labels: Map an ``.npz``'s non-contiguous integer labels to ``0..K-1`` (sorted;
            the original labels become ``class_names``) instead of refusing them.

    Raises:
        DataError: if the dataset is unknown, missing or malformed, or ``val_fraction``
            is not a number, is <= 0 or leaves no training data.
    """
    if name in DATASETS:
        root = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR).expanduser()
        return DATASETS.get(name)(root, download, seed, val_fraction=val_fraction)
    path = Path(name).expanduser()
    if path.suffix.lower() == ".npz" or path.is_file():
        if not path.is_file():
            raise DataError(f"dataset file {str(path)!r} does not exist; check the path")
        return data_loaders.load_npz(path, seed, val_fraction, remap_labels)
    if path.is_dir():
        return data_loaders.load_image_folder(path, seed, image_size, val_fraction)
    raise DataError(
        f"unknown dataset {name!r}; use one of {', '.join(dataset_names())}, "
        "a path to an .npz file (arrays x and y) or a path to an image-folder directory"
    )


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


# The loaders register the built-in datasets in DATASETS (defined above), hence the late import.
from cellblock import data_loaders  # noqa: E402
