"""Core: what every other package may use, and which imports nothing else of cellblock.

Owns: :mod:`.errors` (the one user-error hierarchy), :mod:`.registry` (name registries),
:mod:`.objectives` (metrics, objectives and constraints as data) and :mod:`.fileio`
(atomic writes).
"""
