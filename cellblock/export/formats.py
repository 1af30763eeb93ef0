"""The registry of export formats (light: importing it imports neither torch nor the exporters).

The built-in formats are lazy entries, defined in :mod:`cellblock.export.exporter`, so the
command line can list them without importing torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

from cellblock.core.errors import ConfigError
from cellblock.core.registry import Registry

#: ``fn(reference, out_dir) -> result dict``: writes one format and checks its round trip.
Exporter = Callable[..., dict[str, Any]]
FORMATS: Registry[Exporter] = Registry("export format", lazy={
    name: ("cellblock.export.exporter", None)
    for name in ("json", "pytorch", "torchscript", "onnx")})


#: Python packages each format needs, and the extra that installs them.
REQUIRES: dict[str, tuple[tuple[str, ...], str]] = {"onnx": (("onnx", "onnxruntime"), "onnx")}


def register_format(name: str, requires: tuple[str, ...] = (), extra: str | None = None
                    ) -> Callable[[Exporter], Exporter]:
    """Decorator registering ``fn(reference, out_dir) -> result dict`` as a format.

    Args:
        name: The format's name.
        requires: Python packages the format needs (checked before anything is written).
        extra: The pip extra of cellblock that installs them, named in the error.
    """
    if requires:
        REQUIRES[name] = (tuple(requires), extra or name)
    return FORMATS.register(name)  # type: ignore[return-value]


def missing_packages(fmt: str) -> tuple[list[str], str | None]:
    """The packages ``fmt`` needs that are not installed, and the extra that installs them."""
    need, extra = REQUIRES.get(fmt, ((), None))
    return [m for m in need if importlib.util.find_spec(m) is None], extra


def check_formats(formats: Sequence[str]) -> None:
    """Raise one ConfigError for an unknown format or one whose packages are missing."""
    for fmt in formats:
        FORMATS.get(fmt)
        missing, extra = missing_packages(fmt)
        if missing:
            raise ConfigError(f"format {fmt!r} needs {' and '.join(missing)}, which is not "
                              f"installed; pip install 'cellblock[{extra}]' (nothing was written)")


def available_formats() -> list[str]:
    """Registered formats whose packages are installed (the default of ``cellblock export``)."""
    return [f for f in FORMATS.names() if not missing_packages(f)[0]]
