"""Label sanity checks of custom data: class indices ``0..C-1``, at least two classes,
every class in the train and validation splits; optional explicit remapping.

A one-class dataset gives every candidate accuracy 1.0; labels such as {0, 1000, ...}
make a 1001-way head; one stray label makes an extra class that no validation image
has. All are refused with one line saying how to fix the data, or (non-contiguous
labels) remapped on request (``remap_labels``), the mapping kept in the dataset's
``class_names`` (class index -> original label) and recorded in the run.
"""

from __future__ import annotations

import numpy as np

from cellblock.core.errors import DataError


def _listing(values: np.ndarray, limit: int = 6) -> str:
    items = [str(int(v)) for v in values[:limit]]
    return ", ".join(items) + (", ..." if len(values) > limit else "")


def check_labels(y: np.ndarray, what: str, remap: bool = False) -> tuple[np.ndarray,
                                                                         tuple[str, ...]]:
    """Validate (and optionally remap) integer labels ``y`` (non-negative, 1-d).

    Returns:
        ``(labels, class_names)``: ``labels`` in ``0..C-1``; ``class_names`` the original
        label of each class when remapped, else ``()``.

    Raises:
        DataError: fewer than two classes, or non-contiguous labels without ``remap``.
    """
    values, counts = np.unique(y, return_counts=True)
    if len(values) < 2:
        only = f"only label {int(values[0])}" if len(values) else "no labels"
        raise DataError(
            f"{what} has {only}: at least 2 classes are needed (every candidate would score 1.0); "
            "check that y holds the class of each image"
        )
    if values[-1] == len(values) - 1:
        return y, ()
    if remap:
        return np.searchsorted(values, y).astype(np.int64), tuple(str(int(v)) for v in values)
    missing = np.setdiff1d(np.arange(int(values[-1]) + 1), values)
    raise DataError(
        f"{what} labels are not contiguous: {len(values)} classes with labels {_listing(values)} "
        f"(none with {_listing(missing)}), which would make a {int(values[-1]) + 1}-way head; "
        "remap them to 0..K-1 (np.unique(y, return_inverse=True)) or pass --remap-labels "
        "(the mapping is recorded in the run)"
    )


def check_splits(y: np.ndarray, train: np.ndarray, val: np.ndarray, num_classes: int,
                 what: str) -> None:
    """Every class ``0..num_classes-1`` must have samples in the train and validation splits.

    Raises:
        DataError: naming the first class missing from a split (e.g. a stray label).
    """
    counts = np.bincount(y, minlength=num_classes)
    for split, idx in (("train", train), ("validation", val)):
        present = np.bincount(y[idx], minlength=num_classes) > 0
        absent = np.flatnonzero(~present)
        if len(absent):
            c = int(absent[0])
            raise DataError(
                f"{what}: class {c} has {int(counts[c])} sample(s), too few to appear in the "
                f"{split} split (other classes have up to {int(counts.max())}); a stray label? "
                "fix or remove those samples, or add more of that class"
            )
