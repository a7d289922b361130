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

# Relative costs (one full-distance verification of a one-word code = 1) of the self-join cost model, measured on a
# 2-core Xeon with bench/search_join.py: building a table (two passes over the codes and a scatter), probing one
# key of a ball (a directory lookup, mostly a cache miss), and the all-pairs scan (sequential, no lookups).
_COST_BUILD = 6.0
_COST_PROBE = 12.0
_COST_BRUTE = 0.25
# A kNN query that has probed this many keys per code without finishing is answered by a scan instead: a probe
# costs several verifications, so the incremental search is then already slower than a scan.
_KNN_BUDGET = 0.5

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


@njit(inline="always")
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


@njit(inline="always")
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


@njit(inline="always")
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


@njit(inline="always")
def _first_mask(weight):
    """The smallest integer with ``weight`` set bits."""
    if weight >= 64:
        return ~_U0
    return (_U1 << np.uint64(weight)) - _U1


@njit(inline="always")
def _last_mask(weight, width):
    """The largest ``width``-bit integer with ``weight`` set bits."""
    if weight == 0:
        return _U0
    return _first_mask(weight) << np.uint64(width - weight)


@njit(inline="always")
def _next_mask(x):
    """The next larger integer with as many set bits as ``x`` (Gosper's hack); ``x`` must not be the last one."""
    c = x & (~x + _U1)
    r = x + c
    return (((r ^ x) >> np.uint64(2)) // c) | r


@njit(cache=True, nogil=True)
def _build_table(words, start, width, dbits, perm, offsets):
    """Fill ``perm`` (n,) and ``offsets`` (2**dbits + 1,) for the substring ``start:start + width``.

    A counting sort on the top ``dbits`` key bits (stable, so ids ascend), then, when the key has more bits than the
    directory, a stable sort of each bucket by its full keys.
    """
    n = words.shape[0]
    ush = np.uint64(width - dbits)
    offsets[:] = 0
    for i in range(n):
        offsets[np.int64(_extract(words, i, start, width) >> ush) + 1] += 1
    largest = 0
    for b in range(1, offsets.shape[0]):
        largest = max(largest, np.int64(offsets[b]))
        offsets[b] += offsets[b - 1]
    fill = offsets[:-1].copy()
    for i in range(n):
        b = np.int64(_extract(words, i, start, width) >> ush)
        perm[fill[b]] = i
        fill[b] += 1
    if width == dbits or largest < 2:
        return
    keys = np.empty(largest, np.uint64)
    ids = np.empty(largest, perm.dtype)
    for b in range(offsets.shape[0] - 1):
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


@njit(inline="always")
def _pair_seen(words, i, j, starts, widths, tks, k):
    """Whether the pair (i, j) lies in the probing ball of a substring before ``k`` (so it was reported there)."""
    for kp in range(k):
        if tks[kp] >= 0 and _popcount(_extract_xor(words, i, words, j, starts[kp], widths[kp])) <= tks[kp]:
            return True
    return False


@njit(cache=True, nogil=True)
def _join_chunk(words, perm, offsets, dbits, starts, widths, tks, k, radius, scan_keys, p0, p1):
    """Pairs within ``radius`` found through substring ``k`` from the sorted positions ``p0 .. p1 - 1``.

    Position ``p`` is paired with the later positions of its run of equal keys, and with every run whose key is
    larger than its own and within ``tks[k]`` bits of it (found by probing the ball around its key, or when
    ``scan_keys`` by comparing the keys of all later positions); each unordered pair of runs is visited once.
    """
    n = words.shape[0]
    start = starts[k]
    width = widths[k]
    ush = np.uint64(width - dbits)
    direct = width == dbits
    t = min(tks[k], width)
    cap = 256
    I = np.empty(cap, np.int64)
    J = np.empty(cap, np.int64)
    Dd = np.empty(cap, np.int32)
    cnt = 0
    for p in range(p0, p1):
        i = np.int64(perm[p])
        key = _extract(words, i, start, width)
        run_end = np.int64(offsets[np.int64(key >> ush) + 1])
        for q in range(p + 1, run_end):
            j = np.int64(perm[q])
            if not direct and _extract(words, j, start, width) != key:
                run_end = q
                break
            d = _distance(words, i, words, j, radius)
            if d <= radius and not _pair_seen(words, i, j, starts, widths, tks, k):
                if cnt == I.shape[0]:
                    I = np.concatenate((I, np.empty(cnt, np.int64)))
                    J = np.concatenate((J, np.empty(cnt, np.int64)))
                    Dd = np.concatenate((Dd, np.empty(cnt, np.int32)))
                I[cnt] = i
                J[cnt] = j
                Dd[cnt] = d
                cnt += 1
        if scan_keys:
            # the ball holds more keys than there are codes: compare the keys of all later runs instead
            for q in range(run_end, n):
                j = np.int64(perm[q])
                if _popcount(_extract(words, j, start, width) ^ key) > t:
                    continue
                d = _distance(words, i, words, j, radius)
                if d <= radius and not _pair_seen(words, i, j, starts, widths, tks, k):
                    if cnt == I.shape[0]:
                        I = np.concatenate((I, np.empty(cnt, np.int64)))
                        J = np.concatenate((J, np.empty(cnt, np.int64)))
                        Dd = np.concatenate((Dd, np.empty(cnt, np.int32)))
                    I[cnt] = min(i, j)
                    J[cnt] = max(i, j)
                    Dd[cnt] = d
                    cnt += 1
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
                        d = _distance(words, i, words, j, radius)
                        if d <= radius and not _pair_seen(words, i, j, starts, widths, tks, k):
                            if cnt == I.shape[0]:
                                I = np.concatenate((I, np.empty(cnt, np.int64)))
                                J = np.concatenate((J, np.empty(cnt, np.int64)))
                                Dd = np.concatenate((Dd, np.empty(cnt, np.int32)))
                            I[cnt] = min(i, j)
                            J[cnt] = max(i, j)
                            Dd[cnt] = d
                            cnt += 1
                if x == last:
                    break
                x = _next_mask(x)
    return I[:cnt], J[:cnt], Dd[:cnt]


@njit(cache=True, nogil=True)
def _join_brute_chunk(words, radius, i0, i1):
    """Pairs (i, j), ``i0 ≤ i < i1``, ``i < j``, within ``radius``: the quadratic scan, for when no probing pays."""
    n = words.shape[0]
    cap = 256
    I = np.empty(cap, np.int64)
    J = np.empty(cap, np.int64)
    Dd = np.empty(cap, np.int32)
    cnt = 0
    for i in range(i0, i1):
        for j in range(i + 1, n):
            d = _distance(words, i, words, j, radius)
            if d <= radius:
                if cnt == I.shape[0]:
                    I = np.concatenate((I, np.empty(cnt, np.int64)))
                    J = np.concatenate((J, np.empty(cnt, np.int64)))
                    Dd = np.concatenate((Dd, np.empty(cnt, np.int32)))
                I[cnt] = i
                J[cnt] = j
                Dd[cnt] = d
                cnt += 1
    return I[:cnt], J[:cnt], Dd[:cnt]


@njit(inline="always")
def _query_seen(words, j, qwords, q, starts, widths, tks, k):
    """Whether code ``j`` lies in query ``q``'s probing ball of a substring before ``k``."""
    for kp in range(k):
        if tks[kp] >= 0 and _popcount(_extract_xor(words, j, qwords, q, starts[kp], widths[kp])) <= tks[kp]:
            return True
    return False


@njit(cache=True, nogil=True)
def _radius_chunk(words, qwords, q0, q1, perms, offs, off_base, dbits, starts, widths, tks, radius):
    """Matches within ``radius`` of queries ``q0 .. q1 - 1``: per-query counts and packed keys ``d << 40 | id``."""
    m = starts.shape[0]
    counts = np.zeros(q1 - q0, np.int64)
    keys = np.empty(256, np.int64)
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
                            if cnt == keys.shape[0]:
                                keys = np.concatenate((keys, np.empty(cnt, np.int64)))
                            keys[cnt] = (np.int64(d) << _ID_BITS) | j
                            cnt += 1
                    if x == last:
                        break
                    x = _next_mask(x)
        keys[c0:cnt].sort()
        counts[q - q0] = cnt - c0
    return counts, keys[:cnt]


@njit(cache=True, nogil=True)
def _radius_scan_chunk(words, qwords, q0, q1, radius):
    """:func:`_radius_chunk` by comparing every code, for radii whose balls outnumber the codes."""
    n = words.shape[0]
    counts = np.zeros(q1 - q0, np.int64)
    keys = np.empty(256, np.int64)
    cnt = 0
    for q in range(q0, q1):
        c0 = cnt
        for j in range(n):
            d = _distance(words, j, qwords, q, radius)
            if d <= radius:
                if cnt == keys.shape[0]:
                    keys = np.concatenate((keys, np.empty(cnt, np.int64)))
                keys[cnt] = (np.int64(d) << _ID_BITS) | j
                cnt += 1
        keys[c0:cnt].sort()
        counts[q - q0] = cnt - c0
    return counts, keys[:cnt]


@njit(cache=True, nogil=True)
def _knn_mih_one(words, qwords, q, kk, perms, offs, off_base, dbits, starts, widths, n_bits, budget, hist, buf, qkeys,
                 D, I):
    """The ``kk`` nearest codes of query ``q`` into ``D[q]``, ``I[q]`` by incremental search; False (nothing written)
    when more than ``budget`` keys would have to be probed.

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
                        return False, buf
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
                                if 2 * cnt >= buf.shape[0]:
                                    buf = np.concatenate((buf, np.empty(buf.shape[0], np.int64)))
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
                return True, buf
    return False, buf                   # not reached: the last step has seen every code


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
        ok, buf = _knn_mih_one(words, qwords, q, kk, perms, offs, off_base, dbits, starts, widths, n_bits, budget,
                               hist, buf, qkeys, D, I)
        if not ok:
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
    """Modelled time of a self-join (in units of one one-word verification); ``m=None`` is the quadratic scan."""
    words = bits.row_bytes(n_bits) // 8
    if m is None:
        return _COST_BRUTE * words * n * (n - 1) / 2
    starts, widths = substring_bounds(n_bits, m)
    cost = 0.0
    for width, t in zip(widths.tolist(), substring_radii(radius, m).tolist()):
        if t < 0:
            continue
        ball = _ball(width, t)
        cost += _COST_BUILD * n + n * (ball - 1) / 2 * _COST_PROBE + words * n * n * ball / 2.0**width / 2
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


def _map(fn: Callable, ranges: Sequence[tuple[int, int]], n_threads: int) -> list:
    """``fn(a, b)`` over ranges, on ``n_threads`` threads (the kernels release the GIL), results in order."""
    if n_threads <= 1 or len(ranges) <= 1:
        return [fn(a, b) for a, b in ranges]
    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(lambda ab: fn(*ab), ranges))


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
        Threads; numba's thread count by default.

    Returns
    -------
    i, j : ndarray of int64, shape (n_pairs,)
        Row ids with ``i < j``, sorted by (i, j).
    d : ndarray of int32, shape (n_pairs,)
        Hamming distances, ``≤ radius``.

    Notes
    -----
    Memory: the codes, one sort permutation (``n`` int32), a directory of about ``n`` int32, and the pairs.
    """
    codes = bits.as_codes(codes)
    n_bits = bits.check_n_bits(n_bits)
    _check_width(codes, n_bits)
    radius = _check_radius(radius)
    n_threads = _threads(n_threads)
    words = bits.as_words(codes)
    n = words.shape[0]
    if n < 2:
        return _pairs([])
    if m is None:
        m = join_m(n, n_bits, radius)
    if m is None:
        # rows near the top pair with more rows: many small ranges keep the threads evenly loaded
        ranges = _ranges(n, 16 * n_threads)
        return _pairs(_map(lambda a, b: _join_brute_chunk(words, radius, a, b), ranges, n_threads))
    starts, widths = substring_bounds(n_bits, m)
    tks = substring_radii(radius, m)
    perm = np.empty(n, dtype=_id_dtype(n))
    parts = []
    for k in range(m):
        if tks[k] < 0:
            continue
        dbits = _dir_bits(n, int(widths[k]))
        offsets = np.empty((1 << dbits) + 1, dtype=perm.dtype)
        _build_table(words, starts[k], widths[k], dbits, perm, offsets)
        ranges = _ranges(n, 16 * n_threads)
        scan_keys = _ball(int(widths[k]), int(tks[k])) - 1 > n
        parts += _map(lambda a, b, k=k, dbits=dbits, offsets=offsets, scan_keys=scan_keys: _join_chunk(
            words, perm, offsets, dbits, starts, widths, tks, k, radius, scan_keys, a, b), ranges, n_threads)
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
    ``m·(n + 2**⌊log2 n⌋)`` ids of 4 bytes. :meth:`self_join` does not need them and never builds them: it sorts by
    one substring at a time, with its own choice of ``m`` for the radius asked.

    References
    ----------
    M. Norouzi, A. Punjani and D. J. Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012.
    """

    def __init__(self, codes: ArrayLike, n_bits: int, m: int | None = None, *, n_threads: int | None = None) -> None:
        self.codes = bits.as_codes(codes)
        self.n_bits = bits.check_n_bits(n_bits)
        _check_width(self.codes, self.n_bits)
        self.words_ = bits.as_words(self.codes)
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

        def one(k: int, _: int) -> None:
            _build_table(self.words_, self.starts_[k], self.widths_[k], dbits[k], perms[k],
                         offs[off_base[k] : off_base[k] + sizes[k]])

        _map(one, [(k, k + 1) for k in range(self.m)], self.n_threads)
        self._tables = (perms, offs, off_base, dbits)
        return self

    def _queries(self, Q: ArrayLike) -> NDArray[np.uint64]:
        Q = bits.as_codes(Q)
        if Q.shape[1] != self.codes.shape[1]:
            raise ValueError(f"queries have {Q.shape[1]} bytes per row, the index holds {self.codes.shape[1]}")
        return bits.as_words(Q)

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
            fn = lambda a, b: _radius_scan_chunk(self.words_, qwords, a, b, radius)  # noqa: E731
        else:
            perms, offs, off_base, dbits = self.build()._tables
            tks = substring_radii(radius, self.m)
            fn = lambda a, b: _radius_chunk(self.words_, qwords, a, b, perms, offs, off_base, dbits,  # noqa: E731
                                            self.starts_, self.widths_, tks, radius)
        return _csr(nq, _map(fn, self._query_ranges(nq), self.n_threads))

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
        _map(lambda a, b: _knn_chunk(self.words_, qwords, a, b, kk, perms, offs, off_base, dbits, self.starts_,
                                     self.widths_, self.n_bits, budget, D, I), self._query_ranges(nq), self.n_threads)
        return D, I

    def self_join(self, radius: int, m: int | None = None
                  ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int32]]:
        """All pairs of indexed codes within ``radius`` bits: :func:`self_join` (its own ``m``, by default
        :func:`join_m`; the query tables are not used)."""
        return self_join(self.codes, self.n_bits, radius, m, n_threads=self.n_threads)
