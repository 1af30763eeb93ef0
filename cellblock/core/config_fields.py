"""How a config key is declared: its command-line spelling (:class:`Option`), its
declaration as :data:`cellblock.core.config.FIELDS` shows it (:class:`Field`) and the value
checks the keys use."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cellblock.core.objectives import SUPERNET_PRIORS


@dataclass(frozen=True)
class Option:
    """How a config key is spelled on the command line (``cellblock search`` builds it).

    Attributes:
        flag: The option, default ``--`` and the key with dashes (``--batch-size``).
        metavar: The value's name in ``--help``.
        form: ``value`` (one value of the key's type), ``auto_or_int`` (``auto`` or an
            integer), ``key_value`` (repeatable ``KEY=VALUE``, VALUE read as YAML, into a
            mapping) or ``repeat`` (repeatable text, into a list). A bool key is a switch:
            ``--flag`` when it defaults to false, ``--flag/--no-flag`` when to true.
    """

    flag: str | None = None
    metavar: str | None = None
    form: str = "value"


@dataclass(frozen=True)
class Field:
    """One config key: default, accepted type(s), help, extra check and CLI spelling.

    ``help`` is the one description of the key (``--help``, YAML errors); ``choices``, when
    given, are listed after it. ``option`` is None for a key that is set in YAML only.
    """

    default: Any
    types: tuple[type, ...]
    help: str
    check: Callable[[Any], str | None] | None = None
    nullable: bool = False
    choices: tuple[str, ...] = ()
    option: Option | None = Option()

    def describe(self) -> str:
        """The help text, with the choices when the key has a fixed set."""
        return f"{self.help}: {', '.join(self.choices)}" if self.choices else self.help

    def flag(self, key: str) -> str:
        """The command-line option of ``key`` (``--batch-size``)."""
        given = self.option.flag if self.option else None
        return given or "--" + key.replace("_", "-")


#: An extra check of a key's value: None when it is fine, else what is wrong.
Check = Callable[[Any], "str | None"]


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in allowed else f"must be one of: {', '.join(allowed)}"

    return check


#: Early stopping of the ray backend.
SCHEDULERS = ("none", "asha", "mo-asha")
#: Costs fused into the supernet evaluator's score.
PRIORS = ("none", *SUPERNET_PRIORS)


def scheduler_name(v: Any) -> str | None:
    if v == "hyperband":  # measured: with trials asked one by one it never stopped a trial
        return ("'hyperband' is not offered: Ray Tune's synchronous HyperBand needs its brackets "
                "filled up front and stopped no trial in cellblock's searches; use asha (its "
                "asynchronous form) or mo-asha")
    return one_of(*SCHEDULERS)(v)


def known_prior(v: Any) -> str | None:
    return None if v in PRIORS else f"must be one of {', '.join(PRIORS)}"


def str_list(v: Any) -> str | None:
    return None if all(isinstance(x, str) for x in v) else "must be a list of strings"


def device_name(v: Any) -> str | None:
    if re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
        return None
    return "must be auto, cpu, cuda, cuda:N or mps"


def resources_spec(v: Any) -> str | None:
    item = r"\s*[A-Za-z_][\w-]*\s*=\s*\d+(\.\d*)?\s*"
    return None if re.fullmatch(rf"{item}(,{item})*", v) else "must look like cpu=1,gpu=0.5"


def auto_or_count(auto: str) -> Callable[[Any], str | None]:
    """Check of a key that is ``auto`` or an integer >= 1 (``auto`` described by ``auto``)."""

    def check(v: Any) -> str | None:
        ok = v == "auto" or (isinstance(v, int) and v >= 1)
        return None if ok else f"must be {auto} or an integer >= 1"

    return check


AUTO_OR_INT = Option(metavar="N", form="auto_or_int")
YAML_ONLY = None

def autotune_setting(v: Any) -> str | None:
    return None if v is True or v is False or v == "auto" else "must be auto, true or false"
