"""The dataset loaders behind :func:`cellblock.data.load_dataset`.

Built-in datasets (scikit-learn's ``digits`` and the torchvision ones) are registered
in :data:`cellblock.data.DATASETS` when this module is imported (by
:mod:`cellblock.data`); custom data is read by :mod:`cellblock.data.files`. Every
loader returns a normalised :class:`cellblock.data.Dataset` (see :mod:`cellblock.data`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cellblock.core.errors import DataError
from cellblock.data.api import (
    CUSTOM_TEST_FRACTION,
    CUSTOM_VAL_FRACTION,
    DATASETS,
    DEFAULT_DATA_DIR,
    TORCHVISION_VAL_FRACTION,
    Augment,
    Dataset,
    Loader,
    dataset_names,
    stratified_split,
)
from cellblock.data.assemble import assemble_dataset, val_fraction_or
from cellblock.data.files import load_image_folder, load_npz

# ----------------------------------------------------------------------------- built-in


@DATASETS.register("digits")
def _load_digits(
    data_dir: Path, download: bool, seed: int, *, val_fraction: float | None = None
) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits (bundled, no download)."""
    val = val_fraction_or(val_fraction, CUSTOM_TEST_FRACTION, CUSTOM_VAL_FRACTION)
    images, target = digits_arrays()
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(target.astype(np.int64))
    splits = stratified_split(target, val, CUSTOM_TEST_FRACTION, seed, CUSTOM_VAL_FRACTION)
    names = tuple(str(t) for t in range(10))
    return assemble_dataset("digits", x, y, splits, Augment(pad=1, flip=False),
                            class_names=names, pixel_scale=16.0)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images, target)`` of scikit-learn's digits, as ``load_digits()`` gives them.

    Read from the CSV that scikit-learn bundles, without importing scikit-learn (a
    3-second import on a small machine, paid by every search and worker process); with
    ``load_digits`` itself when that file is not where it is expected.
    """
    spec = importlib.util.find_spec("sklearn")
    path = None
    if spec and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@dataclass(frozen=True)
class _TorchvisionSpec:
    cls_name: str
    subdir: str
    files: tuple[str, ...]
    augment: Augment
    split_arg: bool = False  # SVHN takes split="train"/"test" instead of train=True/False


_TORCHVISION: dict[str, _TorchvisionSpec] = {
    "mnist": _TorchvisionSpec(
        "MNIST",
        "MNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"),
        Augment(pad=2),
    ),
    "fashion-mnist": _TorchvisionSpec(
        "FashionMNIST",
        "FashionMNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"),
        Augment(pad=2),
    ),
    "cifar10": _TorchvisionSpec(
        "CIFAR10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        Augment(pad=4, flip=True),
    ),
    "cifar100": _TorchvisionSpec(
        "CIFAR100", "cifar-100-python", ("train", "test", "meta"), Augment(pad=4, flip=True)
    ),
    "svhn": _TorchvisionSpec(
        "SVHN", "", ("train_32x32.mat", "test_32x32.mat"), Augment(pad=2), split_arg=True
    ),
}


def _images_to_nchw(data: object) -> torch.Tensor:
    """torchvision ``.data`` ((N,H,W), (N,H,W,C) or SVHN's (N,C,H,W) uint8) as NCHW in [0, 1]."""
    x = torch.as_tensor(np.asarray(data))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    return x.float().div_(255.0).contiguous()


def _torchvision_loader(name: str, spec: _TorchvisionSpec) -> Loader:
    def load(
        data_dir: Path, download: bool, seed: int, *, val_fraction: float | None = None
    ) -> Dataset:
        import torchvision.datasets as tvd

        val = val_fraction_or(val_fraction, 0.0, TORCHVISION_VAL_FRACTION)
        folder = data_dir / spec.subdir if spec.subdir else data_dir
        missing = [f for f in spec.files if not (folder / f).is_file()]
        if missing and not download:
            raise DataError(
                f"dataset {name!r} not found in {str(folder)!r} (expected files: "
                f"{', '.join(spec.files)}); pass --download to fetch it or --data-dir to "
                "point at a directory that has it"
            )
        cls = getattr(tvd, spec.cls_name)
        try:
            if spec.split_arg:
                train = cls(str(data_dir), split="train", download=download)
                test = cls(str(data_dir), split="test", download=download)
            else:
                train = cls(str(data_dir), train=True, download=download)
                test = cls(str(data_dir), train=False, download=download)
        except Exception as exc:  # network, checksum or parse failure
            raise DataError(
                f"could not load dataset {name!r} from {str(data_dir)!r}: {exc}; "
                "check the files or delete them and pass --download again"
            ) from exc
        labels = [np.asarray(getattr(ds, "targets", getattr(ds, "labels", None)))
                  for ds in (train, test)]
        y_train, y_test = (torch.as_tensor(lab.astype(np.int64)) for lab in labels)
        x_train, x_test = _images_to_nchw(train.data), _images_to_nchw(test.data)
        splits = stratified_split(labels[0], val, 0.0, seed)
        classes = tuple(str(c) for c in getattr(train, "classes", ()))
        n_cls = int(max(y_train.max(), y_test.max())) + 1
        return assemble_dataset(name, x_train, y_train, splits, spec.augment, x_test, y_test,
                                classes, n_cls, pixel_scale=255.0)

    return load


for _name, _spec in _TORCHVISION.items():
    DATASETS.register(_name, _torchvision_loader(_name, _spec))




def dataset_ref(name: str) -> str:
    """``name`` as :func:`load_dataset` reads it from any directory: a built-in name as it
    is (names come first, as there), an existing ``.npz`` or image folder by its absolute path."""
    if name in DATASETS:
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


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
        return load_npz(path, seed, val_fraction, remap_labels)
    if path.is_dir():
        return load_image_folder(path, seed, image_size, val_fraction)
    raise DataError(
        f"unknown dataset {name!r}; use one of {', '.join(dataset_names())}, "
        "a path to an .npz file (arrays x and y) or a path to an image-folder directory"
    )
