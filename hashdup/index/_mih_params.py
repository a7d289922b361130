"""Parameters of multi-index hashing (:mod:`hashdup.index.mih`): the substrings, their probing radii, and how many.

:func:`substring_bounds` cuts a code into ``m`` contiguous bit ranges; :func:`substring_radii` gives the radius each
substring is probed with for a search radius (Norouzi et al., Proposition 1, refined as the :mod:`hashdup.index.mih`
docstring explains); :func:`default_m` is the paper's ``m`` for queries; :func:`expected_work` models the work of a
query, and :func:`join_cost` and :func:`join_m` the cost of a self-join, on uniform random codes. Pure Python and
numpy; the public functions are re-exported by :mod:`hashdup.index.mih`, the place to import them from.

References
----------
M. Norouzi, A. Punjani and D. J. Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012; extended
as "Fast exact search in Hamming space with multi-index hashing", IEEE TPAMI 36(6), 2014 (arXiv:1307.2982).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from hashdup import bits

# The self-join cost model, in units of one candidate verified inside a run of equal keys by the vectorised loop
# (0.5 ns for one-word codes). Fitted to 16 timed joins of 1 M codes (32 to 128 bits, radius 2 to 13, several m each)
# on a 2-core Xeon: sorting the codes by one substring and gathering them, 37 ns per code; probing one key of a ball
# (a directory lookup: cache misses), 31 ns; a candidate from a probed run, 1.5 ns; a pair of the quadratic scan, 1 ns.
_COST_SORT = 75.0
_COST_PROBE = 60.0
_COST_PROBED = 3.0
_COST_BRUTE = 2.0


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


def _check_width(codes: NDArray[np.uint8], n_bits: int) -> None:
    if codes.shape[1] != bits.row_bytes(n_bits):
        raise ValueError(f"codes have {codes.shape[1]} bytes per row, {n_bits} bits need {bits.row_bytes(n_bits)}")


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be an integer ≥ 0, got {radius!r}")
    return int(radius)


def _ball(width: int, t: int) -> int:
    """Number of keys within ``t`` bits of a ``width``-bit key."""
    return sum(math.comb(width, w) for w in range(min(t, width) + 1)) if t >= 0 else 0


def expected_work(n: int, n_bits: int, radius: int, m: int) -> tuple[float, float]:
    """Expected ``(probes, candidates)`` of one radius query, or per code of a self-join, on uniform random codes.

    ``probes`` counts the keys looked up, ``candidates`` the codes verified (a self-join verifies each pair from one
    side: half of that). Compare with ``n`` verifications for a linear scan; skewed real codes collide more often.
    """
    _, widths = substring_bounds(n_bits, m)
    probes = cands = 0.0
    for width, t in zip(widths.tolist(), substring_radii(radius, m).tolist(), strict=True):
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
    _, widths = substring_bounds(n_bits, m)
    cost = 0.0
    for width, t in zip(widths.tolist(), substring_radii(radius, m).tolist(), strict=True):
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
