"""What every sub-command module shares: the parser class, ``@command`` and option parsing.

Imports only argparse, yaml and :mod:`cellblock.core`; sub-command modules import this.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

import yaml

COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}


def command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a function that adds the sub-command ``name`` to the parser."""

    def add(fn: Callable[..., None]) -> Callable[..., None]:
        COMMANDS[name] = fn
        return fn

    return add


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"cellblock: error: {message} (see '{self.prog} --help')\n")


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot parse the value in {text!r}") from None


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: X)`` to the help of every option with a default its help omits."""
    for action in parser._actions:
        if (action.help in (None, argparse.SUPPRESS) or "default" in action.help
                or action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool)
                or not action.option_strings):
            continue
        action.help += " (default: %(default)s)"
