"""Optuna samplers as cellblock strategies (``optuna:tpe``, ``optuna:nsga2``...).

Modules: :mod:`.strategy` (the strategy class, registered as ``optuna:<sampler>``),
:mod:`.samplers` (the samplers offered and the checks of their options), :mod:`.study`
(where the study is kept) and :mod:`.mapping` (decisions as suggestions, trials as
outcomes).

Importing the package imports none of them; :mod:`cellblock.strategies` imports
:mod:`.strategy`, which registers the strategies. Inside this package ``import optuna``
is the Optuna library (absolute imports), not this package.
"""
