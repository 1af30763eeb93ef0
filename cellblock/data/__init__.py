"""Datasets: the in-memory ``Dataset`` type, the dataset registry and the loaders.

Owns: :mod:`.api` (``Dataset``, ``DATASETS``, splits and normalisation helpers),
:mod:`.labels` (label checks and explicit remapping), :mod:`.assemble` (a normalised
``Dataset`` from images and labels), :mod:`.files` (``.npz`` files and image folders) and
:mod:`.loaders` (``load_dataset``; digits and the torchvision sets, registered on import).
May import: :mod:`cellblock.core`.
"""

from __future__ import annotations

# The public names; the others (``Loader``, ``check_val_fraction``, ``DEFAULT_DATA_DIR``...)
# are imported from :mod:`.api` where they are defined.
from cellblock.data.api import (
    CUSTOM_TEST_FRACTION,
    CUSTOM_VAL_FRACTION,
    DATASETS,
    Augment,
    Dataset,
    Normalisation,
    dataset_names,
    detect_layout,
    stratified_split,
)
from cellblock.data.files import load_image_folder, load_npz
from cellblock.data.loaders import dataset_ref, load_dataset

__all__ = [
    "CUSTOM_TEST_FRACTION",
    "CUSTOM_VAL_FRACTION",
    "DATASETS",
    "Augment",
    "Dataset",
    "Normalisation",
    "dataset_names",
    "dataset_ref",
    "detect_layout",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "stratified_split",
]
