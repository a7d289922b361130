"""Compiled lookup of a stored verdict (:class:`hashdup.io.verdicts.VerdictStore`): one binary search over the rows'
sorted key columns, in place of four numpy searches and their Python around each (a dedup with stored decisions of
101,000 random crops looks up about a million verdicts)."""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def find_row(a0, a1, b0, b1, way, k0, k1, k2, k3, w):  # pragma: no cover - compiled
    """Index of the row whose key ``(a0, a1, b0, b1, way)`` equals ``(k0, k1, k2, k3, w)``, or -1; the rows are
    sorted by that key, lexicographically (uint64 columns, then the uint8 way)."""
    lo, hi = 0, len(a0)
    while lo < hi:  # the first row not less than the key
        mid = (lo + hi) // 2
        if a0[mid] != k0:
            less = a0[mid] < k0
        elif a1[mid] != k1:
            less = a1[mid] < k1
        elif b0[mid] != k2:
            less = b0[mid] < k2
        elif b1[mid] != k3:
            less = b1[mid] < k3
        else:
            less = way[mid] < w
        if less:
            lo = mid + 1
        else:
            hi = mid
    if lo < len(a0) and a0[lo] == k0 and a1[lo] == k1 and b0[lo] == k2 and b1[lo] == k3 and way[lo] == w:
        return lo
    return -1
