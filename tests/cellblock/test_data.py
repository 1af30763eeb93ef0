"""Datasets: digits, custom .npz and image folders, offline torchvision errors, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cellblock.core.errors import DataError
from cellblock.data import (
    Augment,
    dataset_names,
    detect_layout,
    load_dataset,
    stratified_split,
)
from cellblock.evaluators.loop import augment_batch


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.flatten(1)}


def test_digits_shapes_splits_and_normalisation() -> None:
    d = load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    n = len(d.y_train) + len(d.y_val) + len(d.y_test)
    assert n == 1797
    assert len(d.y_val) == pytest.approx(0.15 * n, abs=10)
    assert len(d.y_test) == pytest.approx(0.15 * n, abs=10)
    assert d.x_train.shape == (len(d.y_train), 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert abs(float(d.x_train.mean())) < 1e-4 and abs(float(d.x_train.std()) - 1) < 1e-3
    # Stratified: every class in every split.
    for y in (d.y_train, d.y_val, d.y_test):
        assert set(y.tolist()) == set(range(10))
    assert d.augment == Augment(pad=1, flip=False)
    assert "digits" in dataset_names()


def test_digits_split_is_deterministic_and_disjoint() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_test, b.y_test)
    # No image appears in two splits (digits has a few exact duplicates overall, so
    # compare the split index sets instead of pixel rows).
    tr, va, te = stratified_split(np.repeat(np.arange(10), 50), 0.15, 0.15, seed=0)
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
    assert len(tr) + len(va) + len(te) == 500
    c = load_dataset("digits", seed=1)
    assert not torch.equal(a.y_val, c.y_val)


def test_digits_splits_do_not_share_samples() -> None:
    from sklearn.datasets import load_digits

    images = load_digits().images
    unique = {img.tobytes() for img in images}
    d = load_dataset("digits")
    # Count of distinct raw images across splits equals the dataset's distinct count,
    # and train/val overlap is no larger than the number of duplicates in the raw data.
    dup = len(images) - len(unique)
    overlap = len(_rows(d.x_train) & _rows(d.x_val)) + len(_rows(d.x_train) & _rows(d.x_test))
    assert overlap <= dup


def _digits_raw() -> tuple[torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1), bunch.target


def _assert_split(d, raw: torch.Tensor, target: np.ndarray, splits) -> None:
    """``d`` holds exactly the images and labels of the index sets ``splits``."""
    tr, va, te = splits
    mean = raw[tr].mean(dim=(0, 2, 3), keepdim=True)
    std = raw[tr].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    for x, y, idx in ((d.x_train, d.y_train, tr), (d.x_val, d.y_val, va), (d.x_test, d.y_test, te)):
        assert torch.equal(y, torch.from_numpy(target[idx]))
        assert torch.allclose(x, (raw[idx] - mean) / std, atol=1e-6, rtol=0)


def test_default_digits_split_is_unchanged() -> None:
    raw, target = _digits_raw()
    splits = stratified_split(target, 0.15, 0.15, 0)
    assert [len(s) for s in splits] == [1259, 269, 269]
    for d in (load_dataset("digits"), load_dataset("digits", val_fraction=0.15)):
        _assert_split(d, raw, target, splits)


def test_val_fraction_enlarges_val_from_train_and_keeps_test() -> None:
    raw, target = _digits_raw()
    d = load_dataset("digits", val_fraction=0.4)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (809, 719, 269)
    tr, va, te = stratified_split(target, 0.4, 0.15, 0, test_after=0.15)
    _assert_split(d, raw, target, (tr, va, te))
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert set(tr) | set(va) | set(te) == set(range(1797))
    per_class = np.bincount(target)
    # stratified
    assert np.array_equal(np.bincount(target[va]), np.round(per_class * 0.4).astype(int))
    assert np.array_equal(np.bincount(target[te]), np.round(per_class * 0.15).astype(int))
    d_tr, d_va, d_te = stratified_split(target, 0.15, 0.15, 0)
    assert np.array_equal(te, d_te) and set(d_va) < set(va)  # same test set; default val nested


@pytest.mark.parametrize(
    ("value", "message"),
    [("0.4", "must be a number > 0"), (True, "must be a number > 0"), (0, "must be a number > 0"),
     (-0.1, "must be a number > 0"), (float("nan"), "must be a number > 0"),
     (0.85, "plus the test fraction 0.15 leaves no training data; pass a value below 0.85"),
     (1.5, "leaves no training data")],
)
def test_bad_val_fraction_raises_data_error(tmp_path: Path, value: object, message: str) -> None:
    np.savez(tmp_path / "toy.npz", x=np.zeros((30, 1, 4, 4), np.uint8), y=np.arange(30) % 3)
    for name in ("digits", str(tmp_path / "toy.npz")):
        with pytest.raises(DataError, match=message) as info:
            load_dataset(name, val_fraction=value)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
    # torchvision: the value is checked before the (missing) files; test is the official set.
    with pytest.raises(DataError,
                       match="val_fraction 1 leaves no training data; pass a value below 1"):
        load_dataset("cifar10", data_dir=str(tmp_path), val_fraction=1.0)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHW"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_npz_layouts_and_dtypes(tmp_path: Path, layout: str, dtype: str) -> None:
    rng = np.random.default_rng(0)
    n, c, h, w = 60, 3, 6, 5
    x = rng.integers(0, 256, size=(n, c, h, w)).astype(np.uint8)
    if layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    elif layout == "NHW":
        x = x[:, 0]
    if dtype == "float32":
        x = x.astype(np.float32) / 255.0
    y = np.arange(n) % 3
    path = tmp_path / "toy.npz"
    np.savez(path, x=x, y=y)
    d = load_dataset(str(path))
    want_c = 1 if layout == "NHW" else c
    assert d.input_shape == (want_c, h, w)
    assert d.num_classes == 3 and d.name == "toy"
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == n
    assert len(d.y_val) > 0 and len(d.y_test) > 0
    assert d.x_train.dtype == torch.float32


def test_layout_detection_is_robust() -> None:
    assert detect_layout((10, 3, 32, 32)) == "NCHW"
    assert detect_layout((10, 32, 32, 3)) == "NHWC"
    assert detect_layout((10, 4, 4, 3)) == "NHWC"
    assert detect_layout((10, 3, 4, 4)) == "NCHW"
    assert detect_layout((10, 1, 28, 28)) == "NCHW"
    with pytest.raises(DataError, match="1, 3 or 4 channels"):
        detect_layout((10, 5, 7, 9))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 1, 4, 4))}, "lacks array"),
        ({"x": np.zeros((10, 1, 4, 4)), "y": np.zeros(9, dtype=np.int64)}, "must match"),
        ({"x": np.zeros((10, 1, 4, 4)), "y": np.linspace(0, 1, 10)}, "not integers"),
        ({"x": np.zeros((10, 1, 4, 4)), "y": np.array(["a"] * 10)}, "not integers"),
        ({"x": np.zeros((10, 1, 4, 4)), "y": -np.ones(10, dtype=np.int64)}, "negative"),
        ({"x": np.zeros((10, 7, 5, 9)), "y": np.zeros(10, dtype=np.int64)}, "channels"),
        ({"x": np.full((10, 1, 4, 4), np.nan), "y": np.zeros(10, dtype=np.int64)}, "NaN"),
    ],
)
def test_malformed_npz_raises_data_error(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_not_an_npz_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "junk.npz"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(str(bad))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "absent.npz"))
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("no-such-dataset")


def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, cls in enumerate(["cat", "dog", "eel"]):
        (tmp_path / cls).mkdir()
        for i in range(8):
            size = (10, 12) if i else (7, 9)  # mixed sizes get resized
            arr = rng.integers(0, 256, size=(size[1], size[0], 3)).astype(np.uint8)
            arr[..., k] = 255
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    d = load_dataset(str(tmp_path), image_size=(12, 10))
    assert d.input_shape == (3, 12, 10)
    assert d.num_classes == 3 and d.class_names == ("cat", "dog", "eel")
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 24
    first = load_dataset(str(tmp_path))  # first image (cat/0.png, 7x9) sets the size
    assert first.input_shape == (3, 9, 7)


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="class sub-folder"):
        load_dataset(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no images"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cifar10", "data_batch_1"), ("mnist", "train-images-idx3-ubyte"),
     ("svhn", "train_32x32.mat")],
)
def test_missing_torchvision_dataset_offline(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, data_dir=str(tmp_path), download=False)
    msg = str(info.value)
    assert str(tmp_path) in msg and expected in msg and "--download" in msg and "--data-dir" in msg


def test_augmentation_keeps_shape_and_shifts() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    x = x.repeat(64, 1, 1, 1)
    out = augment_batch(x, Augment(pad=1, flip=True), gen)
    assert out.shape == x.shape
    changed = (out != x).flatten(1).any(1)
    assert 0 < int(changed.sum()) < len(x)  # some moved, some (offset 0, no flip) did not
    # A shift introduces zero padding: zeros appear although x has none.
    assert bool((out == 0).any())
    # Each output image is a shifted/flipped copy: its non-zero values come from the source.
    for i in range(len(x)):
        vals = set(out[i][out[i] != 0].tolist())
        assert vals <= set(x[i].flatten().tolist())
    same = augment_batch(x, Augment(pad=0, flip=False), gen)
    assert torch.equal(same, x)


def test_digits_are_read_without_importing_sklearn_and_equal_load_digits():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from cellblock.data.loaders import digits_arrays

    images, target = digits_arrays()
    bunch = load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, bunch.images)
    assert target.dtype == bunch.target.dtype and np.array_equal(target, bunch.target)
    code = ("import sys; from cellblock.data import load_dataset; load_dataset('digits'); "
            "print('sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_dataset_ref_is_what_load_dataset_reads_from_any_directory(tmp_path, monkeypatch):
    from cellblock.data import dataset_ref

    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()  # a folder named like a built-in: load_dataset takes the name
    (tmp_path / "mine.npz").write_bytes(b"")
    assert dataset_ref("digits") == "digits"
    assert dataset_ref("mine.npz") == str(tmp_path / "mine.npz")
    assert dataset_ref("missing.npz") == "missing.npz"  # load_dataset's own error names it
