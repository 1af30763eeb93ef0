"""Command-line options generated from the config keys (:data:`cellblock.core.config.FIELDS`).

Each key's flag, type, help, choices and default are declared once, in ``FIELDS``; this
module turns them into ``argparse`` options (default None, so a YAML file may set the key)
and turns the parsed options back into config overrides.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from cellblock.cli.common import _key_value
from cellblock.core.config import FIELDS
from cellblock.core.config_fields import Field


def auto_or_int(text: str) -> int | str:
    """``auto`` or an integer, for options such as ``--concurrency auto|N``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer, got {text!r}") from None


def help_text(spec: Field) -> str:
    """The key's help with its default, as ``--help`` shows it."""
    text = spec.describe()
    if spec.default is None or "default" in text:
        return text
    default = spec.default
    if isinstance(default, (list, dict)):
        default = ",".join(map(str, default)) or "none"
    return f"{text} (default: {default})"


def add_config_option(parser: argparse.ArgumentParser, key: str, **overrides: Any) -> None:
    """Add the option of config key ``key``; ``overrides`` replace argparse settings.

    A command whose option means the same as the key but differs in a setting (``bench``'s
    required ``--table``) passes that setting here, so name and parsing stay shared.
    """
    spec = FIELDS[key]
    if spec.option is None:
        raise KeyError(f"config key {key!r} has no command-line option")
    form, metavar = spec.option.form, spec.option.metavar
    kwargs: dict[str, Any] = {"dest": key, "help": help_text(spec)}
    if metavar:
        kwargs["metavar"] = metavar
    if form == "key_value":
        kwargs.update(action="append", type=_key_value)
    elif form == "repeat":
        kwargs.update(action="append")
    elif form == "auto_or_int":
        kwargs.update(type=auto_or_int)
    elif bool in spec.types:
        if spec.default:
            kwargs.update(action=argparse.BooleanOptionalAction)
        else:
            kwargs.update(action="store_const", const=True)
    elif float in spec.types:
        kwargs.update(type=float)
    elif int in spec.types:
        kwargs.update(type=int)
    kwargs.update(overrides)
    parser.add_argument(spec.flag(key), **kwargs)


def search_keys() -> list[str]:
    """The config keys that are command-line options, in ``FIELDS`` order."""
    return [k for k, spec in FIELDS.items() if spec.option is not None]


def add_config_options(parser: argparse.ArgumentParser, keys: Iterable[str] | None = None) -> None:
    """Add the option of every config key in ``keys`` (default: all that have one)."""
    for key in search_keys() if keys is None else keys:
        add_config_option(parser, key)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given on the command line (repeated ``KEY=VALUE`` as a mapping)."""
    out: dict[str, Any] = {}
    for key, spec in FIELDS.items():
        value = getattr(args, key, None)
        if value is None or spec.option is None:
            continue
        form = spec.option.form
        if form == "key_value":
            value = dict(value)
        elif form == "repeat":
            value = list(value)
        out[key] = value
    return out
