"""A user's own data: :func:`load_npz` (an ``.npz`` with ``x`` and ``y``) and
:func:`load_image_folder` (one sub-folder of images per class), as normalised datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cellblock.core.errors import DataError
from cellblock.data.api import (
    CUSTOM_TEST_FRACTION,
    CUSTOM_VAL_FRACTION,
    IMAGE_EXTENSIONS,
    Augment,
    Dataset,
    detect_layout,
    stratified_split,
)
from cellblock.data.assemble import assemble_dataset, val_fraction_or
from cellblock.data.labels import check_labels


def pixel_scale_of(x: np.ndarray) -> float:
    """What :func:`_float_images` divides ``x``'s pixels by: 255 for integers, else 1."""
    return 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0


def _float_images(x: np.ndarray, what: str) -> np.ndarray:
    """Images of any numeric dtype -> float32 (integers are scaled from 0..255 to 0..1)."""
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(
                f"{what} has integer pixels outside 0..255 (min {x.min()}, max {x.max()}); "
                "store uint8 images or floats"
            )
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{what} contains NaN or infinite pixels; clean the data first")
        return x
    raise DataError(f"{what} has dtype {x.dtype}; images must be integers or floats")


def _int_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    """Validate labels: 1-d, ``n`` of them, non-negative integers (integral floats accepted)."""
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}; labels must be a 1-d array of class indices")
    if len(y) != n:
        raise DataError(f"{what} has {len(y)} labels but x has {n} images; they must match")
    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"{what} labels are not integers; store class indices 0..K-1")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{what} labels have dtype {y.dtype}, not integers; store class indices 0..K-1")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise DataError(f"{what} has negative labels (min {y.min()}); use class indices 0..K-1")
    return y


def load_npz(path: Path, seed: int, val_fraction: float | None = None,
             remap_labels: bool = False) -> Dataset:
    """Custom data: an ``.npz`` with ``x`` (images) and ``y`` (integer labels).

    Labels must be ``0..K-1`` with K >= 2; ``remap_labels`` maps other integer labels to
    ``0..K-1`` in sorted order (the originals become the class names).
    """
    val = val_fraction_or(val_fraction, CUSTOM_TEST_FRACTION, CUSTOM_VAL_FRACTION)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise DataError(
                    f"{str(path)!r} lacks array(s) {', '.join(missing)} (found: "
                    f"{', '.join(sorted(keys)) or 'none'}); save it with np.savez(path, x=images, "
                    "y=labels)"
                )
            x, y = npz["x"], npz["y"]
    except DataError:
        raise
    except Exception as exc:  # not a zip, pickled object arrays, truncated file
        raise DataError(
            f"cannot read {str(path)!r} as an .npz file: {exc}; re-save it with np.savez") from exc
    what = f"{path.name}"
    layout = detect_layout(tuple(x.shape))
    if x.shape[0] == 0:
        raise DataError(f"{what} has no images; x must hold at least a few samples per class")
    labels = _int_labels(np.asarray(y), int(x.shape[0]), f"{what} y")
    images = _float_images(np.asarray(x), f"{what} x")
    labels, class_names = check_labels(labels, f"{what} y", remap_labels)
    if layout == "NHW":
        images = images[:, None]
    elif layout == "NHWC":
        images = images.transpose(0, 3, 1, 2)
    xt = torch.from_numpy(np.ascontiguousarray(images))
    yt = torch.from_numpy(labels)
    splits = stratified_split(labels, val, CUSTOM_TEST_FRACTION, seed, CUSTOM_VAL_FRACTION)
    return assemble_dataset(path.stem, xt, yt, splits, Augment(pad=max(1, xt.shape[-1] // 8)),
                            class_names=class_names, pixel_scale=pixel_scale_of(np.asarray(x)))


def load_image_folder(
    root: Path, seed: int, image_size: int | tuple[int, int] | None,
    val_fraction: float | None = None,
) -> Dataset:
    """Custom data: ``root/<class>/<image>`` files, resized to one size."""
    from PIL import Image, UnidentifiedImageError

    val = val_fraction_or(val_fraction, CUSTOM_TEST_FRACTION, CUSTOM_VAL_FRACTION)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(
            f"image folder {str(root)!r} has {len(class_dirs)} class sub-folder(s); "
            "put each class's images in its own sub-folder (at least 2 classes)"
        )
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not imgs:
            raise DataError(
                f"class folder {str(d)!r} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        files.extend((p, label) for p in imgs)
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    images: list[Image.Image] = []
    for p, _ in files:
        try:
            with Image.open(p) as im:
                im.load()
                images.append(im.copy())
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {str(p)!r}: {exc}; fix or remove the file") from exc
    gray = all(im.mode in ("1", "L", "I", "I;16", "F") for im in images)
    mode = "L" if gray else "RGB"
    h, w = image_size if image_size is not None else (images[0].height, images[0].width)
    arrays = []
    for im in images:
        im = im.convert(mode)
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0)
    labels = np.array([label for _, label in files], dtype=np.int64)
    splits = stratified_split(labels, val, CUSTOM_TEST_FRACTION, seed, CUSTOM_VAL_FRACTION)
    names = tuple(d.name for d in class_dirs)
    return assemble_dataset(
        root.name, x, torch.from_numpy(labels), splits, Augment(pad=max(1, w // 8)),
        class_names=names, num_classes=len(class_dirs), pixel_scale=255.0,
    )
