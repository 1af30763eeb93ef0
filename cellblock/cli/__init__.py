"""The command line; the only package that imports argparse.

One module per sub-command (``search``, ``show``, ``spaces``, ``report``, ``export``,
``train``, ``bench``, ``supernet``), each registering itself with
:func:`cellblock.cli.common.command`; :mod:`cellblock.cli.app` builds the parser. May
import every other package; nothing imports it.
"""

from __future__ import annotations

from cellblock.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
