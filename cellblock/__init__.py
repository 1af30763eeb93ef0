"""cellblock: neural architecture search for accuracy versus cost.

Public API::

    import cellblock
    run = cellblock.search(space="blocks", trials=10, epochs=3)
    print(run.pareto)

The package is laid out along the data flow (each sub-package's docstring says what it
owns and what it may import)::

    core     errors, registries, objectives, atomic file I/O   (imports nothing of cellblock)
    data     datasets and their registry
    records  the append-only trial log and the Trial type
    pareto   front math, derived files, plots, the HTML report
    run      config, components, the run loop, backends, bench
    export   formats, verification, code generation, final training
    cli      the command line (one module per sub-command)

Plugins live in ``cellblock.search_spaces``, ``cellblock.strategies``,
``cellblock.evaluators`` and ``cellblock.supernet``. Importing ``cellblock`` imports
none of them (nor torch): the functions below import what they need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cellblock.core.errors import CellblockError
from cellblock.core.threads import raise_onednn_cache

if TYPE_CHECKING:
    from cellblock.core.config import RunConfig
    from cellblock.pareto.results import RunData

raise_onednn_cache()  # before the process's first convolution (see cellblock.core.threads)

__version__ = "0.1.0"


def search(config: str | RunConfig | None = None, progress: bool = False,
           **options: Any) -> RunData:
    """Run (or continue) a search and return its :class:`cellblock.pareto.results.RunData`
    (``config`` the run's :class:`~cellblock.core.config.RunConfig`, ``trials``, ``pareto``).

    Args:
        config: Optional YAML config file or :class:`~cellblock.core.config.RunConfig`;
            ``options`` override it.
        progress: Show a progress bar.
        **options: Any config key (``space``, ``strategy``, ``trials``, ``epochs``,
            ``objectives``, ``constraints``, ``out``...), see
            :class:`cellblock.core.config.RunConfig`.
    """
    from cellblock.core import config as config_mod
    from cellblock.run.backends.startup import prestart

    if isinstance(config, config_mod.RunConfig):
        cfg = config.replace(**options)
    else:
        cfg = config_mod.resolve(*([config_mod.load_yaml(config)] if config else []), options)
    prestart(cfg)  # a worker pool's imports begin now (cellblock.run.backends.startup)
    from cellblock.pareto.results import load_run
    from cellblock.run.runner import Runner, prepare

    prepared = prepare(cfg)
    Runner(prepared, progress=progress).run()
    return load_run(prepared.run_dir)


def load_run(run_dir: str) -> RunData:
    """Read a run directory back (trials, Pareto front, config)."""
    from cellblock.pareto.results import load_run as _load

    return _load(run_dir)


__all__ = ["CellblockError", "__version__", "load_run", "search"]
