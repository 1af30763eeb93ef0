"""The ``predictive`` strategy: predictor-guided search for any define-by-run space.

Modules: :mod:`.search` (:class:`~.search.PredictiveSearch`, registered as ``predictive``),
:mod:`.surrogate` (space-generic encoding and surrogate models, pure numpy),
:mod:`.models` (one surrogate per modelled metric), :mod:`.acquisition` (acquisition
functions), :mod:`.pool` (the candidates) and :mod:`.moves` (choosing among them).

Importing the package imports none of them; :mod:`cellblock.strategies` imports
:mod:`.search`, which registers the strategy.
"""
