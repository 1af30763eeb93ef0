"""What evaluating a candidate needs, built from a resolved config in one place.

The runner, the backends' worker processes, export, final training, the bench and
``supernet rank`` all build their space (with the dataset's input shape and classes as
context), data and pipeline here, so they agree on every detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cellblock.core.config import RunConfig
from cellblock.core.devices import resolve_device
from cellblock.core.errors import ConfigError
from cellblock.core.objectives import Constraint, Objective, parse_objectives
from cellblock.data import load_dataset
from cellblock.evaluators.base import EVALUATORS, EvalContext
from cellblock.evaluators.pipeline import Pipeline
from cellblock.search_spaces.api import SearchSpace, resolve_space_fn


@dataclass
class Components:
    """What evaluating a candidate needs; built the same way in the search process and workers."""

    space: SearchSpace
    objectives: list[Objective]
    constraints: list[Constraint]
    pipeline: Pipeline


def run_data(config: RunConfig) -> Any:
    """The run's dataset, or None when its evaluator needs none (e.g. a benchmark table)."""
    import cellblock.evaluators  # noqa: F401  (registers the built-in evaluators)

    resolve_space_fn(config.space)  # a custom space's module may register evaluators
    if not EVALUATORS.get(config.evaluator).needs_data:
        return None
    return load_dataset(config.dataset, config.data_dir, bool(config.download),
                        seed=0, val_fraction=config.val_fraction,
                        remap_labels=bool(config.remap_labels))


def build_space(config: RunConfig, data: Any = None) -> SearchSpace:
    """The search space of a run: its skeleton plus the input shape and classes as context.

    The context comes from ``data`` when given, else from the space's own defaults; this is
    the one place where a run's input shape is decided.
    """
    kwargs: dict[str, Any] = dict(config.space_args)
    if data is not None:
        kwargs.setdefault("input_shape", tuple(data.input_shape))
        kwargs.setdefault("num_classes", data.num_classes)
    space = SearchSpace(config.space, **kwargs)
    if data is None:
        defaults = space.arguments()
        for name in SearchSpace.CONTEXT_ARGS:
            if name in defaults and name not in space.kwargs:
                space.kwargs[name] = defaults[name]
    return space


def build_components(config: RunConfig, data: Any = None) -> Components:
    """Space, objectives, constraints and evaluation pipeline of a resolved config.

    Args:
        config: The resolved config.
        data: The dataset if already loaded (else loaded here when the evaluator needs it).

    Raises:
        CellblockError: for unknown names, bad options or missing data.
    """
    import numpy as np

    cfg = config
    objectives = parse_objectives(cfg.objectives)
    constraints = [Constraint.parse(c) for c in cfg.constraints]
    wanted = {o.name for o in objectives} | {c.metric for c in constraints}
    if "supernet_score" in wanted and (
        cfg.evaluator != "supernet" or cfg.supernet_prior == "none"):
        raise ConfigError("metric 'supernet_score' is reported by --evaluator supernet with "
                          "--supernet-prior macs or params; set both, or use accuracy")
    device = resolve_device(cfg.device)  # an unavailable device is a ConfigError here
    if data is None:
        data = run_data(cfg)
    evaluator_cls = EVALUATORS.get(cfg.evaluator)
    space = build_space(cfg, data)
    space.sample(np.random.default_rng(cfg.seed))  # fails early on a broken space
    ctx = EvalContext(cfg, space, data, device)
    pipeline = Pipeline(ctx, evaluator_cls(ctx), objectives, constraints)
    return Components(space, objectives, constraints, pipeline)


__all__ = ["Components", "build_components", "build_space", "run_data"]
