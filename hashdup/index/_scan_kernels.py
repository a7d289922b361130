"""Compiled loops of :mod:`hashdup.index.kernels`: one range of database codes against one block of queries.

:func:`_knn_block` keeps the ``k`` best (distance, id) pairs of each query, :func:`_radius_block` lists every match
within a radius, and :func:`_radius_csr` orders those matches into CSR arrays. :mod:`hashdup.index.kernels`
validates the inputs, cuts a search into calls of these kernels on a thread pool and merges their results; all of
the scan's compiled code lives in this one module, because numba's on-disk cache is keyed by the source file of each
cached function only (changes to compiled helpers imported from another file would not recompile it).

How a range is scanned
----------------------
The range is read in blocks of ``block_rows`` rows (:data:`hashdup.index.kernels.DB_BLOCK_BYTES` of codes), each
compared with every query before the next is read. Codes wider than one word are copied word-major into a block
buffer (word ``w`` of every row of the block contiguous), so that the distance loops read contiguous words whatever
the width.

Inside a block, the distances of ``group`` (:data:`hashdup.index.kernels.GROUP`) consecutive rows to one query are
reduced to their minimum by a branch-free loop that the compiler vectorises (``vpopcntq`` on 512-bit registers where
the CPU has AVX-512 VPOPCNTDQ); widths of 1, 2 and 4 words have unrolled loops. Distances are integers in
0..n_bits, so selection needs no sort: each query keeps its ``k`` best (distance, id) pairs in sorted order and a
running threshold, the distance of its current ``k``-th best. A group whose minimum is not strictly below the
threshold is skipped whole; for the few that hold a candidate the distances are stored and the rows inserted one by
one. Rows are scanned in id order and insertion uses strict comparisons, so ties keep the smallest ids. Radius
search uses the same group minimum against the radius, appends the matches, and orders them by a stable sort on the
distance (ids stay ascending).

Every kernel is compiled with ``cache=True`` and ``nogil=True`` (so the calling threads run in parallel).
"""

from __future__ import annotations

import contextlib

import numpy as np
from numba import njit, types, uint64
from numba.extending import intrinsic

_NO_THRESHOLD = 1 << 30  # larger than any distance (n_bits ≤ 1024 in hashdup, ≤ 64 × width here)


def _prefer_wide_vectors(function) -> None:
    """Let LLVM vectorise ``function`` with 512-bit registers where the CPU has them.

    LLVM defaults to 256-bit vectors on AVX-512 CPUs (``prefer-vector-width``), which halves the throughput of
    ``vpopcntq``. llvmlite only accepts a fixed list of function attributes, so the string attribute is added to the
    underlying set directly; if llvmlite changes that, the kernels simply stay at 256 bits.
    """
    with contextlib.suppress(Exception):  # pragma: no cover - depends on llvmlite internals
        set.add(function.attributes, '"prefer-vector-width"="512"')


@intrinsic
def _popcount(typingctx, x):
    """Population count of a 64-bit integer, as LLVM's ``ctpop`` (``popcnt``/``vpopcntq`` once vectorised)."""
    if not (isinstance(x, types.Integer) and x.bitwidth == 64):
        return None

    def codegen(context, builder, signature, args):
        _prefer_wide_vectors(builder.function)
        return builder.ctpop(args[0])

    return types.int64(x), codegen


# Hot loops below index with unsigned (uint64) counters: numba wraps negative signed indices around, and that
# per-element check keeps LLVM from vectorising with plain loads (it falls back to gathers).


@njit(cache=True, nogil=True)
def _transpose(src, W, bt):
    """Copy the row-major block ``src`` (rows of ``W`` words, flattened) word-major into ``bt[:, :rows]``."""
    m = uint64(src.shape[0] // W)
    if W == 2:
        for i in range(m):
            bt[0, i] = src[2 * i]
            bt[1, i] = src[2 * i + 1]
    elif W == 4:
        for i in range(m):
            bt[0, i] = src[4 * i]
            bt[1, i] = src[4 * i + 1]
            bt[2, i] = src[4 * i + 2]
            bt[3, i] = src[4 * i + 3]
    else:
        uW = uint64(W)
        for w in range(uW):
            for i in range(m):
                bt[w, i] = src[i * uW + w]


@njit(cache=True, nogil=True)
def _group_mins(src, bt, nrows, q, qi, group, acc, mins):
    """``mins[g]`` = smallest distance between query ``qi`` and rows ``g * group:(g + 1) * group`` of the block.

    Branch-free loops over contiguous words that the compiler vectorises: one-word codes are read from the block
    ``src`` itself, wider ones from its word-major copy ``bt``. Widths of 1, 2 and 4 words have their own unrolled
    loop, other widths accumulate word by word in ``acc``. The loops are written out in this one function, called
    once per (block, query): a call per group would pay numba's reference counting of the array arguments (about
    as long as the group's arithmetic) every time.
    """
    W = bt.shape[0]
    g = 0
    for g0 in range(0, nrows, group):
        u0 = uint64(g0)
        u1 = uint64(min(nrows, g0 + group))
        m = _NO_THRESHOLD
        if W == 1:
            a = q[qi, 0]
            for i in range(u0, u1):
                m = min(m, _popcount(src[i] ^ a))
        elif W == 2:
            a, b = q[qi, 0], q[qi, 1]
            for i in range(u0, u1):
                m = min(m, _popcount(bt[0, i] ^ a) + _popcount(bt[1, i] ^ b))
        elif W == 4:
            a, b, c, e = q[qi, 0], q[qi, 1], q[qi, 2], q[qi, 3]
            for i in range(u0, u1):
                m = min(m, (_popcount(bt[0, i] ^ a) + _popcount(bt[1, i] ^ b))
                        + (_popcount(bt[2, i] ^ c) + _popcount(bt[3, i] ^ e)))
        else:
            size = u1 - u0
            a = q[qi, 0]
            for i in range(size):
                acc[i] = _popcount(bt[0, u0 + i] ^ a)
            for w in range(1, W):
                a = q[qi, w]
                for i in range(size):
                    acc[i] += _popcount(bt[w, u0 + i] ^ a)
            for i in range(size):
                m = min(m, acc[i])
        mins[g] = m
        g += 1  # noqa: SIM113 - a compiled loop over a range with a step; g counts the groups


@njit(cache=True, nogil=True)
def _group_distances(src, bt, g0, g1, q, qi, out):
    """``out[j]`` = distance between query ``qi`` and row ``g0 + j`` of the block, for the rows ``g0:g1``.

    The same vectorised loops as :func:`_group_mins`, storing each distance: run only for the few groups whose
    minimum shows a candidate, so that the rows are then checked by a cheap comparison each.
    """
    W = bt.shape[0]
    u0 = uint64(g0)
    size = uint64(g1 - g0)
    if W == 1:
        a = q[qi, 0]
        for j in range(size):
            out[j] = _popcount(src[u0 + j] ^ a)
    elif W == 2:
        a, b = q[qi, 0], q[qi, 1]
        for j in range(size):
            out[j] = _popcount(bt[0, u0 + j] ^ a) + _popcount(bt[1, u0 + j] ^ b)
    elif W == 4:
        a, b, c, e = q[qi, 0], q[qi, 1], q[qi, 2], q[qi, 3]
        for j in range(size):
            out[j] = ((_popcount(bt[0, u0 + j] ^ a) + _popcount(bt[1, u0 + j] ^ b))
                      + (_popcount(bt[2, u0 + j] ^ c) + _popcount(bt[3, u0 + j] ^ e)))
    else:
        a = q[qi, 0]
        for j in range(size):
            out[j] = _popcount(bt[0, u0 + j] ^ a)
        for w in range(1, W):
            a = q[qi, w]
            for j in range(size):
                out[j] += _popcount(bt[w, u0 + j] ^ a)


@njit(cache=True, nogil=True)
def _knn_block(db, base, q, k, block_rows, group):
    """The ``k`` best (distance, id) of every query over rows ``db`` (ids ``base + row``), sorted, ``-1`` padded."""
    n, W = db.shape
    nq = q.shape[0]
    D = np.empty((nq, k), dtype=np.int32)
    I = np.empty((nq, k), dtype=np.int64)
    count = np.zeros(nq, dtype=np.int64)
    thr = np.empty(nq, dtype=np.int64)
    for qi in range(nq):  # loops, not np.full: they compile in a fraction of the time
        thr[qi] = _NO_THRESHOLD
        for j in range(k):
            D[qi, j] = -1
            I[qi, j] = -1
    bt = np.empty((W, block_rows if W > 1 else 0), dtype=np.uint64)
    acc = np.empty(group, dtype=np.int64)
    mins = np.empty((block_rows + group - 1) // group, dtype=np.int64)
    for b0 in range(0, n, block_rows):
        nrows = min(n, b0 + block_rows) - b0
        src = db[b0:b0 + nrows].reshape(nrows * W)  # 1-D view: constant strides in the loops
        if W > 1:
            _transpose(src, W, bt)
        for qi in range(nq):
            _group_mins(src, bt, nrows, q, qi, group, acc, mins)
            t = thr[qi]
            for g in range((nrows + group - 1) // group):
                if mins[g] >= t:
                    continue
                g0 = g * group
                g1 = min(nrows, g0 + group)
                _group_distances(src, bt, g0, g1, q, qi, acc)
                for j in range(g1 - g0):
                    d = acc[j]
                    if d >= t:
                        continue
                    c = count[qi]
                    if c < k:
                        pos = c
                        count[qi] = c + 1
                    else:
                        pos = k - 1
                    # strict '>' keeps earlier (smaller) ids ahead of a new row at the same distance
                    while pos > 0 and D[qi, pos - 1] > d:
                        D[qi, pos] = D[qi, pos - 1]
                        I[qi, pos] = I[qi, pos - 1]
                        pos -= 1
                    D[qi, pos] = d
                    I[qi, pos] = base + b0 + g0 + j
                    if count[qi] == k:
                        t = D[qi, k - 1]
            thr[qi] = t
    return D, I


@njit(cache=True, nogil=True)
def _grown(a):
    """A copy of the 1-D array ``a`` in twice the space."""
    out = np.empty(2 * a.shape[0], dtype=a.dtype)
    for i in range(a.shape[0]):  # a loop compiles far faster than slice assignment
        out[i] = a[i]
    return out


@njit(cache=True, nogil=True)
def _radius_block(db, base, q, radius, block_rows, group):
    """Every (query, distance, id) with distance ≤ ``radius``; per query in ascending id order."""
    n, W = db.shape
    nq = q.shape[0]
    out_q = np.empty(1024, dtype=np.int64)
    out_d = np.empty(1024, dtype=np.int32)
    out_i = np.empty(1024, dtype=np.int64)
    m = 0
    bt = np.empty((W, block_rows if W > 1 else 0), dtype=np.uint64)
    acc = np.empty(group, dtype=np.int64)
    mins = np.empty((block_rows + group - 1) // group, dtype=np.int64)
    for b0 in range(0, n, block_rows):
        nrows = min(n, b0 + block_rows) - b0
        src = db[b0:b0 + nrows].reshape(nrows * W)  # 1-D view: constant strides in the loops
        if W > 1:
            _transpose(src, W, bt)
        for qi in range(nq):
            _group_mins(src, bt, nrows, q, qi, group, acc, mins)
            for g in range((nrows + group - 1) // group):
                if mins[g] > radius:
                    continue
                g0 = g * group
                g1 = min(nrows, g0 + group)
                _group_distances(src, bt, g0, g1, q, qi, acc)
                for j in range(g1 - g0):
                    d = acc[j]
                    if d > radius:
                        continue
                    if m == out_q.shape[0]:
                        out_q, out_d, out_i = _grown(out_q), _grown(out_d), _grown(out_i)
                    out_q[m] = qi
                    out_d[m] = d
                    out_i[m] = base + b0 + g0 + j
                    m += 1
    return out_q[:m], out_d[:m], out_i[:m]


@njit(cache=True, nogil=True)
def _radius_csr(nq, max_dist, qs, ds, ids):
    """Order matches by (query, distance, id) into CSR arrays ``(lims, D, I)``.

    The input lists each query's matches in ascending id order (queries interleaved). A stable bucket pass by query,
    then a stable sort by distance within each query (insertion for a few matches, counting over 0..max_dist for
    more), keeps the ids ascending within each distance.
    """
    m = qs.shape[0]
    lims = np.zeros(nq + 1, dtype=np.int64)
    for t in range(m):
        lims[qs[t] + 1] += 1
    for j in range(nq):
        lims[j + 1] += lims[j]
    fill = lims[:-1].copy()
    D1 = np.empty(m, dtype=np.int32)
    I1 = np.empty(m, dtype=np.int64)
    for t in range(m):
        p = fill[qs[t]]
        D1[p] = ds[t]
        I1[p] = ids[t]
        fill[qs[t]] = p + 1
    D = np.empty(m, dtype=np.int32)
    I = np.empty(m, dtype=np.int64)
    hist = np.zeros(max_dist + 2, dtype=np.int64)
    for j in range(nq):
        s, e = lims[j], lims[j + 1]
        if e - s <= 32:
            for t in range(s, e):
                d, i = D1[t], I1[t]
                p = t
                while p > s and D[p - 1] > d:
                    D[p] = D[p - 1]
                    I[p] = I[p - 1]
                    p -= 1
                D[p] = d
                I[p] = i
            continue
        for b in range(max_dist + 2):
            hist[b] = 0
        for t in range(s, e):
            hist[D1[t] + 1] += 1
        for b in range(max_dist + 1):
            hist[b + 1] += hist[b]
        for t in range(s, e):
            p = s + hist[D1[t]]
            hist[D1[t]] += 1
            D[p] = D1[t]
            I[p] = I1[t]
    return lims, D, I
