"""Compiled loops of local-feature verification: :func:`hashdup.index.matching.match_binary` (nearest neighbours
between two small sets of packed binary descriptors, with the cross check and the ratio test), the pixel comparison
of :class:`hashdup.dedup.verify.Verifier`, and the screen that runs both over many candidate pairs in one call.

They live in one module, with its own population count, because numba's on-disk cache is keyed by the source file
of each cached function only (a compiled helper imported from another file could run stale).
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


@njit(cache=True, nogil=True, inline="always")
def _distance(a, i, b, j, w):  # pragma: no cover - compiled
    """Hamming distance of row ``i`` of ``a`` and row ``j`` of ``b``, ``w`` uint64 words each (unrolled for 4)."""
    if w == 4:
        return (_popcount(a[i, 0] ^ b[j, 0]) + _popcount(a[i, 1] ^ b[j, 1])
                + _popcount(a[i, 2] ^ b[j, 2]) + _popcount(a[i, 3] ^ b[j, 3]))
    d = 0
    for k in range(w):
        d += _popcount(a[i, k] ^ b[j, k])
    return d


@njit(cache=True, nogil=True)
def _nearest(a, b):  # pragma: no cover - compiled
    """For rows of ``a`` (na, w) and ``b`` (nb, w) uint64 words, both non-empty: each row of ``a``'s nearest row of
    ``b`` (first index on ties), its distance and its second smallest distance (ties included; ``1 << 30`` with a
    single row), and each row of ``b``'s nearest row of ``a`` (first on ties), in one pass over the distances."""
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
            d = _distance(a, i, b, j, w)
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
    return best_j, first, second, best_i


@njit(cache=True, nogil=True)
def _kept(i, best_j, first, second, best_i, cross_check, max_ratio):  # pragma: no cover - compiled
    """Whether row ``i``'s nearest neighbour is a match: the cross check, then Lowe's ratio test (a row with a
    single candidate has no second best and passes)."""
    if cross_check and best_i[best_j[i]] != i:
        return False
    if max_ratio < 1.0 and second[i] < (1 << 30):
        s = second[i]
        return first[i] / (s if s > 0 else np.finfo(np.float64).eps) < max_ratio
    return True


@njit(cache=True, nogil=True)
def _match(a, b, cross_check, max_ratio):  # pragma: no cover - compiled
    """Matches ``(i, j)`` of rows of ``a`` (na, w) and ``b`` (nb, w) uint64 words and their distances; see
    ``match_binary``."""
    na = a.shape[0]
    best_j, first, second, best_i = _nearest(a, b)
    out_i = np.empty(na, dtype=np.int64)
    out_j = np.empty(na, dtype=np.int64)
    out_d = np.empty(na, dtype=np.int64)
    n = 0
    for i in range(na):
        if _kept(i, best_j, first, second, best_i, cross_check, max_ratio):
            out_i[n] = i
            out_j[n] = best_j[i]
            out_d[n] = first[i]
            n += 1
    return out_i[:n], out_j[:n], out_d[:n]


@njit(cache=True, nogil=True)
def _pair_distances(A, B, i, j):  # pragma: no cover - compiled
    """``||A[i[p]] - B[j[p]]||`` for every pair ``p`` (float32 rows, float64 sums).

    Each row is summed in 8 interleaved partial sums (feature ``f`` into sum ``f % 8``), added in a fixed order at
    the end: the compiler may put the 8 sums in vector registers without reordering any addition, so the result
    does not depend on the CPU, and the loop runs about twice as fast as one running sum on 640 features."""
    n, d = i.shape[0], A.shape[1]
    d8 = d - d % 8
    out = np.empty(n, dtype=np.float64)
    acc = np.zeros(8, dtype=np.float64)
    for p in range(n):
        a, b = A[i[p]], B[j[p]]
        for lane in range(8):
            acc[lane] = 0.0
        for f in range(0, d8, 8):
            for lane in range(8):
                x = np.float64(a[f + lane]) - np.float64(b[f + lane])
                acc[lane] += x * x
        t = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
        for f in range(d8, d):
            x = np.float64(a[f]) - np.float64(b[f])
            t += x * x
        out[p] = np.sqrt(t)
    return out


@njit(cache=True, nogil=True, inline="always")
def _correlation(n, sa, sb, saa, sbb, sab):  # pragma: no cover - compiled
    """The correlation of ``n`` pixel pairs from their sums (0 when either side is constant)."""
    r = 0.0
    if n > 0:
        da, db = saa - sa * sa / n, sbb - sb * sb / n
        if da > 0 and db > 0:
            den = np.sqrt(da * db)
            if den > 1e-9:
                r = (sab - sa * sb / n) / den
    return r


@njit(cache=True, nogil=True, inline="always")
def _block_agrees(ba, bb, baa, bbb, bab, m, block, agree):  # pragma: no cover - compiled
    """(textured, agreeing) of one block of ``m`` pixels from its sums: whether both sides are textured (flat
    blocks say nothing), and then whether they correlate at ``agree`` or more."""
    va_ = max(baa - ba * ba / m, 0.0)
    vb_ = max(bbb - bb * bb / m, 0.0)
    if np.sqrt(va_) > 0.1 * block and np.sqrt(vb_) > 0.1 * block:
        return 1, int((bab - ba * bb / m) / np.sqrt(va_ * vb_) >= agree)
    return 0, 0


@njit(cache=True, nogil=True)
def _photometric_scores(a, b, block, agree):  # pragma: no cover - compiled
    """One pass over two float32 images, ``b`` NaN outside the overlap: the number of valid pixels, their
    correlation (as :func:`ncc` on ``a[valid]``, ``b[valid]``) and the fraction of agreeing textured blocks (as
    :func:`block_agreement`), in float64 sums.

    The image is read in bands of ``block`` rows. Each band's sums are taken per column first (element-wise over
    the columns, so that the compiler may vectorise them without reordering any sum), then per block and for the
    whole image from those columns, in order: the result does not depend on the CPU's vector width."""
    h, w = a.shape
    m = block * block
    ca = np.zeros(w)
    cb = np.zeros(w)
    caa = np.zeros(w)
    cbb = np.zeros(w)
    cab = np.zeros(w)
    cn = np.zeros(w)
    n = 0.0
    sa = sb = saa = sbb = sab = 0.0
    textured = 0
    agreeing = 0
    for y0 in range(0, h, block):
        y1 = min(h, y0 + block)
        ca[:] = 0.0
        cb[:] = 0.0
        caa[:] = 0.0
        cbb[:] = 0.0
        cab[:] = 0.0
        cn[:] = 0.0
        for y in range(y0, y1):
            ra, rb = a[y], b[y]
            for x in range(w):
                vb = np.float64(rb[x])
                ok = not np.isnan(vb)
                va = np.float64(ra[x])
                va = va if ok else 0.0
                vb = vb if ok else 0.0
                ca[x] += va
                cb[x] += vb
                caa[x] += va * va
                cbb[x] += vb * vb
                cab[x] += va * vb
                cn[x] += ok
        for x in range(w):
            n += cn[x]
            sa += ca[x]
            sb += cb[x]
            saa += caa[x]
            sbb += cbb[x]
            sab += cab[x]
        if y1 - y0 < block:
            continue
        for bx in range(w // block):
            full = True
            ba = bb = baa = bbb = bab = 0.0
            for x in range(bx * block, (bx + 1) * block):
                if cn[x] != block:
                    full = False
                    break
                ba += ca[x]
                bb += cb[x]
                baa += caa[x]
                bbb += cbb[x]
                bab += cab[x]
            if not full:
                continue
            t, g = _block_agrees(ba, bb, baa, bbb, bab, m, block, agree)
            textured += t
            agreeing += g
    return int(n), _correlation(n, sa, sb, saa, sbb, sab), (agreeing / textured if textured >= 8 else 0.0)


@njit(cache=True, nogil=True)
def _photometric_scores_i8(thumbs, oa, ob, h, w, mirrored, block, agree, step):  # pragma: no cover - compiled
    """:func:`_photometric_scores` of two stored thumbnails of one shape compared whole, without a warp: ``h`` × ``w``
    int8 pixels, row-major, at offsets ``oa`` and ``ob`` of ``thumbs``, in units of ``step``, the second one read
    mirrored left-right when ``mirrored``.

    The sums are taken in integers (exact), block by block, and scaled by ``step`` and its square. The float
    kernel's sums of the same pixels are exact too (every term is a multiple of ``step``² far below 2**53 of them),
    so both give the same numbers, bit for bit (``tests/test_verify_reference.py``), while this one reads the bytes
    in place, with no conversion, copy or NaN test, and its integer sums may be vectorised in any order."""
    m = block * block
    s1 = np.float64(step)
    s2 = s1 * s1
    ta = tb = taa = tbb = tab = 0  # whole-image sums (int64)
    textured = 0
    agreeing = 0
    for y0 in range(0, h, block):
        y1 = min(h, y0 + block)
        for x0 in range(0, w, block):  # one block (or the part of one at the right and bottom edges) at a time
            x1 = min(w, x0 + block)
            ia = ib = iaa = ibb = iab = np.int32(0)  # integer sums: the compiler may vectorise them in any order
            for y in range(y0, y1):
                ra = oa + y * w
                if mirrored:
                    rb = ob + y * w + w - 1
                    for x in range(x0, x1):
                        va = np.int32(thumbs[ra + x])
                        vb = np.int32(thumbs[rb - x])
                        ia += va
                        ib += vb
                        iaa += va * va
                        ibb += vb * vb
                        iab += va * vb
                else:
                    rb = ob + y * w
                    for x in range(x0, x1):
                        va = np.int32(thumbs[ra + x])
                        vb = np.int32(thumbs[rb + x])
                        ia += va
                        ib += vb
                        iaa += va * va
                        ibb += vb * vb
                        iab += va * vb
            ta += ia
            tb += ib
            taa += iaa
            tbb += ibb
            tab += iab
            if y1 - y0 < block or x1 - x0 < block:
                continue
            ba, bb, baa, bbb, bab = ia * s1, ib * s1, iaa * s2, ibb * s2, iab * s2
            t, g = _block_agrees(ba, bb, baa, bbb, bab, m, block, agree)
            textured += t
            agreeing += g
    n = np.float64(h * w)
    sa, sb, saa, sbb, sab = ta * s1, tb * s1, taa * s2, tbb * s2, tab * s2
    return int(n), _correlation(n, sa, sb, saa, sbb, sab), (agreeing / textured if textured >= 8 else 0.0)


@njit(cache=True, nogil=True)
def _close_rows(a, b, within, enough):  # pragma: no cover - compiled
    """How many rows of ``a`` have a row of ``b`` within ``within`` bits, counting up to ``enough``: a bound on the
    matches within ``within`` bits (a match is a row's nearest neighbour), found without tracking any minimum."""
    na, nb, w = a.shape[0], b.shape[0], a.shape[1]
    c = 0
    for i in range(na):
        for j in range(nb):
            if w == 4:  # two words first: for unrelated descriptors they alone exceed ``within`` (25 % faster)
                d = _popcount(a[i, 0] ^ b[j, 0]) + _popcount(a[i, 1] ^ b[j, 1])
                if d > within:
                    continue
                d += _popcount(a[i, 2] ^ b[j, 2]) + _popcount(a[i, 3] ^ b[j, 3])
            else:
                d = _distance(a, i, b, j, w)
            if d <= within:
                c += 1
                break
        if c >= enough:
            break
    return c


#: Outcomes of :func:`_screen`, per pair: decided there (accepted one way, or rejected, with the reason), or left to
#: the full verification (RANSAC, or a warp that is not the identity).
UNDECIDED, SAME_PLAIN, SAME_MIRRORED = 0, 1, 2
FEW_KEYPOINTS, FEW_MATCHES, FEW_CLOSE, MIRRORED_NOT_WHOLE, PIXELS_DIFFER = -1, -2, -3, -4, -5


@njit(cache=True, nogil=True)
def _screen(words, kp_off, thumbs, thumb_off, shapes, blocks, step, pi, pj, ways, min_inliers, max_ratio,
            gate_bits, gate_matches, min_ncc, min_blocks, agree):  # pragma: no cover - compiled
    """The steps of ``Verifier.compare`` that need neither RANSAC nor a warp, for many pairs in one call.

    Images are rows of the arguments: ``words`` (K, 4) uint64 the packed descriptors of all of them, image ``r``'s
    in rows ``kp_off[r]:kp_off[r + 1]``; ``thumbs`` int8 their band-passed thumbnails, flat, image ``r``'s from
    ``thumb_off[r]``, in units of ``step`` (float32); ``shapes`` (n, 4) int64 frame height and width, thumbnail
    height and width (the arrays of a ``FeatureTable``, read in place from the memory map); ``blocks`` the
    block size of the pixel comparison when ``r`` is the first image of a pair. Pair ``p`` is ``(pi[p], pj[p])``;
    ``ways[p]`` 0 compares the second image plain, 1 mirrored, 2 both (plain first).

    Per pair, in the order of ``compare``: the whole-frame pixel comparison when the frames have the same aspect
    (here only when both frames and both thumbnails have the same shape: the warp is then the identity, which
    ``warpAffine`` reproduces exactly), then the feature matches and the gate (plain only). Returns the outcome
    (:data:`UNDECIDED`, :data:`SAME_PLAIN`, :data:`SAME_MIRRORED` or a negative reason) and the correlation of the
    accepting comparison. A pair whose matches pass the gate, or whose frames have the same aspect but not the same
    shape, is left :data:`UNDECIDED`.
    """
    n = pi.shape[0]
    out = np.zeros(n, dtype=np.int64)
    corr = np.zeros(n, dtype=np.float64)
    for p in range(n):
        a, b = pi[p], pj[p]
        fha, fwa, tha, twa = shapes[a, 0], shapes[a, 1], shapes[a, 2], shapes[a, 3]
        fhb, fwb, thb, twb = shapes[b, 0], shapes[b, 1], shapes[b, 2], shapes[b, 3]
        whole = abs(np.log((fwa / fha) / (fwb / fhb))) < 0.03
        identity = fha == fhb and fwa == fwb and tha == thb and twa == twb
        if whole and not identity:
            continue  # the pixels need a warp: UNDECIDED
        outcome = 0
        for way in range(2):
            if (way == 0 and ways[p] == 1) or (way == 1 and ways[p] == 0):
                continue
            if whole:  # the same shape: the pixels are compared in place, without a warp
                _, r, frac = _photometric_scores_i8(thumbs, thumb_off[a], thumb_off[b], tha, twa, way == 1, blocks[a],
                                                    agree, step)
                if r >= min_ncc or frac >= min_blocks:  # the overlap of an identity warp is the whole image
                    outcome = SAME_PLAIN if way == 0 else SAME_MIRRORED
                    corr[p] = r
                    break
            if way == 1:
                if outcome == 0:
                    outcome = PIXELS_DIFFER if whole else MIRRORED_NOT_WHOLE
                continue
            ka0, ka1, kb0, kb1 = kp_off[a], kp_off[a + 1], kp_off[b], kp_off[b + 1]
            if ka1 - ka0 < min_inliers or kb1 - kb0 < min_inliers:
                outcome = FEW_KEYPOINTS
                continue
            if _close_rows(words[ka0:ka1], words[kb0:kb1], gate_bits, gate_matches) < gate_matches:
                outcome = FEW_CLOSE  # a necessary condition, about twice as fast as the matching itself
                continue
            best_j, first, second, best_i = _nearest(words[ka0:ka1], words[kb0:kb1])
            matches = close = 0
            for i in range(ka1 - ka0):
                if _kept(i, best_j, first, second, best_i, True, max_ratio):
                    matches += 1
                    if first[i] <= gate_bits:
                        close += 1
            if matches < min_inliers:
                outcome = FEW_MATCHES
            elif close < gate_matches:
                outcome = FEW_CLOSE
            else:
                outcome = 0  # RANSAC decides
                break
        out[p] = outcome
    return out, corr
