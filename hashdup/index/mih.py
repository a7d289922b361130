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

References
----------
M. Norouzi, A. Punjani and D. J. Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012; extended
as "Fast exact search in Hamming space with multi-index hashing", IEEE TPAMI 36(6), 2014 (arXiv:1307.2982).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic
from numpy.typing import ArrayLike, NDArray

from hashdup import bits

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_ID_BITS = 40                      # packed result keys: distance << 40 | id
_ID_MASK = (1 << _ID_BITS) - 1

# The self-join cost model, in units of one candidate verified inside a run of equal keys by the vectorised loop
# (0.5 ns for one-word codes). Fitted to 16 timed joins of 1 M codes (32 to 128 bits, radius 2 to 13, several m each)
# on a 2-core Xeon: sorting the codes by one substring and gathering them, 37 ns per code; probing one key of a ball
# (a directory lookup: cache misses), 31 ns; a candidate from a probed run, 1.5 ns; a pair of the quadratic scan, 1 ns.
_COST_SORT = 75.0
_COST_PROBE = 60.0
_COST_PROBED = 3.0
_COST_BRUTE = 2.0
# A self-join uses one thread per this many codes at most: below it, starting threads costs more than it saves.
_CODES_PER_THREAD = 50_000
# A self-join chunk gathers the codes of its positions and of the rest of its last run, up to this many positions
# (or twice the chunk); a longer run (heavy duplicates) is read in place beyond that.
_GATHER_MIN = 4096
# A kNN query that has probed this many keys per code without finishing is answered by a scan instead: a probe (a
# directory lookup and the codes behind it, mostly cache misses) costs as much as scanning 30 or so codes, so the
# incremental search is then already about as slow as a scan.
_KNN_BUDGET = 1 / 64

# ----------------------------------------------------------------------------------------------------------------
# numba kernels
# ----------------------------------------------------------------------------------------------------------------


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of an integer (LLVM ctpop: one POPCNT instruction)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return context.cast(builder, builder.ctpop(args[0]), sig.args[0], sig.return_type)

    return types.int64(x), codegen


@njit
def _extract(words, i, start, width):
    """Bits ``start .. start + width - 1`` (width ≤ 64) of row ``i`` as an integer, bit ``start`` lowest."""
    w = start >> 6
    sh = start & 63
    v = words[i, w] >> np.uint64(sh)
    if sh + width > 64:
        v |= words[i, w + 1] << np.uint64(64 - sh)
    if width < 64:
        v &= (_U1 << np.uint64(width)) - _U1
    return v


@njit
def _extract_xor(a, i, b, j, start, width):
    """:func:`_extract` of ``a[i] ^ b[j]``: the bits where a substring of the two rows differs."""
    w = start >> 6
    sh = start & 63
    v = (a[i, w] ^ b[j, w]) >> np.uint64(sh)
    if sh + width > 64:
        v |= (a[i, w + 1] ^ b[j, w + 1]) << np.uint64(64 - sh)
    if width < 64:
        v &= (_U1 << np.uint64(width)) - _U1
    return v


@njit
def _distance(a, i, b, j, limit):
    """Hamming distance of rows ``a[i]`` and ``b[j]``; gives up (returning a value > limit) once it exceeds limit."""
    # (a ``for`` loop with ``break`` here compiles to code an order of magnitude slower than this ``while``)
    d = _popcount(a[i, 0] ^ b[j, 0])
    w = 1
    n_words = a.shape[1]
    while w < n_words and d <= limit:
        d += _popcount(a[i, w] ^ b[j, w])
        w += 1
    return d


@njit
def _first_mask(weight):
    """The smallest integer with ``weight`` set bits."""
    if weight >= 64:
        return ~_U0
    return (_U1 << np.uint64(weight)) - _U1


@njit
def _last_mask(weight, width):
    """The largest ``width``-bit integer with ``weight`` set bits."""
    if weight == 0:
        return _U0
    return _first_mask(weight) << np.uint64(width - weight)


@njit
def _next_mask(x):
    """The next larger integer with as many set bits as ``x`` (Gosper's hack); ``x`` must not be the last one."""
    c = x & (~x + _U1)
    r = x + c
    return (((r ^ x) >> np.uint64(2)) // c) | r


@njit(cache=True, nogil=True)
def _table_histogram(words, start, width, dbits, i0, i1, counts):
    """Add to ``counts`` (2**dbits,) the number of codes ``i0 .. i1 - 1`` per top ``dbits`` bits of their key."""
    ush = np.uint64(width - dbits)
    for i in range(i0, i1):
        counts[np.int64(_extract(words, i, start, width) >> ush)] += 1


@njit(cache=True, nogil=True)
def _table_scatter(words, start, width, dbits, i0, i1, fill, perm):
    """Place codes ``i0 .. i1 - 1`` in ``perm`` at ``fill[bucket]`` (advanced), in id order: a stable counting sort."""
    ush = np.uint64(width - dbits)
    for i in range(i0, i1):
        b = np.int64(_extract(words, i, start, width) >> ush)
        perm[fill[b]] = i
        fill[b] += 1


@njit(cache=True, nogil=True)
def _table_sort_buckets(words, start, width, offsets, perm, b0, b1):
    """Sort the codes of buckets ``b0 .. b1 - 1`` by their full keys, stably (ids ascend within a key)."""
    largest = 0
    for b in range(b0, b1):
        largest = max(largest, np.int64(offsets[b + 1]) - np.int64(offsets[b]))
    if largest < 2:
        return
    keys = np.empty(largest, np.uint64)
    ids = np.empty(largest, perm.dtype)
    for b in range(b0, b1):
        lo = np.int64(offsets[b])
        size = np.int64(offsets[b + 1]) - lo
        if size < 2:
            continue
        for x in range(size):
            keys[x] = _extract(words, np.int64(perm[lo + x]), start, width)
        if size <= 32:                      # insertion sort, stable
            for x in range(1, size):
                kx, ix = keys[x], perm[lo + x]
                y = x - 1
                while y >= 0 and keys[y] > kx:
                    keys[y + 1] = keys[y]
                    perm[lo + y + 1] = perm[lo + y]
                    y -= 1
                keys[y + 1] = kx
                perm[lo + y + 1] = ix
        else:
            order = np.argsort(keys[:size], kind="mergesort")
            for x in range(size):
                ids[x] = perm[lo + order[x]]
            for x in range(size):
                perm[lo + x] = ids[x]


@njit
def _pair_seen2(a, i, b, j, starts, widths, tks, k):
    """Whether the pair of rows ``a[i]``, ``b[j]`` lies in the probing ball of a substring before ``k`` (so that it
    was reported there)."""
    for kp in range(k):
        if tks[kp] >= 0 and _popcount(_extract_xor(a, i, b, j, starts[kp], widths[kp])) <= tks[kp]:
            return True
    return False


@njit
def _pair_seen(a, i, j, starts, widths, tks, k):
    """:func:`_pair_seen2` for two rows of one array."""
    return _pair_seen2(a, i, a, j, starts, widths, tks, k)


@njit
def _emit(I, J, Dd, cnt, i, j, d):
    if cnt < I.shape[0]:
        I[cnt] = min(i, j)
        J[cnt] = max(i, j)
        Dd[cnt] = d
    return cnt + 1


@njit(cache=True, nogil=True)
def _join_chunk(words, perm, offsets, dbits, starts, widths, tks, k, radius, scan_keys, min_gather, p0, p1, I, J,
                Dd):
    """Pairs within ``radius`` found through substring ``k`` from the sorted positions ``p0 .. p1 - 1``.

    Position ``p`` is paired with the later positions of its run of equal keys, and with every run whose key is
    larger than its own and within ``tks[k]`` bits of it (found by probing the ball around its key, or when
    ``scan_keys`` by comparing the keys of all later positions); each unordered pair of runs is visited once.

    The codes of the chunk's positions (and of the rest of its last run, up to twice the chunk or ``min_gather``
    positions) are first gathered into a local buffer, so that runs are compared in contiguous memory; for one-word
    codes the comparison of a code with the rest of its run is a branch-free count that the compiler vectorises,
    redone with output only when it finds a pair.

    Pairs go to ``I``, ``J``, ``Dd`` while they have room; returns the number found (a larger number: call again
    with arrays that large). The arrays are never grown here: an array reassigned inside the hot loop makes numba's
    code an order of magnitude slower.
    """
    n, n_words = words.shape
    cnt = 0
    if p1 <= p0:
        return cnt
    start = starts[k]
    width = widths[k]
    ush = np.uint64(width - dbits)
    direct = width == dbits
    t = min(tks[k], width)
    # gather positions p0 .. g_end - 1
    last_key = _extract(words, np.int64(perm[p1 - 1]), start, width)
    g_end = np.int64(offsets[np.int64(last_key >> ush) + 1])
    g_end = max(min(g_end, p0 + max(2 * (p1 - p0), min_gather)), p1)
    ids = np.empty(g_end - p0, np.int64)
    A = np.empty((g_end - p0, n_words), np.uint64)
    for x in range(g_end - p0):
        ids[x] = perm[p0 + x]
        for w in range(n_words):
            A[x, w] = words[ids[x], w]
    for p in range(p0, p1):
        pi = p - p0
        i = ids[pi]
        key = _extract(A, pi, start, width)
        run_end = np.int64(offsets[np.int64(key >> ush) + 1])
        if not direct:
            q = p + 1
            while q < run_end:
                kq = _extract(A, q - p0, start, width) if q < g_end else _extract(words, np.int64(perm[q]), start,
                                                                                    width)
                if kq != key:
                    break
                q += 1
            run_end = q
        hi = min(run_end, g_end)
        # the rest of the run, gathered
        if n_words == 1:
            x0 = A[pi, 0]
            hits = 0
            for q in range(pi + 1, hi - p0):
                hits += _popcount(x0 ^ A[q, 0]) <= radius
            if hits:
                for q in range(pi + 1, hi - p0):
                    d = _popcount(x0 ^ A[q, 0])
                    if d <= radius and not _pair_seen(A, pi, q, starts, widths, tks, k):
                        cnt = _emit(I, J, Dd, cnt, i, ids[q], d)
        else:
            for q in range(pi + 1, hi - p0):
                d = _distance(A, pi, A, q, radius)
                if d <= radius and not _pair_seen(A, pi, q, starts, widths, tks, k):
                    cnt = _emit(I, J, Dd, cnt, i, ids[q], d)
        # the rest of the run beyond the buffer (a run longer than the chunk)
        for q in range(hi, run_end):
            j = np.int64(perm[q])
            d = _distance(A, pi, words, j, radius)
            if d <= radius and not _pair_seen2(A, pi, words, j, starts, widths, tks, k):
                cnt = _emit(I, J, Dd, cnt, i, j, d)
        if t < 1:
            continue
        if scan_keys:
            # the ball holds more keys than there are codes: compare the keys of all later runs instead
            for q in range(run_end, n):
                j = np.int64(perm[q])
                if _popcount(_extract(words, j, start, width) ^ key) > t:
                    continue
                d = _distance(A, pi, words, j, radius)
                if d <= radius and not _pair_seen2(A, pi, words, j, starts, widths, tks, k):
                    cnt = _emit(I, J, Dd, cnt, i, j, d)
            continue
        for w in range(1, t + 1):
            x = _first_mask(w)
            last = _last_mask(w, width)
            while True:
                v = key ^ x
                if v > key:
                    vb = np.int64(v >> ush)
                    for q in range(np.int64(offsets[vb]), np.int64(offsets[vb + 1])):
                        j = np.int64(perm[q])
                        if not direct and _extract(words, j, start, width) != v:
                            continue
                        d = _distance(A, pi, words, j, radius)
                        if d <= radius and not _pair_seen2(A, pi, words, j, starts, widths, tks, k):
                            cnt = _emit(I, J, Dd, cnt, i, j, d)
                if x == last:
                    break
                x = _next_mask(x)
    return cnt


@njit(cache=True, nogil=True)
def _join_brute_chunk(words, radius, i0, i1, I, J, Dd):
    """Pairs (i, j), ``i0 ≤ i < i1``, ``i < j``, within ``radius``: the quadratic scan, for when no probing pays.
    Output as in :func:`_join_chunk`."""
    n = words.shape[0]
    cap = I.shape[0]
    cnt = 0
    for i in range(i0, i1):
        for j in range(i + 1, n):
            d = _distance(words, i, words, j, radius)
            if d <= radius:
                if cnt < cap:
                    I[cnt] = i
                    J[cnt] = j
                    Dd[cnt] = d
                cnt += 1
    return cnt


@njit
def _query_seen(words, j, qwords, q, starts, widths, tks, k):
    """Whether code ``j`` lies in query ``q``'s probing ball of a substring before ``k``."""
    for kp in range(k):
        if tks[kp] >= 0 and _popcount(_extract_xor(words, j, qwords, q, starts[kp], widths[kp])) <= tks[kp]:
            return True
    return False


@njit(cache=True, nogil=True)
def _radius_chunk(words, qwords, q0, q1, perms, offs, off_base, dbits, starts, widths, tks, radius, counts, keys):
    """Matches within ``radius`` of queries ``q0 .. q1 - 1``: per-query ``counts`` and packed ``keys``
    (``d << 40 | id``, sorted per query) while ``keys`` has room; returns the number of matches (output as in
    :func:`_join_chunk`)."""
    m = starts.shape[0]
    cap = keys.shape[0]
    cnt = 0
    for q in range(q0, q1):
        c0 = cnt
        for k in range(m):
            t = min(tks[k], widths[k])
            if t < 0:
                continue
            start = starts[k]
            width = widths[k]
            ush = np.uint64(width - dbits[k])
            direct = width == dbits[k]
            base = off_base[k]
            key = _extract(qwords, q, start, width)
            for w in range(t + 1):
                x = _first_mask(w)
                last = _last_mask(w, width)
                while True:
                    v = key ^ x
                    vb = base + np.int64(v >> ush)
                    for pos in range(np.int64(offs[vb]), np.int64(offs[vb + 1])):
                        j = np.int64(perms[k, pos])
                        if not direct and _extract(words, j, start, width) != v:
                            continue
                        d = _distance(words, j, qwords, q, radius)
                        if d <= radius and not _query_seen(words, j, qwords, q, starts, widths, tks, k):
                            if cnt < cap:
                                keys[cnt] = (np.int64(d) << _ID_BITS) | j
                            cnt += 1
                    if x == last:
                        break
                    x = _next_mask(x)
        if cnt <= cap:
            keys[c0:cnt].sort()
        counts[q - q0] = cnt - c0
    return cnt


@njit(cache=True, nogil=True)
def _radius_scan_chunk(words, qwords, q0, q1, radius, counts, keys):
    """:func:`_radius_chunk` by comparing every code, for radii whose balls outnumber the codes."""
    n = words.shape[0]
    cap = keys.shape[0]
    cnt = 0
    for q in range(q0, q1):
        c0 = cnt
        for j in range(n):
            d = _distance(words, j, qwords, q, radius)
            if d <= radius:
                if cnt < cap:
                    keys[cnt] = (np.int64(d) << _ID_BITS) | j
                cnt += 1
        if cnt <= cap:
            keys[c0:cnt].sort()
        counts[q - q0] = cnt - c0
    return cnt


@njit(cache=True, nogil=True)
def _knn_mih_one(words, qwords, q, kk, perms, offs, off_base, dbits, starts, widths, n_bits, budget, hist, buf, qkeys,
                 D, I):
    """The ``kk`` nearest codes of query ``q`` into ``D[q]``, ``I[q]`` by incremental search: returns 1, or 0 (nothing
    written) when more than ``budget`` keys would have to be probed, or -1 when ``buf`` is too small.

    Step ``(r1, k)`` probes substring ``k`` at exactly ``r1`` bits; steps run in the order r1 = 0, 1, ... and, within
    one r1, k = 0 .. m − 1. After step ``(r1, k)`` every code within ``m·r1 + k`` bits has been verified, so the
    search stops once ``kk`` verified codes are that close (or every code has been seen). A code is new at a step
    unless another of its substrings is reached by an earlier step.
    """
    n = words.shape[0]
    m = starts.shape[0]
    max_width = 0
    for k in range(m):
        max_width = max(max_width, widths[k])
    hist[:] = 0
    cnt = 0
    found = 0
    probes = 0
    T = n_bits           # the kk-th smallest distance seen is ≤ T; codes farther than T are not kept
    cT = 0               # number of codes seen within T
    for k in range(m):
        qkeys[k] = _extract(qwords, q, starts[k], widths[k])
    for r1 in range(max_width + 1):
        for k in range(m):
            width = widths[k]
            if r1 <= width:
                start = starts[k]
                ush = np.uint64(width - dbits[k])
                direct = width == dbits[k]
                base = off_base[k]
                x = _first_mask(r1)
                last = _last_mask(r1, width)
                while True:
                    probes += 1
                    if probes > budget:
                        return 0
                    v = qkeys[k] ^ x
                    vb = base + np.int64(v >> ush)
                    for pos in range(np.int64(offs[vb]), np.int64(offs[vb + 1])):
                        j = np.int64(perms[k, pos])
                        if not direct and _extract(words, j, start, width) != v:
                            continue
                        new = True
                        for kp in range(m):
                            if kp != k:
                                sd = _popcount(_extract_xor(words, j, qwords, q, starts[kp], widths[kp]))
                                if sd < r1 or (sd == r1 and kp < k):
                                    new = False
                                    break
                        if not new:
                            continue
                        found += 1
                        d = _distance(words, j, qwords, q, n_bits)
                        hist[d] += 1
                        if d <= T:
                            if cnt == buf.shape[0]:
                                kept = 0
                                for y in range(cnt):
                                    if (buf[y] >> _ID_BITS) <= T:
                                        buf[kept] = buf[y]
                                        kept += 1
                                cnt = kept
                                if cnt == buf.shape[0]:
                                    return -1
                            buf[cnt] = (np.int64(d) << _ID_BITS) | j
                            cnt += 1
                            cT += 1
                            while T > 0 and cT - hist[T] >= kk:
                                cT -= hist[T]
                                T -= 1
                    if x == last:
                        break
                    x = _next_mask(x)
            if (cT >= kk and T <= m * r1 + k) or found == n:
                best = np.sort(buf[:cnt])
                for y in range(kk):
                    D[q, y] = best[y] >> _ID_BITS
                    I[q, y] = best[y] & _ID_MASK
                return 1
    return 0                            # not reached: the last step has seen every code


@njit(cache=True, nogil=True)
def _knn_scan_one(words, qwords, q, kk, n_bits, hist, buf, D, I):
    """The ``kk`` nearest codes of query ``q`` by comparing every code: a distance histogram gives the kk-th
    distance, then the codes within it are sorted by (distance, id)."""
    n = words.shape[0]
    hist[:] = 0
    for j in range(n):
        hist[_distance(words, j, qwords, q, n_bits)] += 1
    T = 0
    c = hist[0]
    while c < kk:
        T += 1
        c += hist[T]
    if buf.shape[0] < c:
        buf = np.empty(c, np.int64)
    cnt = 0
    for j in range(n):
        d = _distance(words, j, qwords, q, T)
        if d <= T:
            buf[cnt] = (np.int64(d) << _ID_BITS) | j
            cnt += 1
    best = np.sort(buf[:cnt])
    for y in range(kk):
        D[q, y] = best[y] >> _ID_BITS
        I[q, y] = best[y] & _ID_MASK
    return buf


@njit(cache=True, nogil=True)
def _knn_chunk(words, qwords, q0, q1, kk, perms, offs, off_base, dbits, starts, widths, n_bits, budget, D, I):
    """kNN of queries ``q0 .. q1 - 1``: incremental multi-index search, or a scan for a query whose search would
    probe more than ``budget`` keys (a far query, or substrings too long for the radius it needs)."""
    hist = np.zeros(n_bits + 1, np.int64)
    buf = np.empty(max(64, 4 * kk), np.int64)
    qkeys = np.empty(starts.shape[0], np.uint64)
    scanned = 0
    for q in range(q0, q1):
        status = -1
        while status < 0:
            status = _knn_mih_one(words, qwords, q, kk, perms, offs, off_base, dbits, starts, widths, n_bits, budget,
                                  hist, buf, qkeys, D, I)
            if status < 0:
                buf = np.empty(2 * buf.shape[0], np.int64)
        if status == 0:
            buf = _knn_scan_one(words, qwords, q, kk, n_bits, hist, buf, D, I)
            scanned += 1
    return scanned


# ----------------------------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------------------------


def substring_bounds(n_bits: int, m: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Bit ranges of the ``m`` substrings: ``(starts, widths)``, contiguous, the first ``n_bits % m`` one bit longer."""
    n_bits, m = bits.check_n_bits(n_bits), _check_m(n_bits, m)
    q, rem = divmod(n_bits, m)
    widths = np.full(m, q, dtype=np.int64)
    widths[:rem] += 1
    starts = np.zeros(m, dtype=np.int64)
    np.cumsum(widths[:-1], out=starts[1:])
    return starts, widths


def substring_radii(radius: int, m: int) -> NDArray[np.int64]:
    """Probing radius of each substring for a search radius: ``r'`` for the first ``a + 1``, ``r' − 1`` after.

    ``radius = m·r' + a``; a negative entry means that substring need not be probed.
    """
    r1, a = divmod(int(radius), int(m))
    tks = np.full(m, r1 - 1, dtype=np.int64)
    tks[: a + 1] = r1
    return tks


def default_m(n: int, n_bits: int) -> int:
    """The paper's choice for kNN and radius queries: ``m ≈ n_bits / log2(n)``, so a substring key addresses about
    one code; clamped so that substrings have 1 to 64 bits."""
    n_bits = bits.check_n_bits(n_bits)
    m = round(n_bits / math.log2(max(n, 2)))
    return int(min(max(m, -(-n_bits // 64)), n_bits))


def _check_m(n_bits: int, m: int) -> int:
    if isinstance(m, bool) or int(m) != m:
        raise ValueError(f"m must be an integer, got {m!r}")
    m = int(m)
    lo = -(-n_bits // 64)
    if not lo <= m <= n_bits:
        raise ValueError(f"m must be between {lo} and {n_bits} for {n_bits}-bit codes (substrings of 1 to 64 bits), "
                         f"got {m}")
    return m


def _ball(width: int, t: int) -> int:
    """Number of keys within ``t`` bits of a ``width``-bit key."""
    return sum(math.comb(width, w) for w in range(min(t, width) + 1)) if t >= 0 else 0


def expected_work(n: int, n_bits: int, radius: int, m: int) -> tuple[float, float]:
    """Expected ``(probes, candidates)`` of one radius query, or per code of a self-join, on uniform random codes.

    ``probes`` counts the keys looked up, ``candidates`` the codes verified (a self-join verifies each pair from one
    side: half of that). Compare with ``n`` verifications for a linear scan; skewed real codes collide more often.
    """
    starts, widths = substring_bounds(n_bits, m)
    probes = cands = 0.0
    for width, t in zip(widths.tolist(), substring_radii(radius, m).tolist()):
        ball = _ball(width, t)
        probes += ball
        cands += ball * n / 2.0**width
    return probes, cands


def join_cost(n: int, n_bits: int, radius: int, m: int | None) -> float:
    """Modelled time of a self-join of ``n`` uniform random codes, in units of about 0.5 ns (one candidate verified
    inside a run of equal keys); ``m=None`` is the quadratic scan. Only the ranking of the choices is meant to hold."""
    n_words = bits.row_bytes(n_bits) // 8
    if m is None:
        return _COST_BRUTE * (1 + (n_words - 1) / 4) * n * (n - 1) / 2
    exact = 1.0 if n_words == 1 else 2.0          # more words: a scalar loop instead of the vectorised count
    starts, widths = substring_bounds(n_bits, m)
    cost = 0.0
    for width, t in zip(widths.tolist(), substring_radii(radius, m).tolist()):
        if t < 0:
            continue
        probes = (_ball(width, t) - 1) / 2          # larger keys of the ball, per code
        per_key = n / 2.0**width
        cost += n * (_COST_SORT + min(probes * _COST_PROBE, n / 2 * _COST_BRUTE) + per_key / 2 * exact
                     + probes * per_key * _COST_PROBED)
    return cost


def join_m(n: int, n_bits: int, radius: int) -> int | None:
    """The number of substrings that makes a self-join cheapest by :func:`join_cost`; None: the quadratic scan wins.

    Only ``m ≤ radius + 1`` is considered: with ``m > radius + 1`` only ``radius + 1`` substrings are probed, exactly,
    and they are shorter than with ``m = radius + 1``.
    """
    n_bits = bits.check_n_bits(n_bits)
    lo = -(-n_bits // 64)
    best, best_cost = None, join_cost(n, n_bits, radius, None)
    for m in range(lo, max(lo, min(radius + 1, n_bits)) + 1):
        cost = join_cost(n, n_bits, radius, m)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


# ----------------------------------------------------------------------------------------------------------------
# glue
# ----------------------------------------------------------------------------------------------------------------


def _read_only_words(codes: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """Codes as uint64 words in a read-only view: the kernels see one array type whether the codes come from memory
    or from a read-only memory map, so each is compiled once."""
    words = bits.as_words(codes).view()
    words.flags.writeable = False
    return words


def _id_dtype(n: int) -> type:
    return np.int32 if n < 2**31 - 1 else np.int64


def _dir_bits(n: int, width: int) -> int:
    """Directory bits of a table: about log2(n), so buckets hold one or two codes, and never more than the key."""
    return int(min(width, max(1, int(n).bit_length() - 1)))


def _threads(n_threads: int | None) -> int:
    if n_threads is None:
        return numba.get_num_threads()
    if int(n_threads) < 1:
        raise ValueError(f"n_threads must be ≥ 1, got {n_threads}")
    return int(n_threads)


def _ranges(total: int, pieces: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, total, max(1, min(pieces, total)) + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _map(fn: Callable, ranges: Sequence[tuple[int, int]], pool: ThreadPoolExecutor | None) -> list:
    """``fn(a, b)`` over ranges, on the pool's threads (the kernels release the GIL), results in order."""
    if pool is None or len(ranges) <= 1:
        return [fn(a, b) for a, b in ranges]
    return list(pool.map(lambda ab: fn(*ab), ranges))


def _pool(n_threads: int) -> ThreadPoolExecutor | contextlib.nullcontext:
    return ThreadPoolExecutor(n_threads) if n_threads > 1 else contextlib.nullcontext()


def _build_table(words: NDArray[np.uint64], start: int, width: int, dbits: int, perm: NDArray, offsets: NDArray,
                 pool: ThreadPoolExecutor | None, n_threads: int) -> None:
    """Fill ``perm`` (n,) and ``offsets`` (2**dbits + 1,) with the table of the substring ``start:start + width``.

    A counting sort on the top ``dbits`` key bits, split over threads by id range (stable, so ids ascend), then,
    when the key has more bits than the directory, a stable sort of each bucket by its full keys.
    """
    n = words.shape[0]
    parts = _ranges(n, n_threads)
    counts = np.zeros((len(parts), 1 << dbits), dtype=perm.dtype)
    each = [(t, t + 1) for t in range(len(parts))]
    _map(lambda t, _: _table_histogram(words, start, width, dbits, *parts[t], counts[t]), each, pool)
    offsets[0] = 0
    np.cumsum(counts.sum(axis=0, dtype=np.int64), out=offsets[1:])
    fill = np.cumsum(counts, axis=0, dtype=perm.dtype)
    fill -= counts
    fill += offsets[:-1]
    del counts
    _map(lambda t, _: _table_scatter(words, start, width, dbits, *parts[t], fill[t], perm), each, pool)
    del fill
    if width > dbits:
        edges = np.searchsorted(offsets, np.linspace(0, n, 4 * len(parts) + 1)[1:-1])
        edges = np.unique(np.concatenate(([0], edges, [1 << dbits])))
        _map(lambda a, b: _table_sort_buckets(words, start, width, offsets, perm, a, b),
             list(zip(edges[:-1].tolist(), edges[1:].tolist())), pool)


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


def _check_width(codes: NDArray[np.uint8], n_bits: int) -> None:
    if codes.shape[1] != bits.row_bytes(n_bits):
        raise ValueError(f"codes have {codes.shape[1]} bytes per row, {n_bits} bits need {bits.row_bytes(n_bits)}")


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be an integer ≥ 0, got {radius!r}")
    return int(radius)


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
        self._tables: tuple[NDArray, NDArray, NDArray, NDArray] | None = None

    def __len__(self) -> int:
        return self.codes.shape[0]

    @property
    def nbytes_(self) -> int:
        return 0 if self._tables is None else sum(a.nbytes for a in self._tables)

    def build(self) -> MultiIndex:
        """Build the ``m`` substring tables (idempotent); returns ``self``."""
        if self._tables is not None:
            return self
        n = len(self)
        dtype = _id_dtype(n)
        dbits = np.array([_dir_bits(n, w) for w in self.widths_.tolist()], dtype=np.int64)
        sizes = (1 << dbits) + 1
        off_base = np.zeros(self.m, dtype=np.int64)
        np.cumsum(sizes[:-1], out=off_base[1:])
        perms = np.empty((self.m, n), dtype=dtype)
        offs = np.empty(int(sizes.sum()), dtype=dtype)
        with _pool(self.n_threads) as pool:
            for k in range(self.m):
                _build_table(self.words_, int(self.starts_[k]), int(self.widths_[k]), int(dbits[k]), perms[k],
                             offs[off_base[k] : off_base[k] + sizes[k]], pool, self.n_threads)
        self._tables = (perms, offs, off_base, dbits)
        return self

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
            perms, offs, off_base, dbits = self.build()._tables
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
        perms, offs, off_base, dbits = self.build()._tables
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
