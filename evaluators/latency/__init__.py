"""Latency: measured in a runtime, or predicted by a table of units timed on the target.

Modules: :mod:`.measure` (timing a whole network, the device fingerprint and the reference
workload), :mod:`.runtimes` (how a module is run when timed: ``torch``, ``torchscript``,
``onnxruntime``), :mod:`.objective` (where a trial's ``latency_ms`` comes from),
:mod:`.units` (cutting a network into units), :mod:`.covers` (which networks to trace so a
table holds every unit of a space), :mod:`.timing` (statistics, interleaved rounds, speed
normalisation), :mod:`.table` (profiling and predicting), :mod:`.fit` (the correction a table
adds to its summed units) and :mod:`.check` (how well a table predicts).

Importing the package imports none of them, so each stays as light as its own imports.
"""
