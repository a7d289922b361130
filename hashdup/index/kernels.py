"""Compiled exact Hamming scans: kNN and radius search at memory-bandwidth speed.

The same results as :mod:`hashdup.index.scan` (the numpy reference), element for element: kNN gives faiss's
``(D, I)`` of shape (nq, k), rows sorted by distance then id and padded with ``-1``; radius search gives
``(lims, D, I)`` in CSR form sorted by (distance, id) per query. A radius is inclusive (``d ≤ radius``), unlike
faiss's binary ``range_search`` (``d < radius``).

How the scan is organised
-------------------------
Codes are read as uint64 words (:func:`hashdup.bits.as_words`). The database is cut into blocks of
:data:`DB_BLOCK_BYTES` that stay in the L1 cache while every query of a query block is compared with them, so each
database byte is read from memory once per query block, not once per query. Codes wider than one word are copied
word-major into a block buffer (word ``w`` of every row of the block contiguous), so that the distance loops read
contiguous words whatever the width. A memory-mapped code file larger than RAM is therefore streamed front to back
in blocks, never copied whole; the extra memory is one block buffer per thread plus the results.

Inside a block, the distances of :data:`GROUP` consecutive rows to one query are reduced to their minimum by a
branch-free loop that the compiler vectorises (``vpopcntq`` on 512-bit registers where the CPU has AVX-512
VPOPCNTDQ); widths of 1, 2 and 4 words have unrolled loops. Distances are integers in 0..n_bits, so selection needs
no sort: each query keeps its ``k`` best (distance, id) pairs in sorted order and a running threshold, the distance
of its current ``k``-th best. A group whose minimum is not strictly below the threshold is skipped whole; for the
few that hold a candidate the distances are stored and the rows inserted one by one. Rows are scanned in id order
and insertion uses strict comparisons, so ties keep the smallest ids. Radius search uses the same group minimum
against the radius, appends the matches, and orders them by a stable sort on the distance (ids stay ascending).

Threads
-------
The kernels are compiled with ``nogil=True`` and the work is split over a pool of Python threads: over query
blocks when there are many queries, and over contiguous database ranges (merged at the end) when there are few, so
that one query over a large file also uses every core. ``threads=None`` takes :func:`numba.get_num_threads`, which
:func:`numba.set_num_threads` and ``NUMBA_NUM_THREADS`` control; calls below :data:`MIN_PARALLEL_WORK` stay on the
calling thread. Results do not depend on the number of threads.

Compilation
-----------
Kernels are compiled on first use (a few seconds) and cached on disk (``cache=True``; in ``__pycache__`` next to
this module, or numba's user cache directory when that is read-only), so later processes load them in well under
a second. Inputs are always passed as read-only C-contiguous arrays, so each kernel has exactly one signature.

References
----------
.. [1] M. Norouzi, A. Punjani and D. J. Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012
   (section 2: the cost of an exact linear scan, the baseline every index is measured against).
.. [2] J. Johnson, M. Douze and H. Jégou, "Billion-scale similarity search with GPUs", IEEE Trans. Big Data, 2019
   (faiss's ``(D, I)`` and ``(lims, D, I)`` result layouts, followed here).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, types, uint64
from numba.extending import intrinsic
from numpy.typing import ArrayLike, NDArray

from hashdup.bits import as_words

#: Bytes of database codes per cache block: a block is compared with every query of a query block before the next
#: block is read, so it should fit in the per-core L1/L2 cache.
DB_BLOCK_BYTES = 1 << 15
#: Rows whose distances are reduced to one minimum before any branch; larger groups vectorise better, smaller ones
#: rescan fewer rows when a group holds a candidate.
GROUP = 256
#: Queries per query block when there are many queries (their running results stay in cache).
QUERY_BLOCK = 256
#: Below this many query-row-word comparisons a call runs on the calling thread alone.
MIN_PARALLEL_WORK = 1 << 20

_NO_THRESHOLD = 1 << 30  # larger than any distance (n_bits ≤ 1024 in hashdup, ≤ 64 × width here)


def _prefer_wide_vectors(function) -> None:
    """Let LLVM vectorise ``function`` with 512-bit registers where the CPU has them.

    LLVM defaults to 256-bit vectors on AVX-512 CPUs (``prefer-vector-width``), which halves the throughput of
    ``vpopcntq``. llvmlite only accepts a fixed list of function attributes, so the string attribute is added to the
    underlying set directly; if llvmlite changes that, the kernels simply stay at 256 bits.
    """
    try:
        set.add(function.attributes, '"prefer-vector-width"="512"')
    except Exception:  # pragma: no cover - depends on llvmlite internals
        pass


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
        g += 1


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


def _words(codes: ArrayLike, name: str) -> NDArray[np.uint64]:
    """``codes`` as a read-only, C-contiguous uint64 array (n, n_words), without copying a contiguous input.

    Accepts uint64 words or uint8 rows in the :mod:`hashdup.bits` layout. Always passing read-only arrays gives each
    kernel a single compiled signature, whether the caller holds an in-memory array or a read-only memory map.
    """
    arr = np.asarray(codes)
    if arr.dtype == np.uint8:
        arr = as_words(arr)
    if arr.dtype != np.uint64:
        raise TypeError(f"{name} must be uint64 words or uint8 packed rows, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (n, n_words) with n_words ≥ 1, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr).view(np.ndarray)
    arr.flags.writeable = False
    return arr


def _pair(db: ArrayLike, queries: ArrayLike) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    dbw, qw = _words(db, "db"), _words(queries, "queries")
    if dbw.shape[1] != qw.shape[1]:
        raise ValueError(f"queries have {qw.shape[1]} words per row, the database has {dbw.shape[1]}")
    return dbw, qw


def _n_threads(threads: int | None) -> int:
    if threads is None:
        return numba.get_num_threads()
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _plan(n: int, nq: int, width: int, threads: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Cut a scan into tasks: (database ranges, query ranges), every pair of them one task.

    Many queries are split into query blocks, a multiple of ``threads`` of them so each thread gets an equal share;
    when there are too few query blocks to go round, the database is split into one contiguous range per thread
    instead, and the per-range results are merged.
    """
    if n * nq * width < MIN_PARALLEL_WORK:
        threads = 1
    n_qblocks = max(1, math.ceil(nq / QUERY_BLOCK))
    n_splits = 1
    if threads > 1:
        if n_qblocks >= 2 * threads:
            n_qblocks = threads * math.ceil(n_qblocks / threads)
        else:
            n_splits = min(threads, n)
    qstep = max(1, math.ceil(nq / n_qblocks))
    dstep = max(1, math.ceil(n / n_splits))
    return ([(a, min(n, a + dstep)) for a in range(0, n, dstep)],
            [(a, min(nq, a + qstep)) for a in range(0, nq, qstep)])


def _run(tasks: list, threads: int) -> list:
    """Results of zero-argument callables, on a pool of ``threads`` threads (the kernels release the GIL)."""
    if threads <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
        return list(pool.map(lambda task: task(), tasks))


def _block_rows(width: int) -> int:
    return max(GROUP, DB_BLOCK_BYTES // (8 * width) // GROUP * GROUP)


def knn(db: ArrayLike, queries: ArrayLike, k: int, *, threads: int | None = None
        ) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """Exact ``k`` nearest neighbours by Hamming distance.

    Parameters
    ----------
    db : ndarray of uint64, shape (n, n_words), or of uint8, shape (n, 8 * n_words)
        Database codes in the :mod:`hashdup.bits` layout, e.g. ``bits.as_words`` of a code file's read-only memory
        map. Streamed block by block and never copied when C-contiguous.
    queries : ndarray, shape (nq, n_words) or (nq, 8 * n_words)
        Query codes, the same width as ``db``.
    k : int
        Neighbours per query, ≥ 1; may exceed ``n``.
    threads : int, optional
        Threads to use; default :func:`numba.get_num_threads`. Small problems run on the calling thread.

    Returns
    -------
    D : ndarray of int32, shape (nq, k)
        Hamming distances (bits), ascending; ``-1`` past the ``n``-th neighbour.
    I : ndarray of int64, shape (nq, k)
        Database row ids, ties by ascending id; ``-1`` padding.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be ≥ 1, got {k!r}")
    k = int(k)
    dbw, qw = _pair(db, queries)
    n, nq, width = dbw.shape[0], qw.shape[0], dbw.shape[1]
    threads = _n_threads(threads)
    D = np.full((nq, k), -1, dtype=np.int32)
    I = np.full((nq, k), -1, dtype=np.int64)
    if n == 0 or nq == 0:
        return D, I
    kk = min(k, n)
    dranges, qranges = _plan(n, nq, width, threads)
    rows = _block_rows(width)
    tasks = [lambda a=a, b=b, c=c, e=e: _knn_block(dbw[a:b], a, qw[c:e], kk, rows, GROUP)
             for a, b in dranges for c, e in qranges]
    parts = iter(_run(tasks, threads))
    for s in range(len(dranges)):
        for c, e in qranges:
            Dp, Ip = next(parts)
            if s == 0:
                D[c:e, :kk], I[c:e, :kk] = Dp, Ip
                continue
            # merge with the lower database ranges: a stable sort by distance keeps ids ascending within a distance
            Dm = np.concatenate([D[c:e, :kk], Dp], axis=1)
            Im = np.concatenate([I[c:e, :kk], Ip], axis=1)
            order = np.argsort(np.where(Dm < 0, _NO_THRESHOLD, Dm), axis=1, kind="stable")[:, :kk]
            D[c:e, :kk] = np.take_along_axis(Dm, order, axis=1)
            I[c:e, :kk] = np.take_along_axis(Im, order, axis=1)
    return D, I


def radius(db: ArrayLike, queries: ArrayLike, radius: int, *, threads: int | None = None
           ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]:
    """Every database code within ``radius`` bits (inclusive) of each query.

    Parameters
    ----------
    db, queries, threads
        As for :func:`knn`.
    radius : int
        Largest Hamming distance (bits) that matches, ≥ 0: a code matches when ``d ≤ radius``.

    Returns
    -------
    lims : ndarray of int64, shape (nq + 1,)
    D : ndarray of int32, shape (lims[-1],)
    I : ndarray of int64, shape (lims[-1],)
        Query ``q``'s matches are ``I[lims[q]:lims[q+1]]`` at distances ``D[lims[q]:lims[q+1]]``, sorted by distance
        then id.
    """
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be ≥ 0, got {radius!r}")
    dbw, qw = _pair(db, queries)
    n, nq, width = dbw.shape[0], qw.shape[0], dbw.shape[1]
    r = min(int(radius), 64 * width)  # no distance exceeds the width; keeps the counting sort small
    threads = _n_threads(threads)
    if n == 0 or nq == 0:
        return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
    dranges, qranges = _plan(n, nq, width, threads)
    rows = _block_rows(width)
    keys = [(a, b, c, e) for a, b in dranges for c, e in qranges]  # database ranges ascending: ids stay ascending
    tasks = [lambda a=a, b=b, c=c, e=e: _radius_block(dbw[a:b], a, qw[c:e], r, rows, GROUP) for a, b, c, e in keys]
    parts = _run(tasks, threads)
    qs = np.concatenate([qi + c for (qi, _, _), (_, _, c, _) in zip(parts, keys)])
    ds = np.concatenate([d for _, d, _ in parts])
    ids = np.concatenate([i for _, _, i in parts])
    return _radius_csr(nq, r, qs, ds, ids)
