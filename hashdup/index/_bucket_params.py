"""The parameters of LSH bucket tables (:mod:`hashdup.index.buckets`): key length, number of tables and the recall
they promise, the key positions drawn, the probe masks. Pure arithmetic, no compiled code."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

#: Largest key: a table's offsets array has ``2^key_bits + 1`` uint32 entries (256 MiB per table at 26 bits).
MAX_KEY_BITS = 26
#: Row ids are stored as uint32.
MAX_ROWS = 2**32 - 1
#: Most probes per table a query may ask for (``Σ_{i≤p} C(m, i)``); p = 2 at m = 26 is 352.
MAX_PROBES_PER_TABLE = 1 << 16
#: Defaults: tables are added until a code this far (as a fraction of n_bits) from the query is found with this
#: probability at ``probes=1``; see :func:`default_n_tables`.
DEFAULT_RECALL_DISTANCE = 6 / 64
DEFAULT_RECALL = 0.99
MAX_DEFAULT_TABLES = 32


def default_key_bits(n: int, n_bits: int) -> int:
    """Default key length: ``round(log2 n)``, so that uniform codes average about one per bucket.

    Clipped to ``1 .. min(n_bits, MAX_KEY_BITS)``.
    """
    m = round(math.log2(n)) if n > 1 else 1
    return int(min(max(m, 1), n_bits, MAX_KEY_BITS))


def _miss_disjoint(n_bits: int, key_bits: int, n_keys: int, distance: int, probes: int) -> float:
    """Probability that none of ``n_keys`` disjoint random ``key_bits``-bit keys holds at most ``probes`` of
    ``distance`` random differing bits (multivariate hypergeometric, exact in integers)."""
    rest = n_bits - n_keys * key_bits
    # coefficient c of ``ways``: ways to place c differing bits so that every key so far holds more than ``probes``
    ways = [math.comb(rest, c) for c in range(distance + 1)]
    one_key = [math.comb(key_bits, c) if c > probes else 0 for c in range(distance + 1)]
    for _ in range(n_keys):
        ways = [sum(ways[a] * one_key[c - a] for a in range(c + 1)) for c in range(distance + 1)]
    return ways[distance] / math.comb(n_bits, distance)


def recall_estimate(distance: int, n_bits: int, key_bits: int, n_tables: int, probes: int) -> float:
    """Probability that ``n_tables`` tables keyed as by :func:`draw_positions` find a code ``distance`` bits away.

    The ``g = n_bits // key_bits`` tables cut from one permutation are disjoint (their misses computed exactly by
    :func:`_miss_disjoint`); permutations are independent. Tables that straddle two permutations are treated as if
    they did not, which the measurements in bench/buckets.py show to be accurate to about ±0.01.
    """
    g = max(n_bits // key_bits, 1)
    miss = _miss_disjoint(n_bits, key_bits, g, distance, probes) ** (n_tables // g)
    miss *= _miss_disjoint(n_bits, key_bits, n_tables % g, distance, probes)
    return 1.0 - miss


def default_n_tables(n_bits: int, key_bits: int) -> int:
    """Default number of tables: the fewest for which :func:`recall_estimate` of a code
    ``round(DEFAULT_RECALL_DISTANCE · n_bits)`` bits away (6 at 64 bits) at ``probes=1`` is at least
    ``DEFAULT_RECALL``; at most ``MAX_DEFAULT_TABLES``, and 1 when the key is the whole code (every table would be
    the same).

    At 64 bits: 5 tables for 100 000 codes (m = 17), 6 for 1 M (m = 20), 12 for 10 M (m = 23).
    """
    if key_bits >= n_bits:
        return 1
    d = round(DEFAULT_RECALL_DISTANCE * n_bits)
    for L in range(1, MAX_DEFAULT_TABLES + 1):
        if recall_estimate(d, n_bits, key_bits, L, 1) >= DEFAULT_RECALL:
            return L
    return MAX_DEFAULT_TABLES


def draw_positions(n_bits: int, n_tables: int, key_bits: int, rng: np.random.Generator) -> NDArray[np.uint16]:
    """Key bit positions, shape (n_tables, key_bits), each row ascending and without repeats.

    Bits are taken in turn from a random permutation of ``0 .. n_bits-1``, a fresh permutation being drawn when one
    runs out; a bit that is already in the key being filled is skipped. So every bit is used about equally often and
    the ``n_bits // key_bits`` tables cut from one permutation are disjoint.
    """
    out = np.zeros((n_tables, key_bits), dtype=np.uint16)
    perm, at = rng.permutation(n_bits), 0
    for t in range(n_tables):
        key: list[int] = []
        while len(key) < key_bits:
            if at == n_bits:
                perm, at = rng.permutation(n_bits), 0
            b = int(perm[at])
            at += 1
            if b not in key:
                key.append(b)
        out[t] = sorted(key)
    return out


def probe_masks(key_bits: int, probes: int) -> NDArray[np.uint64]:
    """Every ``key_bits``-bit mask with at most ``probes`` bits set, by number of bits then value."""
    if isinstance(probes, bool) or int(probes) != probes or probes < 0:
        raise ValueError(f"probes must be an integer ≥ 0, got {probes!r}")
    probes = min(int(probes), key_bits)
    count = sum(math.comb(key_bits, i) for i in range(probes + 1))
    if count > MAX_PROBES_PER_TABLE:
        raise ValueError(f"probes={probes} at key_bits={key_bits} needs {count} lookups per table, more than "
                         f"{MAX_PROBES_PER_TABLE}")
    masks = [0]
    level = [0]
    for _ in range(probes):
        # masks with one more bit: add a bit above the highest set bit, so each mask is made once
        nxt: list[int] = []
        for mask in level:
            top = mask.bit_length()
            nxt.extend(mask | (1 << b) for b in range(top, key_bits))
        masks.extend(sorted(nxt))
        level = nxt
    return np.array(masks, dtype=np.uint64)


# ----------------------------------------------------------------------------------------------------- the tables
