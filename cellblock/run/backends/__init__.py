"""Backends: where trials run. :mod:`.base` holds the backend registry, the run loop's
``drive`` and the local backend; :mod:`.process` the local process pool, whose workers
start as :mod:`.startup` says (forked from a preloaded server; :mod:`.startup` imports
neither torch nor the rest of cellblock); Ray lives in :mod:`.ray_backend` and
:mod:`.ray_tune_adapter` and is imported only when asked for. May import what
:mod:`cellblock.run` may, except the runner.
"""
