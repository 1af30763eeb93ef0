"""Weight-sharing supernets built from the ordinary space definitions (single-path one-shot).

Modules: :mod:`~cellblock.search_spaces.tags` (the hook spaces call), ``bank`` (shared
parameters, sliced per child), ``covers`` (which probe modules size the bank),
``model`` (:class:`~cellblock.supernet.model.Supernet`: forward a child, ``extract``),
``split`` (few-shot sub-supernets and the ``auto`` split), ``train`` (training and
checkpoints), ``evaluator`` (the ``supernet`` evaluator), ``rank`` (rank correlation
against stand-alone training), ``baselines`` (stratified sample, equal-cost baselines,
verdict) and ``inherit`` (inherited weights for export and fine-tuning). Its sub-commands live in
:mod:`cellblock.cli.supernet`.

This package's ``__init__`` imports nothing so that spaces can import ``tags`` freely.
"""
