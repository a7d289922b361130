"""Search over binary codes: exact Hamming kNN, radius search and self-join (:class:`HammingIndex`), approximate
search in LSH bucket tables (:class:`~hashdup.index.buckets.BucketTables`), and grouping."""

from hashdup.index.buckets import BucketTables
from hashdup.index.groups import connected_groups
from hashdup.index.hamming import HammingIndex

__all__ = ["BucketTables", "HammingIndex", "connected_groups"]
