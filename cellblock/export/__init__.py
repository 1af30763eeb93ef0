"""Export: turning a chosen architecture into deployable artefacts, verified, and training it fully.

Owns: :mod:`.exporter` (formats registry, selection of trials, writing JSON / PyTorch
source / TorchScript / ONNX), :mod:`.verify` (export items, the reference network and
round-trip checks in a clean interpreter), :mod:`.codegen` (plain-PyTorch source) and
:mod:`.final_train` (``cellblock train``). May import: :mod:`cellblock.core`,
:mod:`cellblock.data`, :mod:`cellblock.records`, :mod:`cellblock.pareto`,
:mod:`cellblock.run` and the plugin packages.
"""

from __future__ import annotations

from cellblock.export.exporter import (
    FORMATS,
    export_items,
    item_from_arch_file,
    items_from_run,
    register_format,
    select_trials,
)
from cellblock.export.verify import ExportItem

__all__ = [
    "FORMATS",
    "ExportItem",
    "export_items",
    "item_from_arch_file",
    "items_from_run",
    "register_format",
    "select_trials",
]
