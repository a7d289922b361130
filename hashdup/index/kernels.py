"""Compiled exact Hamming scans: kNN and radius search at memory-bandwidth speed.

The same results as :mod:`hashdup.index.scan` (the numpy reference), element for element: kNN gives faiss's
``(D, I)`` of shape (nq, k), rows sorted by distance then id and padded with ``-1``; radius search gives
``(lims, D, I)`` in CSR form sorted by (distance, id) per query. A radius is inclusive (``d ≤ radius``), unlike
faiss's binary ``range_search`` (``d < radius``).

This module checks the inputs, plans the work and merges the results of :func:`knn` and :func:`radius`; the compiled
loops that scan one database range for one block of queries are in :mod:`hashdup.index._scan_kernels`.

How the scan is organised
-------------------------
Codes are read as uint64 words (:func:`hashdup.bits.as_words`). The database is cut into blocks of
:data:`DB_BLOCK_BYTES` that stay in the L1 cache while every query of a query block is compared with them, so each
database byte is read from memory once per query block, not once per query. A memory-mapped code file larger than
RAM is therefore streamed front to back in blocks, never copied whole; the extra memory is one block buffer per
thread plus the results. Inside a block, the distances of :data:`GROUP` consecutive rows are reduced to one minimum
by a vectorised loop before any branch, and each query keeps its ``k`` best (distance, id) pairs with a running
threshold (:mod:`hashdup.index._scan_kernels` describes the loops).

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
:mod:`hashdup.index._scan_kernels`, or numba's user cache directory when that is read-only), so later processes load
them in well under a second. Inputs are always passed as read-only C-contiguous arrays, so each kernel has exactly
one signature.

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
from numpy.typing import ArrayLike, NDArray

from hashdup.bits import as_words
from hashdup.index._scan_kernels import _NO_THRESHOLD, _knn_block, _radius_block, _radius_csr

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
    qs = np.concatenate([qi + c for (qi, _, _), (_, _, c, _) in zip(parts, keys, strict=True)])
    ds = np.concatenate([d for _, d, _ in parts])
    ids = np.concatenate([i for _, _, i in parts])
    return _radius_csr(nq, r, qs, ds, ids)
