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
    """Matches ``(i, j)`` of rows of ``a`` (na, w) and ``b`` (nb, w) uint64 words; see ``match_binary``.

    One pass over the distances keeps, for each row of ``a``, its smallest distance (first index on ties), its
    second smallest (ties included) and, for each row of ``b``, its nearest row of ``a`` (first on ties)."""
    na, nb, w = a.shape[0], b.shape[0], a.shape[1]
    big = 1 << 30
    best_j = np.zeros(na, dtype=np.int64)
    first = np.full(na, big, dtype=np.int64)
    second = np.full(na, big, dtype=np.int64)
    best_i = np.zeros(nb, dtype=np.int64)
    col_min = np.full(nb, big, dtype=np.int64)
    for i in range(na):
        m1, m2, mj = big, big, 0
        for j in range(nb):
            if w == 4:
                d = (_popcount(a[i, 0] ^ b[j, 0]) + _popcount(a[i, 1] ^ b[j, 1])
                     + _popcount(a[i, 2] ^ b[j, 2]) + _popcount(a[i, 3] ^ b[j, 3]))
            else:
                d = 0
                for k in range(w):
                    d += _popcount(a[i, k] ^ b[j, k])
            if d < m1:  # strict: the first minimum, as numpy.argmin
                m2 = m1
                m1 = d
                mj = j
            elif d < m2:
                m2 = d
            if d < col_min[j]:
                col_min[j] = d
                best_i[j] = i
        best_j[i], first[i], second[i] = mj, m1, m2
    out_i = np.empty(na, dtype=np.int64)
    out_j = np.empty(na, dtype=np.int64)
    out_d = np.empty(na, dtype=np.int64)
    n = 0
    for i in range(na):
        j = best_j[i]
        if cross_check and best_i[j] != i:
            continue
        if max_ratio < 1.0 and second[i] < big:  # with a single candidate there is no second best: it passes
            s = second[i]
            ratio = first[i] / (s if s > 0 else np.finfo(np.float64).eps)
            if not ratio < max_ratio:
                continue
        out_i[n] = i
        out_j[n] = j
        out_d[n] = first[i]
        n += 1
    return out_i[:n], out_j[:n], out_d[:n]


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
