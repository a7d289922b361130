"""Exact Hamming search by a blocked linear scan: the reference every faster method must equal.

Distances are integers in 0..n_bits. Results follow faiss's layouts: kNN gives ``(D, I)`` of shape (nq, k), rows
sorted by distance then id, padded with ``-1`` when the database has fewer than ``k`` codes; radius search gives
``(lims, D, I)`` in CSR form, the matches of query ``q`` being ``I[lims[q]:lims[q+1]]``, sorted by distance then id.
A radius is inclusive: a code matches when its distance is ``≤ radius``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hashdup.bits import as_words

#: Rows per block: temporaries stay near QUERY_BLOCK × DB_BLOCK × 8 bytes (32 MiB) whatever the file size.
DB_BLOCK = 1 << 16
QUERY_BLOCK = 64
#: Rows of the outer loop of the self-join (the inner loop uses DB_BLOCK // 4 rows).
JOIN_BLOCK = 256


def _distances(q: NDArray[np.uint64], db: NDArray[np.uint64]) -> NDArray[np.int32]:
    D = np.zeros((q.shape[0], db.shape[0]), dtype=np.int32)
    for w in range(q.shape[1]):
        D += np.bitwise_count(q[:, w, None] ^ db[None, :, w])
    return D


def knn_scan(db: NDArray[np.uint8], queries: NDArray[np.uint8], k: int) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """Exact k nearest neighbours by Hamming distance; see the module docstring for the layout."""
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    dbw, qw = as_words(db), as_words(queries)
    n, nq = dbw.shape[0], qw.shape[0]
    D = np.full((nq, k), -1, dtype=np.int32)
    I = np.full((nq, k), -1, dtype=np.int64)
    kk = min(k, n)
    if kk == 0 or nq == 0:
        return D, I
    for q0 in range(0, nq, QUERY_BLOCK):
        q = qw[q0 : q0 + QUERY_BLOCK]
        # keys pack (distance, id) into one int64 so that ordering keys orders by distance, then id
        best = np.empty((q.shape[0], 0), dtype=np.int64)
        for s in range(0, n, DB_BLOCK):
            block = np.asarray(dbw[s : s + DB_BLOCK])
            keys = (_distances(q, block).astype(np.int64) << 40) | np.arange(s, s + block.shape[0], dtype=np.int64)
            cand = np.concatenate([best, keys], axis=1)
            if cand.shape[1] > kk:
                cand = np.partition(cand, kk - 1, axis=1)[:, :kk]
            best = cand
        best.sort(axis=1)
        D[q0 : q0 + q.shape[0], :kk] = best >> 40
        I[q0 : q0 + q.shape[0], :kk] = best & ((1 << 40) - 1)
    return D, I


def radius_scan(db: NDArray[np.uint8], queries: NDArray[np.uint8], radius: int
                ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]:
    """All codes within ``radius`` (inclusive) of each query; see the module docstring for the layout."""
    if radius < 0:
        raise ValueError(f"radius must be ≥ 0, got {radius}")
    dbw, qw = as_words(db), as_words(queries)
    n, nq = dbw.shape[0], qw.shape[0]
    counts = np.zeros(nq, dtype=np.int64)
    parts_q, parts_d, parts_i = [], [], []
    for q0 in range(0, nq, QUERY_BLOCK):
        q = qw[q0 : q0 + QUERY_BLOCK]
        for s in range(0, n, DB_BLOCK):
            Dblk = _distances(q, np.asarray(dbw[s : s + DB_BLOCK]))
            qi, di = np.nonzero(Dblk <= radius)
            parts_q.append(qi + q0)
            parts_d.append(Dblk[qi, di])
            parts_i.append(di.astype(np.int64) + s)
    if parts_q:
        qa, da, ia = np.concatenate(parts_q), np.concatenate(parts_d), np.concatenate(parts_i)
    else:
        qa, da, ia = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64))
    order = np.lexsort((ia, da, qa))
    qa, da, ia = qa[order], da[order].astype(np.int32), ia[order]
    np.add.at(counts, qa, 1)
    lims = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(counts, out=lims[1:])
    return lims, da, ia


def self_join_scan(db: NDArray[np.uint8], radius: int
                   ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int32]]:
    """All pairs ``i < j`` with distance ``≤ radius``, sorted by (i, j): a quadratic scan in blocks."""
    if radius < 0:
        raise ValueError(f"radius must be ≥ 0, got {radius}")
    dbw = as_words(db)
    n = dbw.shape[0]
    out_i, out_j, out_d = [], [], []
    inner = max(DB_BLOCK // 4, 1)
    for a in range(0, n, JOIN_BLOCK):
        qa = np.asarray(dbw[a : a + JOIN_BLOCK])
        for b in range(a, n, inner):
            Dblk = _distances(qa, np.asarray(dbw[b : b + inner]))
            ii, jj = np.nonzero(Dblk <= radius)
            ii, jj = ii + a, jj + b
            keep = ii < jj
            out_i.append(ii[keep].astype(np.int64))
            out_j.append(jj[keep].astype(np.int64))
            out_d.append(Dblk[ii[keep] - a, jj[keep] - b])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    i, j, d = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d).astype(np.int32)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]
