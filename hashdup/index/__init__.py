"""Search over binary codes: exact Hamming kNN, radius search and self-join (:class:`HammingIndex`), approximate
search in LSH bucket tables (:class:`~hashdup.index.buckets.BucketTables`).

The compiled modules (kernels, mih, buckets) are imported on first use, so that small jobs never load numba.
"""

from typing import Any

from hashdup.index.hamming import HammingIndex


def __getattr__(name: str) -> Any:
    if name == "BucketTables":
        from hashdup.index.buckets import BucketTables

        return BucketTables
    raise AttributeError(name)


__all__ = ["BucketTables", "HammingIndex"]
