"""Make the Fashion-MNIST subset of the supernet benchmark (round 7) as an ``.npz``.

A fixed random 3,000 of the 60,000 training images (``numpy`` seed 0), average-pooled
2x2 from 28x28 to 14x14, uint8, shape (N, 1, 14, 14), with their labels: small enough for
the ranking protocol on 2 CPU cores, harder than digits (8 epochs reach 0.73-0.80).

Usage (the gzip files of the original release, e.g. from Debian's
``dataset-fashion-mnist`` package, ``dpkg-deb -x PACKAGE.deb DIR``):

    python results/benchmarks/fashion_mnist_subset.py DIR/usr/share/datasets/fashion-mnist OUT.npz
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

N, SEED = 3000, 0


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    with gzip.open(src / "train-images-idx3-ubyte.gz") as fh:
        x = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(src / "train-labels-idx1-ubyte.gz") as fh:
        y = np.frombuffer(fh.read(), np.uint8, offset=8)
    idx = np.random.default_rng(SEED).permutation(len(x))[:N]
    small = x[idx].reshape(-1, 14, 2, 14, 2).mean((2, 4)).round().astype(np.uint8)[:, None]
    np.savez(out, x=small, y=y[idx].astype(np.int64))
    print(f"{out}: x {small.shape}, labels {np.bincount(y[idx]).tolist()}")


if __name__ == "__main__":
    main()
