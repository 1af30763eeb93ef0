"""Run: from a resolved config to records on disk.

Owns: :mod:`.components` (space, data, objectives and pipeline built from a
:class:`~cellblock.core.config.RunConfig`, in one place), :mod:`.asking` (the ask /
dedupe / exhaust loop shared by the runner and the bench), :mod:`.runner` (the ask /
evaluate / tell loop and its records), :mod:`.fingerprint` (content hashes of the
inputs), :mod:`.repair` (``cellblock repair``), :mod:`.schedulers` (early stopping),
:mod:`.bench` (strategies against a tabular benchmark) and :mod:`.backends` (local,
process pool, Ray). May import: :mod:`cellblock.core`, :mod:`cellblock.data`,
:mod:`cellblock.records`, :mod:`cellblock.pareto` and the plugin packages
(spaces, strategies, evaluators, supernet).
"""
