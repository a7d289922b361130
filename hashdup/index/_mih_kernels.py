"""Compiled loops of :mod:`hashdup.index.mih` (numba, compiled once and cached on disk).
One module that must stay whole: numba caches compiled functions per source file, and kernels calling each other are
compiled together.

Kept apart from the search logic so that each module stays readable; see :mod:`hashdup.index.mih` for what they
compute and why.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_ID_BITS = 40                      # packed result keys: distance << 40 | id
_ID_MASK = (1 << _ID_BITS) - 1


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
            if (cT >= kk and m * r1 + k >= T) or found == n:
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
