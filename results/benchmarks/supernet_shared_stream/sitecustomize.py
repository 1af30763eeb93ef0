"""Experiment hook of ``supernet_digits.py --shared-stream`` (not part of cellblock).

With CELLBLOCK_SHARED_STREAM=1 and this folder on PYTHONPATH, every Python process
(the CLI commands the benchmark starts) patches the built-in preact, mbconv, dense and
inception blocks so that they also add the stage's shared projection shortcut to their
output, under the same name (``downsample``) as basic/bottleneck/resnext: every block type
then writes to one residual stream (``supernet_train_diag.shared_stream``). This changes
the architectures of the space; stand-alone references are trained on the patched blocks.
"""

import os
import sys
from pathlib import Path

if os.environ.get("CELLBLOCK_SHARED_STREAM") == "1":
    os.environ.setdefault("PROJ_NAME", "downsample")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from supernet_train_diag import shared_stream

    shared_stream()
    sys.path.pop(0)
