"""Assembling a :class:`~cellblock.data.api.Dataset` from images and labels: the split,
the per-channel normalisation (recorded) and the label checks every loader shares."""

from __future__ import annotations

import numpy as np
import torch

from cellblock.core.errors import DataError
from cellblock.data.api import Augment, Dataset, Normalisation, check_val_fraction
from cellblock.data.labels import check_splits


def val_fraction_or(val_fraction: float | None, test_fraction: float, default: float) -> float:
    """The validation fraction asked for (checked beside ``test_fraction``), else ``default``."""
    checked = check_val_fraction(val_fraction, test_fraction)
    return default if checked is None else checked


def normalise_images(
    x_train: torch.Tensor, *others: torch.Tensor, pixel_scale: float = 1.0
) -> tuple[tuple[torch.Tensor, ...], Normalisation]:
    """Normalise every tensor with the per-channel mean/std of ``x_train``; and the record."""
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    record = Normalisation(
        tuple(float(v) for v in mean.flatten()), tuple(float(v) for v in std.flatten()),
        float(pixel_scale),
        (float(x_train.min()), float(x_train.max())) if x_train.numel() else (0.0, 0.0))
    return tuple(((t - mean) / std).contiguous() for t in (x_train, *others)), record


def assemble_dataset(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    augment: Augment,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    class_names: tuple[str, ...] = (),
    num_classes: int | None = None,
    pixel_scale: float = 1.0,
) -> Dataset:
    """Assemble a :class:`Dataset` from float images in [0, 1]-ish range and labels.

    ``pixel_scale``: what the raw pixels were divided by to get ``x`` (recorded).
    """
    if splits is None:
        raise ValueError(f"dataset {name!r} was assembled without a split (a bug in its loader)")
    tr, va, te = (torch.as_tensor(s, dtype=torch.long) for s in splits)
    if x_test is None or y_test is None:
        x_test, y_test = x[te], y[te]
    if len(tr) == 0 or len(va) == 0 or len(y_test) == 0:
        raise DataError(
            f"dataset {name!r} has {len(y)} samples, too few for a train/val/test split; "
            "provide at least a few samples per class"
        )
    (x_tr, x_va, x_te), norm = normalise_images(x[tr].float(), x[va].float(), x_test.float(),
                                                pixel_scale=pixel_scale)
    n_cls = num_classes if num_classes is not None else int(max(y.max(), y_test.max())) + 1
    check_splits(y.numpy(), splits[0], splits[1], n_cls, name)
    return Dataset(
        name=name,
        x_train=x_tr,
        y_train=y[tr].long().contiguous(),
        x_val=x_va,
        y_val=y[va].long().contiguous(),
        x_test=x_te,
        y_test=y_test.long().contiguous(),
        input_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
        num_classes=n_cls,
        augment=augment,
        class_names=class_names,
        normalisation=norm,
    )
