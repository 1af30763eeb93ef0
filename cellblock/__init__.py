"""cellblock: neural architecture search for accuracy versus cost.

Public API::

    import cellblock
    run = cellblock.search(space="blocks", trials=10, epochs=3)
    print(run.pareto)
"""

from __future__ import annotations

from typing import Any

from cellblock.errors import CellblockError

__version__ = "0.1.0"


def search(config: str | None = None, progress: bool = False, **options: Any) -> Any:
    """Run (or continue) a search and return its :class:`cellblock.results.RunData`.

    Args:
        config: Optional YAML config file; ``options`` override it.
        progress: Show a progress bar.
        **options: Any config key (``space``, ``strategy``, ``trials``, ``epochs``,
            ``objectives``, ``constraints``, ``out``...), see ``cellblock.config.FIELDS``.
    """
    from cellblock import config as config_mod
    from cellblock.results import load_run
    from cellblock.runner import Runner, prepare

    layers = [config_mod.load_yaml(config)] if config else []
    prepared = prepare(config_mod.resolve(*layers, options))
    Runner(prepared, progress=progress).run()
    return load_run(prepared.run_dir)


def load_run(run_dir: str) -> Any:
    """Read a run directory back (trials, Pareto front, config)."""
    from cellblock.results import load_run as _load

    return _load(run_dir)


__all__ = ["CellblockError", "__version__", "load_run", "search"]
