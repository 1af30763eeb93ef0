"""Export: turning a chosen architecture into deployable artefacts, verified, and training it fully.

Owns: :mod:`.formats` (the format registry), :mod:`.selection` (which trials or arch file),
:mod:`.exporter` (writing JSON / PyTorch source / TorchScript / ONNX), :mod:`.verify` (export
items, the reference network and the round-trip checks), :mod:`.clean_check` (the clean
interpreter that loads exported files), :mod:`.codegen` (plain-PyTorch
source) and :mod:`.final_train` (``cellblock train``). May import: :mod:`cellblock.core`,
:mod:`cellblock.data`, :mod:`cellblock.records`, :mod:`cellblock.pareto`,
:mod:`cellblock.run` and the plugin packages. The names below are imported on first use,
so ``import cellblock.export.formats`` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "FORMATS": "formats", "register_format": "formats", "ExportItem": "verify",
    "export_items": "exporter", "item_from_arch_file": "selection", "items_from_run": "selection",
    "select_trials": "selection",
}


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'cellblock.export' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cellblock.export.{_NAMES[name]}"), name)


__all__ = sorted(_NAMES)
