"""Compiled loops of :mod:`hashdup.index.buckets` (numba, compiled once and cached on disk): key extraction,
table building and multi-probe lookups with exact re-ranking. See :mod:`hashdup.index.buckets` for the layout."""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, inline="always")
def _key(words, row, positions, t):
    key = np.uint64(0)
    for j in range(positions.shape[1]):
        b = np.int64(positions[t, j])
        bit = (words[row, b >> 6] >> np.uint64(b & 63)) & np.uint64(1)
        key |= bit << np.uint64(j)
    return key


@njit(cache=True, parallel=True)
def _build_tables(words, positions, offsets, ids):
    """Fill offsets (L, 2^m + 1) and ids (L, n) by a counting sort of each table's keys (stable: ids ascend)."""
    n = words.shape[0]
    n_tables = positions.shape[0]
    for t in prange(n_tables):
        keys = np.empty(n, dtype=np.uint32)  # key_bits ≤ MAX_KEY_BITS < 32
        counts = np.zeros(offsets.shape[1], dtype=np.int64)
        for i in range(n):
            k = _key(words, i, positions, t)
            keys[i] = k
            counts[k + np.uint64(1)] += 1
        total = 0
        for b in range(offsets.shape[1]):
            total += counts[b]
            offsets[t, b] = total
            counts[b] = total
        for i in range(n):
            k = keys[i]
            ids[t, counts[k]] = i
            counts[k] += 1


@njit(cache=True)
def _knn_rows(positions, offsets, ids, masks, dbw, qw, k, q0, q1, D, I):
    """Queries q0..q1-1: probe, de-duplicate (a bitset over rows, cleared after each query), re-rank, keep k."""
    n = dbw.shape[0]
    n_words = qw.shape[1]
    n_tables = positions.shape[0]
    seen = np.zeros((n + 63) // 64, dtype=np.uint64)
    touched = np.empty(1024, dtype=np.int64)
    best = np.empty(k, dtype=np.int64)  # (distance << 32) | id, ascending
    for q in range(q0, q1):
        n_best = 0
        n_touched = 0
        for t in range(n_tables):
            key = _key(qw, q, positions, t)
            for mi in range(masks.shape[0]):
                b = key ^ masks[mi]
                for j in range(offsets[t, b], offsets[t, b + np.uint64(1)]):
                    i = np.int64(ids[t, j])
                    w = i >> 6
                    bit = np.uint64(1) << np.uint64(i & 63)
                    if seen[w] & bit:
                        continue
                    seen[w] |= bit
                    if n_touched == touched.shape[0]:
                        grown = np.empty(2 * n_touched, dtype=np.int64)
                        grown[:n_touched] = touched
                        touched = grown
                    touched[n_touched] = i
                    n_touched += 1
                    d = 0
                    for x in range(n_words):
                        d += _popcount(qw[q, x] ^ dbw[i, x])
                    item = (np.int64(d) << 32) | i
                    if n_best == k:
                        if item >= best[k - 1]:
                            continue
                        pos = k - 1
                    else:
                        pos = n_best
                        n_best += 1
                    while pos > 0 and best[pos - 1] > item:
                        best[pos] = best[pos - 1]
                        pos -= 1
                    best[pos] = item
        for r in range(n_best):
            D[q, r] = np.int32(best[r] >> 32)
            I[q, r] = best[r] & 0xFFFFFFFF
        for r in range(n_touched):
            seen[touched[r] >> 6] = np.uint64(0)


@njit(cache=True, parallel=True)
def _knn_kernel(positions, offsets, ids, masks, dbw, qw, k, n_chunks, D, I):
    nq = qw.shape[0]
    for c in prange(n_chunks):
        _knn_rows(positions, offsets, ids, masks, dbw, qw, k, c * nq // n_chunks, (c + 1) * nq // n_chunks, D, I)


@njit(cache=True)
def _candidates_kernel(positions, offsets, ids, masks, qw, n, lims):
    """Unique candidate ids of each query, ascending, in CSR form (``lims`` filled, ids returned)."""
    nq = qw.shape[0]
    seen = np.zeros((n + 63) // 64, dtype=np.uint64)
    out = np.empty(1024, dtype=np.int64)
    n_out = 0
    for q in range(nq):
        start = n_out
        for t in range(positions.shape[0]):
            key = _key(qw, q, positions, t)
            for mi in range(masks.shape[0]):
                b = key ^ masks[mi]
                for j in range(offsets[t, b], offsets[t, b + np.uint64(1)]):
                    i = np.int64(ids[t, j])
                    bit = np.uint64(1) << np.uint64(i & 63)
                    if seen[i >> 6] & bit:
                        continue
                    seen[i >> 6] |= bit
                    if n_out == out.shape[0]:
                        grown = np.empty(2 * n_out, dtype=np.int64)
                        grown[:n_out] = out
                        out = grown
                    out[n_out] = i
                    n_out += 1
        for r in range(start, n_out):
            seen[out[r] >> 6] = np.uint64(0)
        out[start:n_out] = np.sort(out[start:n_out])
        lims[q + 1] = n_out
    return out[:n_out].copy()
