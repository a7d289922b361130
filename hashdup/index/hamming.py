"""The search engine's public face: :class:`HammingIndex`."""

from __future__ import annotations

from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hashdup import bits
from hashdup.index import scan
from hashdup.io.codefile import CodeFile

#: Below this many code-word comparisons (database rows × queries × words), the numpy scan answers before numba's
#: compiled kernels would even be loaded (about 0.5 s), so small indexes stay snappy from the command line.
SMALL_WORK = 1 << 22


class HammingIndex:
    """Exact Hamming-distance search over packed binary codes.

    Parameters
    ----------
    codes : ndarray of uint8, shape (n, n_bytes), or CodeFile
        Packed codes in the :mod:`hashdup.bits` layout (rows padded to a multiple of 8 bytes), e.g. the memory map of
        an open code file. Not copied.
    n_bits : int, optional
        Meaningful bits per code; taken from the code file when ``codes`` is one.

    Notes
    -----
    Distances are ints in 0..n_bits. ``knn`` returns faiss's ``(D, I)``, ``radius`` faiss's ``(lims, D, I)``; ties
    are ordered by id and a radius is inclusive (``d ≤ radius``). kNN and radius queries run the compiled blocked
    scan of :mod:`hashdup.index.kernels` (multi-threaded, streaming a memory-mapped file block by block); batches of
    radius queries that multi-index hashing answers with far fewer verifications, and every self-join, use
    :mod:`hashdup.index.mih`. The numpy scan of :mod:`hashdup.index.scan` is the reference they are tested against.
    """

    def __init__(self, codes: ArrayLike | CodeFile, n_bits: int | None = None) -> None:
        if isinstance(codes, CodeFile):
            n_bits = codes.n_bits if n_bits is None else n_bits
            codes = codes.codes
        if n_bits is None:
            raise TypeError("n_bits is required when codes is an array")
        self.codes = bits.as_codes(codes)
        self.n_bits = int(n_bits)
        if self.codes.shape[1] != bits.row_bytes(self.n_bits):
            raise ValueError(f"codes have {self.codes.shape[1]} bytes per row, {self.n_bits} bits need "
                             f"{bits.row_bytes(self.n_bits)}")

    def __len__(self) -> int:
        return self.codes.shape[0]

    def _queries(self, Q: ArrayLike) -> NDArray[np.uint8]:
        Q = bits.as_codes(Q)
        if Q.shape[1] != self.codes.shape[1]:
            raise ValueError(f"queries have {Q.shape[1]} bytes per row, the index holds {self.codes.shape[1]}")
        return Q

    def knn(self, Q: ArrayLike, k: int) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        """The ``k`` nearest codes of each query.

        Returns
        -------
        D : ndarray of int32, shape (nq, k)
            Hamming distances, ascending; -1 where fewer than ``k`` codes exist.
        I : ndarray of int64, shape (nq, k)
            Row ids, ties by ascending id; -1 padding.
        """
        Q = self._queries(Q)
        if self._small(Q.shape[0]):
            return scan.knn_scan(self.codes, Q, int(k))
        from hashdup.index import kernels

        return kernels.knn(self.codes, Q, int(k))

    @cached_property
    def multi_index(self):
        """Multi-index hashing tables over the codes (built on first use, then kept)."""
        from hashdup.index import mih

        return mih.MultiIndex(self.codes, self.n_bits)

    def _small(self, nq: int) -> bool:
        return len(self) * max(nq, 1) * (self.codes.shape[1] // 8) < SMALL_WORK

    def _use_multi_index(self, nq: int, radius: int) -> bool:
        """Whether multi-index hashing answers ``nq`` radius queries faster than the compiled scan.

        Cost model from bench/search_join.py (2-core x86_64): a scan reads every code for every query, about 0.15 ns
        per code word per query in batches; multi-index hashing costs about 60 ns per key probed plus 3 ns per
        candidate verified (:func:`hashdup.index.mih.expected_work`), after building its tables once (about 130 ns
        per code per substring).
        """
        n = len(self)
        if n < 10_000 or self.n_bits < bits.MIN_BITS:
            return False
        from hashdup.index import mih

        m = mih.default_m(n, self.n_bits)
        probes, candidates = mih.expected_work(n, self.n_bits, radius, m)
        build = 0.0 if "multi_index" in self.__dict__ else 130e-9 * m * n
        return build + nq * (60e-9 * probes + 3e-9 * candidates) < nq * 0.15e-9 * n * (self.codes.shape[1] // 8)

    def radius(self, Q: ArrayLike, radius: int) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]:
        """Every code within ``radius`` bits (inclusive) of each query.

        Returns
        -------
        lims : ndarray of int64, shape (nq + 1,)
        D : ndarray of int32, shape (lims[-1],)
        I : ndarray of int64, shape (lims[-1],)
            Query ``q``'s matches are ``I[lims[q]:lims[q+1]]`` at distances ``D[lims[q]:lims[q+1]]``, by distance
            then id.
        """
        Q = self._queries(Q)
        if self._small(Q.shape[0]) or int(radius) < 0:
            return scan.radius_scan(self.codes, Q, int(radius))
        if self._use_multi_index(Q.shape[0], int(radius)):
            return self.multi_index.radius(Q, int(radius))
        from hashdup.index import kernels

        return kernels.radius(self.codes, Q, int(radius))

    def self_join(self, radius: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int32]]:
        """All pairs of indexed codes within ``radius`` bits: arrays ``(i, j, d)`` with ``i < j``, sorted by (i, j).

        Multi-index hashing without a quadratic pass (:func:`hashdup.index.mih.self_join`), which falls back to the
        quadratic scan only where its cost model says that is faster (tiny sets, radii near the code length).
        """
        if int(radius) < 0:
            raise ValueError(f"radius must be ≥ 0, got {radius}")
        if self.n_bits < bits.MIN_BITS or self._small(len(self)):  # a scan is as fast as anything here
            return scan.self_join_scan(self.codes, int(radius))
        from hashdup.index import mih

        return mih.self_join(self.codes, self.n_bits, int(radius))
