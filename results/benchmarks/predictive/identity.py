"""Whether ``predictive`` asks the same architectures as an older revision: sha256 of the asked id
sequence.

Run once with the old code (``CODE``: a ``git archive`` of the revision, extracted) and once
with the working tree (``-``); equal digests mean the same asks in the same order.

Usage (from the repository root):
    mkdir -p /tmp/old && git archive 14186f8 | tar -x -C /tmp/old
    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/predictive/identity.py /tmp/old
    accuracy,macs 300 0 '{}'
    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/predictive/identity.py - accuracy,macs 300
    0 '{}'
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def main() -> None:
    code, objectives, n, seed, options = sys.argv[
        1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    if code != "-":  # import the packages from ``code`` instead of the working tree
        import __editable___cellblock_0_1_0_finder as finder

        for name, path in list(finder.MAPPING.items()):
            finder.MAPPING[name] = str(Path(code) / Path(path).name)
    import cellblock.strategies.predictive.search as predictive
    from cellblock.core.objectives import parse_objectives
    from cellblock.run.bench import evaluate_all, run_strategy, table_components
    from cellblock.search_spaces.api import arch_id

    objs = parse_objectives(objectives)
    comps = table_components("nb201", {"num_classes": 100}, "/work/shared/nb201_cifar100.csv",
                             "cifar100_test_acc", objs)
    archs = list(comps.space.enumerate())
    answers = dict(zip(map(arch_id, archs), evaluate_all(comps, archs)))
    trials = run_strategy("predictive", comps.space, objs, seed, n,
                          lambda a, s: answers[arch_id(a)], json.loads(options))
    digest = hashlib.sha256(" ".join(t.arch_id for t in trials).encode()).hexdigest()[:16]
    print(predictive.__file__, digest)


if __name__ == "__main__":
    main()
