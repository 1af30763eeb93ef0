"""The registry of export formats (light: importing it imports neither torch nor the exporters).

The built-in formats are lazy entries, defined in :mod:`cellblock.export.exporter`, so the
command line can list them without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cellblock.core.registry import Registry

#: ``fn(reference, out_dir) -> result dict``: writes one format and checks its round trip.
Exporter = Callable[..., dict[str, Any]]
FORMATS: Registry[Exporter] = Registry("export format", lazy={
    name: ("cellblock.export.exporter", None) for name in ("json", "pytorch", "torchscript", "onnx")})


def register_format(name: str) -> Callable[[Exporter], Exporter]:
    """Decorator registering ``fn(reference, out_dir) -> result dict`` as a format."""
    return FORMATS.register(name)  # type: ignore[return-value]
