"""Compiled loop of :func:`hashdup.index.matching.match_binary`: nearest neighbours between two small sets of packed
binary descriptors, with the cross check and the ratio test.

It lives in a module of its own, with its own population count, because numba's on-disk cache is keyed by the
source file of each cached function only (a compiled helper imported from another file could run stale).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, x):
    """Population count of a 64-bit integer, as LLVM's ``ctpop`` (``popcnt``)."""
    if not (isinstance(x, types.Integer) and x.bitwidth == 64):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(x), codegen


@njit(cache=True, nogil=True)
def _match(a, b, cross_check, max_ratio):  # pragma: no cover - compiled
    """Matches ``(i, j)`` of rows of ``a`` (na, w) and ``b`` (nb, w) uint64 words; see ``match_binary``."""
    na, nb, w = a.shape[0], b.shape[0], a.shape[1]
    D = np.empty((na, nb), dtype=np.int32)
    best_j = np.zeros(na, dtype=np.int64)
    best_i = np.zeros(nb, dtype=np.int64)
    col_min = np.full(nb, 1 << 30, dtype=np.int64)
    bt = np.empty((w, nb), dtype=np.uint64)  # word-major: the distance loop below reads contiguous words
    for j in range(nb):
        for k in range(w):
            bt[k, j] = b[j, k]
    row = np.empty(nb, dtype=np.int64)
    for i in range(na):
        row[:] = 0
        for k in range(w):  # vectorised over j
            x = a[i, k]
            for j in range(nb):
                row[j] += _popcount(x ^ bt[k, j])
        row_min = 1 << 30
        for j in range(nb):
            d = row[j]
            D[i, j] = d
            if d < row_min:  # strict: the first minimum, as numpy.argmin
                row_min = d
                best_j[i] = j
            if d < col_min[j]:
                col_min[j] = d
                best_i[j] = i
    out_i = np.empty(na, dtype=np.int64)
    out_j = np.empty(na, dtype=np.int64)
    n = 0
    for i in range(na):
        j = best_j[i]
        if cross_check and best_i[j] != i:
            continue
        if max_ratio < 1.0:
            second = 1 << 30
            for jj in range(nb):
                if jj != j and D[i, jj] < second:
                    second = D[i, jj]
            if second < (1 << 30):  # with a single candidate there is no second best: the test passes
                ratio = D[i, j] / (second if second > 0 else np.finfo(np.float64).eps)
                if not ratio < max_ratio:
                    continue
        out_i[n] = i
        out_j[n] = j
        n += 1
    return out_i[:n], out_j[:n]


@njit(cache=True, nogil=True)
def _pair_distances(A, B, i, j):  # pragma: no cover - compiled
    """``||A[i[p]] - B[j[p]]||`` for every pair ``p`` (float32 rows, float64 sums)."""
    n, d = i.shape[0], A.shape[1]
    out = np.empty(n, dtype=np.float64)
    for p in range(n):
        a, b = A[i[p]], B[j[p]]
        t = 0.0
        for f in range(d):
            x = np.float64(a[f]) - np.float64(b[f])
            t += x * x
        out[p] = np.sqrt(t)
    return out
