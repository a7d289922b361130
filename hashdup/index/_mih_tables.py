"""Building the substring tables of :mod:`hashdup.index.mih`, and the thread plumbing its searches share.

:func:`_build_tables` builds the tables of every substring (:data:`_Tables`), :func:`_build_table` one of them (a
permutation of the ids sorted by (substring key, id) and a directory over the top ``dbits`` key bits; the layout is
in :mod:`hashdup.index.mih`) with the compiled counting sort of :mod:`hashdup.index._mih_kernels`, split over threads
by id range; :func:`_dir_bits` and :func:`_id_dtype` size it. :func:`_threads`, :func:`_ranges`, :func:`_pool` and
:func:`_map` cut work into ranges and run them on a thread pool (the kernels release the GIL), for the table builds
here and for the queries and self-join of :mod:`hashdup.index.mih`; :func:`_read_only_words` gives every kernel one
array type, so that each is compiled once.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numpy.typing import NDArray

from hashdup import bits
from hashdup.index._mih_kernels import _table_histogram, _table_scatter, _table_sort_buckets

#: The tables of a :class:`~hashdup.index.mih.MultiIndex`: ``perms`` (m, n) and ``offs`` (row ids, int32 or int64,
#: see :func:`_id_dtype`), ``off_base`` (m,) int64 (where each table's offsets start in ``offs``) and ``dbits`` (m,)
#: int64 (directory bits of each table, see :func:`_dir_bits`).
_Tables = tuple[NDArray[np.signedinteger], NDArray[np.signedinteger], NDArray[np.int64], NDArray[np.int64]]


def _read_only_words(codes: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """Codes as uint64 words in a read-only view: the kernels see one array type whether the codes come from memory
    or from a read-only memory map, so each is compiled once."""
    words = bits.as_words(codes).view()
    words.flags.writeable = False
    return words


def _id_dtype(n: int) -> np.dtype[np.int32] | np.dtype[np.int64]:
    """dtype of the row ids (permutations, bucket offsets) of ``n`` codes: int32 while they fit, else int64."""
    return np.dtype(np.int32) if n < 2**31 - 1 else np.dtype(np.int64)


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
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges.tolist()) if b > a]


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
    _map(lambda t, _, counts=counts: _table_histogram(words, start, width, dbits, *parts[t], counts[t]), each, pool)
    offsets[0] = 0
    np.cumsum(counts.sum(axis=0, dtype=np.int64), out=offsets[1:])
    fill = np.cumsum(counts, axis=0, dtype=perm.dtype)
    fill -= counts
    fill += offsets[:-1]
    del counts
    _map(lambda t, _, fill=fill: _table_scatter(words, start, width, dbits, *parts[t], fill[t], perm), each, pool)
    del fill
    if width > dbits:
        edges = np.searchsorted(offsets, np.linspace(0, n, 4 * len(parts) + 1)[1:-1])
        edges = np.unique(np.concatenate(([0], edges, [1 << dbits])))
        _map(lambda a, b: _table_sort_buckets(words, start, width, offsets, perm, a, b),
             list(itertools.pairwise(edges.tolist())), pool)


def _build_tables(words: NDArray[np.uint64], starts: NDArray[np.int64], widths: NDArray[np.int64], n_threads: int
                  ) -> _Tables:
    """The tables of the substrings ``starts[k]:starts[k] + widths[k]`` of the codes (see :data:`_Tables`)."""
    n, m = words.shape[0], len(starts)
    dtype = _id_dtype(n)
    dbits = np.array([_dir_bits(n, w) for w in widths.tolist()], dtype=np.int64)
    sizes = (1 << dbits) + 1
    off_base = np.zeros(m, dtype=np.int64)
    np.cumsum(sizes[:-1], out=off_base[1:])
    perms = np.empty((m, n), dtype=dtype)
    offs = np.empty(int(sizes.sum()), dtype=dtype)
    with _pool(n_threads) as pool:
        for k in range(m):
            _build_table(words, int(starts[k]), int(widths[k]), int(dbits[k]), perms[k],
                         offs[off_base[k] : off_base[k] + sizes[k]], pool, n_threads)
    return perms, offs, off_base, dbits
