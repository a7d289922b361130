"""Multi-index hashing: exact Hamming radius search, kNN and self-join by probing substring tables.

A code of ``n_bits`` bits is cut into ``m`` contiguous substrings (bit ranges of the :mod:`hashdup.bits` layout whose
sizes differ by at most one bit; the first ``n_bits % m`` are one bit longer). Write ``radius = m·r' + a`` with
``0 ≤ a < m``. If two codes differ in at most ``radius`` bits, then one of the first ``a + 1`` substrings differs in at
most ``r'`` bits, or one of the other substrings in at most ``r' − 1`` bits: otherwise they would differ in at least
``(a + 1)(r' + 1) + (m − a − 1)·r' = radius + 1`` bits (Norouzi et al., Proposition 1 refined). So probing substring
``k`` with radius ``t_k = r'`` for ``k ≤ a`` and ``t_k = r' − 1`` for ``k > a`` (not at all when ``t_k < 0``) finds
every match; each candidate is verified with its full distance.

A candidate can collide on several substrings. It is reported only from the first substring (in probing order) whose
ball contains it: that one is known from the candidate's own substring distances, so no "seen" set is needed.

Tables
------
The table of substring ``k`` (``s`` bits) is a permutation ``perm`` of the ids, sorted by (substring key, id), and a
directory ``offsets`` of ``2**d + 1`` entries over the top ``d = min(s, ⌊log2 n⌋)`` key bits: the codes whose key has
top bits ``h`` are ``perm[offsets[h]:offsets[h + 1]]``. When ``d = s`` a bucket is exactly the codes with one key
(the usual case, since ``m`` is chosen so that ``s ≈ log2 n``); otherwise a bucket holds about one or two keys and a
lookup compares the keys of its codes. Both arrays are int32 when ``n < 2**31``. Memory: ``m·(n + 2**d)`` ids.

Queries
-------
``radius`` probes, for each substring with ``t_k ≥ 0``, every key within ``t_k`` bits of the query's key (masks
enumerated by weight with Gosper's hack) and verifies the codes found. ``knn`` is the paper's incremental search:
substring ``k`` is probed at exactly ``r'`` bits in the order ``r' = 0, 1, ...`` and, within one ``r'``,
``k = 0 .. m − 1``; after step ``(r', k)`` every code within ``m·r' + k`` bits has been verified, so the search stops
as soon as ``k`` codes are known to be that close. A query whose search would probe more than ``n / 64`` keys (a
far query: the ball grows combinatorially) is answered by a scan instead, and so is a radius query whose balls hold
more keys than there are codes.

Self-join
---------
:func:`self_join` never builds all tables: for each substring with ``t_k ≥ 0`` it sorts the codes by that key (one
permutation, reused), pairs every code with the rest of its run of equal keys and, when ``t_k ≥ 1``, with the runs of
larger keys within ``t_k`` bits, and verifies each candidate pair. When ``radius < m`` only the first ``radius + 1``
substrings are needed and each is probed exactly, so the join is a few counting sorts plus the pairs inside runs; its
``m`` is chosen by a cost model (:func:`join_m`): for 64-bit codes and radius 3, four 16-bit substrings. Memory: the
codes, one permutation, a directory, a buffer per thread, and the pairs.

Layouts are those of :mod:`hashdup.index.scan`: kNN ``(D, I)`` int32/int64 of shape (nq, k) by distance then id,
``-1`` padded; radius ``(lims, D, I)`` in CSR form by distance then id; self-join ``(i, j, d)`` with ``i < j`` sorted
by (i, j). A radius is inclusive: a code matches when its distance is ``≤ radius`` (faiss's binary range search is
strict ``<``).

Modules
-------
This module holds the public API (:class:`MultiIndex`, :func:`self_join`) and puts their results together. The
parameters and cost model are in :mod:`hashdup.index._mih_params` (re-exported here), table building and the thread
pool in :mod:`hashdup.index._mih_tables`, and every compiled loop (substring keys, table sorting, the self-join,
radius and kNN queries) in :mod:`hashdup.index._mih_kernels`, one module: numba's on-disk cache checks only the
source file of each cached function, so compiled code calling compiled code from another file could run stale.

References
----------
M. Norouzi, A. Punjani and D. J. Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012; extended
as "Fast exact search in Hamming space with multi-index hashing", IEEE TPAMI 36(6), 2014 (arXiv:1307.2982).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hashdup import bits
from hashdup.index._mih_kernels import (
    _ID_BITS,
    _ID_MASK,
    _join_brute_chunk,
    _join_chunk,
    _knn_chunk,
    _radius_chunk,
    _radius_scan_chunk,
)
from hashdup.index._mih_params import (
    _ball,
    _check_m,
    _check_radius,
    _check_width,
    default_m,
    expected_work,
    join_cost,
    join_m,
    substring_bounds,
    substring_radii,
)
from hashdup.index._mih_tables import (
    _build_table,
    _build_tables,
    _dir_bits,
    _id_dtype,
    _map,
    _pool,
    _ranges,
    _read_only_words,
    _Tables,
    _threads,
)

__all__ = ["MultiIndex", "default_m", "expected_work", "join_cost", "join_m", "self_join", "substring_bounds",
           "substring_radii"]

# A self-join uses one thread per this many codes at most: below it, starting threads costs more than it saves.
_CODES_PER_THREAD = 50_000
# A self-join chunk gathers the codes of its positions and of the rest of its last run, up to this many positions
# (or twice the chunk); a longer run (heavy duplicates) is read in place beyond that.
_GATHER_MIN = 4096
# A kNN query that has probed this many keys per code without finishing is answered by a scan instead: a probe (a
# directory lookup and the codes behind it, mostly cache misses) costs as much as scanning 30 or so codes, so the
# incremental search is then already about as slow as a scan.
_KNN_BUDGET = 1 / 64


def _pairs_guess(n_codes: int) -> int:
    """Room for the pairs of a self-join chunk of ``n_codes`` codes before it is run again with the exact number
    (a run costs twice when a chunk holds more pairs than an eighth of its codes: heavy duplicates)."""
    return n_codes // 8 + 1024


def _filled(kernel: Callable, cap: int) -> tuple[NDArray, NDArray, NDArray]:
    """Run a pair kernel with output arrays of ``cap`` entries, again with exactly enough when they overflowed;
    the result is copied out, so that what is kept is the size of the pairs, not of the guess."""
    while True:
        I, J, Dd = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int32)
        cnt = kernel(I, J, Dd)
        if cnt <= cap:
            return I[:cnt].copy(), J[:cnt].copy(), Dd[:cnt].copy()
        cap = cnt


def _filled_csr(kernel: Callable, nq: int, cap: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """:func:`_filled` for a radius kernel: per-query counts and packed keys."""
    while True:
        counts, keys = np.zeros(nq, np.int64), np.empty(cap, np.int64)
        cnt = kernel(counts, keys)
        if cnt <= cap:
            return counts, keys[:cnt].copy()
        cap = cnt


def _pairs(parts: list[tuple[NDArray, NDArray, NDArray]]
           ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int32]]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    i = np.concatenate([p[0] for p in parts])
    j = np.concatenate([p[1] for p in parts])
    d = np.concatenate([p[2] for p in parts])
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def _csr(nq: int, results: list[tuple[NDArray[np.int64], NDArray[np.int64]]]
         ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]:
    lims = np.zeros(nq + 1, dtype=np.int64)
    if results:
        np.cumsum(np.concatenate([c for c, _ in results]), out=lims[1:])
        keys = np.concatenate([kv for _, kv in results])
    else:
        keys = np.zeros(0, np.int64)
    return lims, (keys >> _ID_BITS).astype(np.int32), keys & _ID_MASK


def self_join(codes: ArrayLike, n_bits: int, radius: int, m: int | None = None, *, n_threads: int | None = None
              ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int32]]:
    """All pairs of codes within ``radius`` bits (inclusive), without a quadratic pass.

    For each substring that the radius needs (see the module docstring), the codes are sorted by that substring's
    key; every code is paired with the later codes of its run of equal keys and, when the substring's probing radius
    ``t ≥ 1``, with the runs of larger keys within ``t`` bits. Candidates are verified with the full distance, and a
    pair is reported only by the first substring whose ball contains it. When ``radius < m`` every needed substring
    is probed exactly (runs only, no lookups).

    Parameters
    ----------
    codes : ndarray of uint8, shape (n, n_bytes)
        Packed codes (:mod:`hashdup.bits` layout), e.g. a read-only memory map. Not copied when 8-byte aligned.
    n_bits : int
        Meaningful bits per code.
    radius : int
        Largest Hamming distance of a reported pair, ≥ 0.
    m : int, optional
        Number of substrings; by default :func:`join_m` picks it from ``n``, ``n_bits`` and ``radius`` (and may pick
        the quadratic scan when ``n`` is tiny or the radius is a large fraction of ``n_bits``).
    n_threads : int, optional
        Threads; numba's thread count by default, and at most one per 50 000 codes.

    Returns
    -------
    i, j : ndarray of int64, shape (n_pairs,)
        Row ids with ``i < j``, sorted by (i, j).
    d : ndarray of int32, shape (n_pairs,)
        Hamming distances, ``≤ radius``.

    Notes
    -----
    Memory: the codes, one sort permutation (``n`` int32), a directory of at most about ``n`` int32, per thread a
    buffer of the codes of one chunk (``n / 16`` per thread) and twice that, and the pairs. 1 M 64-bit codes with
    1 % near copies join at radius 3 in about 0.1 s on 2 cores, 10 M in under 2 s (bench/search_join.py).
    """
    codes = bits.as_codes(codes)
    n_bits = bits.check_n_bits(n_bits)
    _check_width(codes, n_bits)
    radius = _check_radius(radius)
    n_threads = _threads(n_threads)
    words = _read_only_words(codes)
    n = words.shape[0]
    if n < 2:
        return _pairs([])
    n_threads = min(n_threads, max(1, n // _CODES_PER_THREAD))
    if m is None:
        m = join_m(n, n_bits, radius)
    with _pool(n_threads) as pool:
        if m is None:
            # rows near the top pair with more rows: many small ranges keep the threads evenly loaded
            return _pairs(_map(lambda a, b: _filled(
                lambda I, J, Dd: _join_brute_chunk(words, radius, a, b, I, J, Dd), _pairs_guess(b - a)),
                _ranges(n, 16 * n_threads), pool))
        starts, widths = substring_bounds(n_bits, m)
        tks = substring_radii(radius, m)
        perm = np.empty(n, dtype=_id_dtype(n))
        parts = []
        for k in range(m):
            if tks[k] < 0:
                continue
            dbits = _dir_bits(n, int(widths[k]))
            offsets = np.empty((1 << dbits) + 1, dtype=perm.dtype)
            _build_table(words, int(starts[k]), int(widths[k]), dbits, perm, offsets, pool, n_threads)
            scan_keys = _ball(int(widths[k]), int(tks[k])) - 1 > n

            def chunk(a: int, b: int, k: int = k, dbits: int = dbits, offsets: NDArray = offsets,
                      scan_keys: bool = scan_keys) -> tuple[NDArray, NDArray, NDArray]:
                return _filled(lambda I, J, Dd: _join_chunk(words, perm, offsets, dbits, starts, widths, tks, k,
                                                            radius, scan_keys, _GATHER_MIN, a, b, I, J, Dd),
                               _pairs_guess(b - a))

            parts += _map(chunk, _ranges(n, 16 * n_threads), pool)
    return _pairs(parts)


class MultiIndex:
    """Exact Hamming search by multi-index hashing: ``m`` substring tables probed around each query.

    Parameters
    ----------
    codes : ndarray of uint8, shape (n, n_bytes)
        Packed codes in the :mod:`hashdup.bits` layout, e.g. the read-only memory map of a code file. Not copied
        (unless its rows are not 8-byte aligned).
    n_bits : int
        Meaningful bits per code.
    m : int, optional
        Number of substrings, 1 to 64 bits each. Default :func:`default_m`: ``n_bits / log2(n)``, so that a key
        addresses about one code. Fewer, longer substrings mean fewer candidates but balls with more keys; the
        cost per query grows with the number of keys probed plus the number of candidates (:func:`expected_work`).
    n_threads : int, optional
        Threads for building tables and answering queries; numba's thread count by default.

    Attributes
    ----------
    starts_, widths_ : ndarray of int64, shape (m,)
        The substrings' bit ranges.
    nbytes_ : int
        Bytes of the tables once built (0 before).

    Notes
    -----
    The tables are built on the first ``radius`` or ``knn`` call (or by :meth:`build`): ``m`` counting sorts,
    ``m·(n + 2**d)`` ids of 4 bytes (1 M × 64 bits: 0.4 s, 18 MB; 10 M: 1.1 s, 154 MB on 2 cores).
    :meth:`self_join` does not need them and never builds them: it sorts by one substring at a time, with its own
    choice of ``m`` for the radius asked.

    A radius query costs about 30–70 ns per probed key plus a few ns per candidate (:func:`expected_work`), against
    a fraction of a ns per code for a compiled linear scan: at 10 M × 64 bits, radius 3 to 8, 0.02–0.1 ms instead
    of about 1 ms, so the tables pay for themselves after about a thousand queries. kNN pays only while the k-th
    neighbour is close (near duplicates, small k): the balls grow combinatorially with the distance, and for random
    queries at 10 M × 64 bits with k = 12 (k-th distance about 14) it takes several ms per query.

    References
    ----------
    M. Norouzi, A. Punjani and D. J. Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012.
    """

    def __init__(self, codes: ArrayLike, n_bits: int, m: int | None = None, *, n_threads: int | None = None) -> None:
        self.codes = bits.as_codes(codes)
        self.n_bits = bits.check_n_bits(n_bits)
        _check_width(self.codes, self.n_bits)
        self.words_ = _read_only_words(self.codes)
        self.m = default_m(len(self), self.n_bits) if m is None else _check_m(self.n_bits, m)
        self.n_threads = _threads(n_threads)
        self.starts_, self.widths_ = substring_bounds(self.n_bits, self.m)
        self._tables: _Tables | None = None

    def __len__(self) -> int:
        return self.codes.shape[0]

    @property
    def nbytes_(self) -> int:
        return 0 if self._tables is None else sum(a.nbytes for a in self._tables)

    def build(self) -> MultiIndex:
        """Build the ``m`` substring tables (idempotent); returns ``self``."""
        self._built()
        return self

    def _built(self) -> _Tables:
        """The substring tables, built on first use."""
        if self._tables is None:
            self._tables = _build_tables(self.words_, self.starts_, self.widths_, self.n_threads)
        return self._tables

    def _queries(self, Q: ArrayLike) -> NDArray[np.uint64]:
        Q = bits.as_codes(Q)
        if Q.shape[1] != self.codes.shape[1]:
            raise ValueError(f"queries have {Q.shape[1]} bytes per row, the index holds {self.codes.shape[1]}")
        return _read_only_words(Q)

    def _query_ranges(self, nq: int) -> list[tuple[int, int]]:
        return _ranges(nq, 4 * self.n_threads)

    def radius(self, Q: ArrayLike, radius: int) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]:
        """Every code within ``radius`` bits (inclusive) of each query.

        Probes each needed substring's ball around the query's key; falls back to comparing every code when the
        balls hold more keys than there are codes (a large radius).

        Parameters
        ----------
        Q : ndarray of uint8, shape (nq, n_bytes)
        radius : int, ≥ 0

        Returns
        -------
        lims : ndarray of int64, shape (nq + 1,)
        D : ndarray of int32, shape (lims[-1],)
        I : ndarray of int64, shape (lims[-1],)
            Query ``q``'s matches are ``I[lims[q]:lims[q+1]]`` at distances ``D[lims[q]:lims[q+1]]``, by distance
            then id.
        """
        qwords = self._queries(Q)
        radius = _check_radius(radius)
        nq, n = qwords.shape[0], len(self)
        if n == 0 or nq == 0:
            return _csr(nq, [])
        probes, _ = expected_work(n, self.n_bits, radius, self.m)
        if probes > n:
            def fn(a: int, b: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
                return _filled_csr(lambda counts, keys: _radius_scan_chunk(self.words_, qwords, a, b, radius, counts,
                                                                           keys), b - a, 16 * (b - a) + 64)
        else:
            perms, offs, off_base, dbits = self._built()
            tks = substring_radii(radius, self.m)

            def fn(a: int, b: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
                return _filled_csr(lambda counts, keys: _radius_chunk(
                    self.words_, qwords, a, b, perms, offs, off_base, dbits, self.starts_, self.widths_, tks, radius,
                    counts, keys), b - a, 16 * (b - a) + 64)
        with _pool(self.n_threads) as pool:
            return _csr(nq, _map(fn, self._query_ranges(nq), pool))

    def knn(self, Q: ArrayLike, k: int) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        """The ``k`` nearest codes of each query, by growing the search radius until they are certain.

        Returns
        -------
        D : ndarray of int32, shape (nq, k)
            Hamming distances, ascending; -1 where fewer than ``k`` codes exist.
        I : ndarray of int64, shape (nq, k)
            Row ids, ties by ascending id; -1 padding.
        """
        qwords = self._queries(Q)
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be ≥ 1, got {k!r}")
        k = int(k)
        nq, n = qwords.shape[0], len(self)
        D = np.full((nq, k), -1, dtype=np.int32)
        I = np.full((nq, k), -1, dtype=np.int64)
        if n == 0 or nq == 0:
            return D, I
        perms, offs, off_base, dbits = self._built()
        kk = min(k, n)
        budget = int(_KNN_BUDGET * n)
        with _pool(self.n_threads) as pool:
            _map(lambda a, b: _knn_chunk(self.words_, qwords, a, b, kk, perms, offs, off_base, dbits, self.starts_,
                                         self.widths_, self.n_bits, budget, D, I), self._query_ranges(nq), pool)
        return D, I

    def self_join(self, radius: int, m: int | None = None
                  ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int32]]:
        """All pairs of indexed codes within ``radius`` bits: :func:`self_join` (its own ``m``, by default
        :func:`join_m`; the query tables are not used)."""
        return self_join(self.codes, self.n_bits, radius, m, n_threads=self.n_threads)
