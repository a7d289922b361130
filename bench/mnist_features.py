"""Write the MNIST test set (../shared/data/mnist-t10k) as a features file for ``hashdup eval``.

    .venv/bin/python bench/mnist_features.py [--shared ../shared/data] [-o bench/out/mnist.npz]

``X`` is (10000, 784) float32 pixels / 255, ``y`` (10000,) int64 labels, in the file's order.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def load_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels / 255 as float32 (n, 784) and labels as int64 (n,), checking the IDX magic numbers."""
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        labels = f.read()
    if int.from_bytes(raw[:4], "big") != 2051 or int.from_bytes(labels[:4], "big") != 2049:
        raise ValueError(f"{folder} does not hold MNIST IDX files")
    n = int.from_bytes(raw[4:8], "big")
    X = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 784).astype(np.float32) / 255.0
    y = np.frombuffer(labels[8:], dtype=np.uint8).astype(np.int64)
    return X, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("-o", "--out", type=Path, default=REPO / "bench" / "out" / "mnist.npz")
    args = ap.parse_args()
    X, y = load_mnist(args.shared / "mnist-t10k")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, X=X, y=y)
    print(f"wrote {args.out}: X {X.shape} {X.dtype}, y {y.shape}, classes {np.bincount(y).tolist()}")


if __name__ == "__main__":
    main()
