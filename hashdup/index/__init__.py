"""Search over binary codes: exact Hamming kNN, radius search, self-join, and grouping."""

from hashdup.index.groups import connected_groups
from hashdup.index.hamming import HammingIndex

__all__ = ["HammingIndex", "connected_groups"]
