"""The dataset loaders behind :func:`cellblock.data.load_dataset`.

Built-in datasets (scikit-learn's ``digits`` and the torchvision ones) are registered
in :data:`cellblock.data.DATASETS` when this module is imported (by
:mod:`cellblock.data`); custom data is read by :func:`load_npz` (an ``.npz`` with ``x``
and ``y``) and :func:`load_image_folder` (one sub-folder of images per class). Every
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
    IMAGE_EXTENSIONS,
    TORCHVISION_VAL_FRACTION,
    Augment,
    Dataset,
    Loader,
    Normalisation,
    check_val_fraction,
    dataset_names,
    detect_layout,
    stratified_split,
)
from cellblock.data.labels import check_labels, check_splits

# ----------------------------------------------------------------------------- helpers


def _val(val_fraction: float | None, test_fraction: float, default: float) -> float:
    checked = check_val_fraction(val_fraction, test_fraction)
    return default if checked is None else checked


def _normalise(
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


def _build(
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
    (x_tr, x_va, x_te), norm = _normalise(x[tr].float(), x[va].float(), x_test.float(),
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


# ----------------------------------------------------------------------------- built-in


@DATASETS.register("digits")
def _load_digits(
    data_dir: Path, download: bool, seed: int, *, val_fraction: float | None = None
) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits (bundled, no download)."""
    val = _val(val_fraction, CUSTOM_TEST_FRACTION, CUSTOM_VAL_FRACTION)
    images, target = digits_arrays()
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(target.astype(np.int64))
    splits = stratified_split(target, val, CUSTOM_TEST_FRACTION, seed, CUSTOM_VAL_FRACTION)
    names = tuple(str(t) for t in range(10))
    return _build("digits", x, y, splits, Augment(pad=1, flip=False), class_names=names,
                  pixel_scale=16.0)


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

        val = _val(val_fraction, 0.0, TORCHVISION_VAL_FRACTION)
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
        return _build(name, x_train, y_train, splits, spec.augment, x_test, y_test, classes, n_cls,
                      pixel_scale=255.0)

    return load


for _name, _spec in _TORCHVISION.items():
    DATASETS.register(_name, _torchvision_loader(_name, _spec))


# ----------------------------------------------------------------------------- custom


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
    val = _val(val_fraction, CUSTOM_TEST_FRACTION, CUSTOM_VAL_FRACTION)
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
    return _build(path.stem, xt, yt, splits, Augment(pad=max(1, xt.shape[-1] // 8)),
                  class_names=class_names, pixel_scale=pixel_scale_of(np.asarray(x)))


def load_image_folder(
    root: Path, seed: int, image_size: int | tuple[int, int] | None,
    val_fraction: float | None = None,
) -> Dataset:
    """Custom data: ``root/<class>/<image>`` files, resized to one size."""
    from PIL import Image, UnidentifiedImageError

    val = _val(val_fraction, CUSTOM_TEST_FRACTION, CUSTOM_VAL_FRACTION)
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
    return _build(
        root.name, x, torch.from_numpy(labels), splits, Augment(pad=max(1, w // 8)),
        class_names=names, num_classes=len(class_dirs), pixel_scale=255.0,
    )


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
