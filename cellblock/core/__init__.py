"""Core: what every other package may use, and which imports nothing else of cellblock.

Owns: :mod:`.config` (the run configuration: :class:`~cellblock.core.config.RunConfig`,
every key declared once, typed, checked and frozen; YAML and defaults), :mod:`.errors` (the
one user-error hierarchy), :mod:`.registry` (name registries),
:mod:`.objectives` (metrics, objectives and constraints as data, the objective matrix),
:mod:`.fileio` (atomic writes), :mod:`.runlock` (one writer per run directory),
:mod:`.signals` (SIGTERM, workers that die with their parent), :mod:`.threads` (torch
threads per trial), :mod:`.devices` (device resolution and GPU slots),
:mod:`.device_lock` (latency measured without interference) and :mod:`.stats` (rank
correlations).
"""
