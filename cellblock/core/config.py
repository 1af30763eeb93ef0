"""Search configuration: YAML file + CLI overrides -> one frozen, checked :class:`RunConfig`.

Every key is declared once, as an attribute of :class:`RunConfig`, with its type, default,
check, help and command-line spelling; :data:`FIELDS` is the view of those declarations that
``cellblock search`` builds its options from. Unknown keys, wrong types and out-of-range
values raise :class:`ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cellblock.core.config_fields import (
    AUTO_OR_INT,
    PRIORS,
    SCHEDULERS,
    YAML_ONLY,
    Check,
    Field,
    Option,
    auto_or_count,
    autotune_setting,
    device_name,
    known_prior,
    non_negative,
    positive,
    resources_spec,
    scheduler_name,
    str_list,
)
from cellblock.core.errors import ConfigError


def opt(default: Any, help: str, check: Check | None = None, *, choices: tuple[str, ...] = (),
        cli: Option | None = Option()) -> Any:
    """Declare one :class:`RunConfig` key: its default, help, extra check and CLI spelling
    (``cli=None``: set in YAML only). The accepted types come from the annotation."""
    meta = {"cellblock": (help, check, choices, cli)}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of a search: every key, typed, checked and immutable.

    Each attribute is declared once, here, with its type, default, help and command-line
    spelling (``cellblock search`` builds its options from :data:`FIELDS`, derived from
    these). Building one checks every value (:class:`ConfigError` names the key and what is
    allowed); ``replace`` gives a checked copy with some keys changed.
    """

    space: str = opt("blocks", "search space: a registered name, module:function or "
                     "file.py:function")
    space_args: dict[str, Any] = opt({}, "space (skeleton) option, repeatable; VALUE is YAML, "
                                     "e.g. stages=2",
                                     cli=Option("--space-arg", "KEY=VALUE", "key_value"))
    strategy: str = opt("predictive", "search strategy: random, evolution, nsga2, ...")
    strategy_args: dict[str, Any] = opt({}, "strategy option, repeatable, e.g. population_size=10",
                                        cli=Option("--strategy-arg", "KEY=VALUE", "key_value"))
    evaluator: str = opt("train", "how candidates get their accuracy")
    proxy: str = opt("synflow", "zero-cost proxy reported by the 'proxy' evaluator (synflow, "
                     "naswot, jacob_cov, grad_norm, snip)", cli=YAML_ONLY)
    table: str | None = opt(None, "benchmark table (CSV or parquet) for --evaluator table")
    metric: str | None = opt(None, "table column used as accuracy for --evaluator table")
    supernet: str | None = opt(None, "supernet checkpoint for --evaluator supernet (from "
                               "'cellblock supernet train')")
    supernet_prior: str = opt("none", "--evaluator supernet also reports supernet_score, its "
                              "accuracy fused with this cost (use it as an objective)", known_prior,
                              choices=PRIORS)
    trials: int = opt(24, "number of trials (evaluated candidates)", positive)
    epochs: int = opt(8, "training epochs per candidate", positive)
    batch_size: int = opt(64, "training batch size", positive)
    lr: float = opt(0.1, "peak learning rate (cosine schedule)", positive)
    weight_decay: float = opt(5e-4, "SGD weight decay", non_negative, cli=YAML_ONLY)
    label_smoothing: float = opt(0.1, "label smoothing",
                                 lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
                                 cli=YAML_ONLY)
    dataset: str = opt("digits", "digits, mnist, fashion-mnist, cifar10, cifar100, svhn, an "
                       "ImageFolder DIR or FILE.npz")
    data_dir: str | None = opt(None, "directory of torchvision datasets")
    download: bool = opt(False, "download a torchvision dataset into --data-dir if missing")
    remap_labels: bool = opt(False, "map an .npz's non-contiguous integer labels to 0..K-1 (the "
                             "mapping is recorded) instead of refusing them")
    val_fraction: float | None = opt(None, "fraction of the data held out for validation "
                                     "(default 0.15 of digits and custom data, 0.1 of a "
                                     "torchvision train set)",
                                     lambda v: None if 0 < v < 1 else "must be in (0, 1), e.g. 0.4",
                                     cli=Option(metavar="F"))
    objectives: tuple[str, ...] = opt(("accuracy", "macs", "latency_ms"), "metrics to optimise, "
                                      "comma-separated, e.g. accuracy,macs,latency_ms")
    constraints: tuple[str, ...] = opt((), "constraint such as 'macs<=5M', repeatable",
                                       cli=Option("--constraint", "EXPR", "repeat"))
    device: str = opt("auto", "device to train and time on: auto, cpu, cuda, cuda:N or mps",
                      device_name)
    latency_batch_size: int = opt(1, "batch size of latency measurements", positive,
                                  cli=YAML_ONLY)
    latency_runtime: str | None = opt(None, "runtime of measured latency: torch (default), "
                                      "torchscript, onnxruntime")
    latency_table: str | None = opt(None, "latency table from 'cellblock latency profile': "
                                    "latency_ms is its prediction, nothing is measured",
                                    cli=Option(metavar="FILE"))
    latency_repeats: int = opt(30, "timed runs per latency measurement (median kept)", positive,
                               cli=YAML_ONLY)
    latency_max_spread: float = opt(2.0, "latency p90/p10 above which a measurement is "
                                    "repeated, then marked unstable",
                                    lambda v: None if v > 1 else "must be > 1",
                                    cli=Option(metavar="RATIO"))
    allow_unstable_latency: bool = opt(False, "let trials whose latency stayed unstable "
                                       "(p90/p10 over --latency-max-spread) onto the Pareto "
                                       "front")
    allow_changed_inputs: bool = opt(False, "continue a run although its dataset, supernet, "
                                     "table or space file changed (recorded in trials.jsonl)")
    out: str | None = opt(None, "run directory (default "
                          "results/runs/<space>-<dataset>-<strategy>-seed<seed>)")
    seed: int = opt(0, "random seed of the search (and of each trial's init)", non_negative)
    storage: str | None = opt(None, "Optuna storage of optuna:* strategies: journal file or "
                              "SQLAlchemy URL (default RUN/optuna.journal)",
                              cli=Option(metavar="URL"))
    backend: str = opt("auto", "where trials run: auto (a process pool packed on every visible "
                       "GPU, else local), local (in-process), process (local process pool) or "
                       "ray")
    concurrency: int | str | None = opt(None, "trials evaluated at the same time (default: GPUs "
                                        "x --trials-per-gpu with GPUs, else 1); auto (--backend "
                                        "ray): as many as the cluster's resources allow, "
                                        "following nodes that join or leave",
                                        auto_or_count("auto (ray backend)"), cli=AUTO_OR_INT)
    infra_retries: int = opt(2, "re-runs of a trial whose worker process, actor or node died; "
                             "an exception of the candidate is FAILED and never re-run; a trial "
                             "still lost after that stops the run for a rerun", non_negative,
                             cli=Option(metavar="N"))
    trials_per_gpu: str | int = opt("auto", "trials packed on each GPU: auto (from CPU cores "
                                    "and GPU memory) or K", auto_or_count("auto"),
                                    cli=Option(metavar="K", form="auto_or_int"))
    cuda_graphs: bool = opt(True, "capture training steps as CUDA graphs on CUDA (eager when "
                            "capture fails)")
    cudnn_benchmark: str | bool = opt("auto", "cudnn autotuning of each trial's training shapes "
                                      "on CUDA: auto (default) only for fixed shapes of networks "
                                      "over 1e9 MACs per batch (cellblock.evaluators.autotune), "
                                      "or true / false", autotune_setting)
    threads_per_trial: int | None = opt(None, "torch threads per trial; may change when a run is "
                                        "continued (default: 1 for candidates under 5e8 MACs per "
                                        "training batch or with --concurrency > 1, else the "
                                        "cores free of other load)", positive)
    address: str | None = opt(None, "Ray cluster for --backend ray: auto or HOST:PORT (default: "
                              "a local Ray instance started for the run)")
    resources_per_trial: str | None = opt(None, "Ray resources of one trial, e.g. "
                                          "cpu=1,gpu=0.5 (default cpu=1, plus gpu=1/K with "
                                          "GPUs: K = --trials-per-gpu)", resources_spec,
                                          cli=Option(metavar="SPEC"))
    scheduler: str = opt("none", "early stopping of --backend ray, epochs as budget",
                         scheduler_name, choices=SCHEDULERS)
    grace_epochs: int = opt(1, "epochs before the first early-stopping rung", positive)
    reduction_factor: int = opt(3, "early stopping keeps the top 1/N at each rung",
                                lambda v: None if v >= 2 else "must be >= 2")

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _check(f.name, getattr(self, f.name)))

    def replace(self, **changes: Any) -> RunConfig:
        """A checked copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain, YAML-safe data (what ``config.yaml`` and the log hold)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_record(cls, recorded: Mapping[str, Any]) -> RunConfig:
        """The config a run recorded: a key added since takes its default, a key since
        removed is dropped (a value no longer allowed raises :class:`ConfigError`)."""
        return cls(**{k: v for k, v in recorded.items() if k in FIELDS})


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _field_types(annotation: str) -> tuple[tuple[type, ...], bool]:
    """The accepted types of an annotation (``float`` takes an int too, ``tuple[str, ...]``
    a list or a comma-separated string) and whether None is allowed."""
    types: list[type] = []
    for part in annotation.split(" | "):
        types += _ACCEPTS.get(part, ())
    return tuple(dict.fromkeys(types)), "None" in annotation.split(" | ")


_ACCEPTS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (float, int), "bool": (bool,),
    "dict[str, Any]": (dict,), "tuple[str, ...]": (list, str),
}


def _fields() -> dict[str, Field]:
    out = {}
    for f in fields(RunConfig):
        help, check, choices, cli = f.metadata["cellblock"]
        types, nullable = _field_types(str(f.type))
        if not types:
            raise TypeError(f"RunConfig.{f.name}: no accepted types for {f.type!r}")
        default = {} if f.default is dataclasses.MISSING else _plain(f.default)
        out[f.name] = Field(default, types, help, check, nullable, choices, cli)
    return out


#: Every config key's declaration (from :class:`RunConfig`), in declaration order.
FIELDS: dict[str, Field] = _fields()
# Keys that may change when an existing run is continued: the budget, and where and how
# widely trials run (continue a laptop run on a Ray cluster with more workers, or on GPUs).
# Latency is timed with the device held exclusively (cellblock.core.device_lock).
RESUMABLE_KEYS = ("trials", "out", "backend", "concurrency", "address", "resources_per_trial",
                  "infra_retries", "trials_per_gpu", "cuda_graphs", "cudnn_benchmark",
                  "allow_changed_inputs", "allow_unstable_latency", "threads_per_trial")


def _check(key: str, value: Any) -> Any:
    spec = FIELDS[key]
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"config key {key!r} must not be empty; {spec.describe()}")
    if isinstance(value, bool) and bool not in spec.types:
        raise ConfigError(f"config key {key!r} must be {_type_names(spec)}, got {value!r}")
    if list in spec.types and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, spec.types):
        raise ConfigError(f"config key {key!r} must be {_type_names(spec)}, got {value!r}")
    if list in spec.types:
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        problem = str_list(value)
        if problem:
            raise ConfigError(f"config key {key!r} {problem}, got {value!r}")
        value = tuple(value)
    if isinstance(value, dict):
        value = dict(value)
    if float in spec.types and isinstance(value, int):
        value = float(value)
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ConfigError(f"config key {key!r} {problem}, got {value!r}")
    return value


def _type_names(spec: Field) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "a mapping",
        list: "a list",
    }
    return " or ".join(dict.fromkeys(names[t] for t in spec.types))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict.

    Raises:
        ConfigError: if the file is missing, malformed or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML in {str(path)!r}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys, got {type(data).__name__}"
        )
    return data


def resolve(*layers: Mapping[str, Any]) -> RunConfig:
    """Merge config layers (later ones win) over the defaults and validate every key.

    Raises:
        ConfigError: for an unknown key, a wrong type or an out-of-range value.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in FIELDS:
                close = difflib.get_close_matches(str(key), list(FIELDS), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown config key {key!r}; allowed: {', '.join(FIELDS)}{hint}")
            merged[key] = value
    return RunConfig(**merged)


def default_run_dir(cfg: RunConfig) -> Path:
    """``results/runs/<space>-<dataset>-<strategy>-seed<seed>``, made path-safe.

    A custom space ``file.py:function`` is named by its function; the strategy keeps its
    full name (``optuna:nsga2`` -> ``optuna_nsga2``), so no two strategies share a folder.
    A benchmark-table run reads no dataset: it is named by its table's file name instead.
    """
    space = cfg.space.rpartition(":")[2] or cfg.space
    data = cfg.table if cfg.evaluator == "table" and cfg.table else cfg.dataset
    parts = [space, Path(data).stem or data, cfg.strategy]
    name = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)
    return Path("results") / "runs" / f"{name}-seed{cfg.seed}"


def differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys (other than :data:`RESUMABLE_KEYS`) whose values differ between two configs as
    recorded (plain data: a run's ``run_start`` config, :meth:`RunConfig.to_dict`)."""
    keys = (set(saved) | set(new)) - set(RESUMABLE_KEYS)

    def get(cfg: Mapping[str, Any], k: str) -> Any:  # a key added since: its default
        return cfg.get(k, FIELDS[k].default if k in FIELDS else None)

    return sorted(k for k in keys if get(saved, k) != get(new, k))


def dump(cfg: RunConfig) -> str:
    """YAML text of a resolved config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
