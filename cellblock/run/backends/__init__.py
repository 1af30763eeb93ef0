"""Backends: where trials run. :mod:`.base` holds the backend registry and the local and
process-pool backends; Ray lives in :mod:`.ray_backend` and :mod:`.ray_tune_adapter` and is
imported only when asked for. May import what :mod:`cellblock.run` may, except the runner.
"""
