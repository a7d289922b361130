"""LSH bucket tables: approximate Hamming kNN by hash-table lookups, with exact re-ranking.

The lecture's "hash tables to improve search speed". ``L`` tables each key every code by ``m`` of its bits; codes
that agree on those bits share a bucket. A query looks up its own key in every table and, with multi-probe
(Lv et al. 2007, the simple version), every key within ``p`` flipped key bits; the union of those buckets is the
candidate set, which is always re-ranked by the exact Hamming distance on the full codes. Results are therefore
exact *for the candidates found*: a returned distance is the true distance and the order is (distance, id), but a
true neighbour that shares no probed bucket with the query is missed.

Which codes are found
---------------------
A code at Hamming distance ``d`` from the query lands in a probed bucket of table ``t`` iff at most ``p`` of the
``d`` differing bits are among that table's ``m`` key bits. For one key of ``m`` bits drawn at random from
``n_bits`` the number of differing key bits is hypergeometric, so one table finds the code with probability
``P(d) = Σ_{i≤p} C(d, i) C(n_bits − d, m − i) / C(n_bits, m)``, and ``L`` independent keys with
``1 − (1 − P)^L``.
Keys here are drawn without replacement from successive random permutations of the bits, so the
``n_bits // m`` tables cut from one permutation are disjoint and miss together less often than independent keys
(for disjoint keys covering every bit, ``L`` tables with ``p`` probes find every code within ``L (p + 1) − 1``
bits: the multi-index-hashing pigeonhole). :func:`recall_estimate` computes this recall and
:func:`default_n_tables` uses it.

Costs per query: ``L · Σ_{i≤p} C(m, i)`` probes (21 per table at m = 20, p = 1; 211 at p = 2) and about
``probes · n / 2^m`` candidates on uniform codes, each re-ranked with one random read of a code row.

References
----------
A. Gionis, P. Indyk and R. Motwani, "Similarity search in high dimensions via hashing", VLDB 1999.
Q. Lv, W. Josephson, Z. Wang, M. Charikar and K. Li, "Multi-probe LSH: efficient indexing for high-dimensional
similarity search", VLDB 2007.
M. Norouzi, A. Punjani and D. J. Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numba import get_num_threads
from numpy.typing import ArrayLike, NDArray

from hashdup import bits
from hashdup.errors import IndexFileError
from hashdup.index._bucket_kernels import _build_tables, _candidates_kernel, _knn_kernel, _knn_rows
from hashdup.index._bucket_params import (  # noqa: F401 - part of this module's interface
    DEFAULT_RECALL,
    DEFAULT_RECALL_DISTANCE,
    MAX_DEFAULT_TABLES,
    MAX_KEY_BITS,
    MAX_PROBES_PER_TABLE,
    MAX_ROWS,
    default_key_bits,
    default_n_tables,
    draw_positions,
    probe_masks,
    recall_estimate,
)
from hashdup.io.codefile import CodeFile
from hashdup.io.header import HeaderFormat, check_row_stride, map_array

MAGIC = b"HDUPBUCK"
VERSION = 1
# own fields after magic, version, header size: n_bits, row_stride, n_tables, key_bits, flags, n_rows, fingerprint
_HEADER = HeaderFormat(MAGIC, VERSION, "IIIIIQ16s", kind="bucket-table file", format_name="bucket-table format")
HEADER_SIZE = _HEADER.size  # 72

#: Smaller batches of queries run on one thread: starting the thread pool costs more than a few queries take.
PARALLEL_MIN_QUERIES = 16


def _rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)
    raise TypeError(f"random_state must be an int, a numpy Generator or None, got {random_state!r}")


def _ro(a: NDArray) -> NDArray:
    """A read-only plain-ndarray view, so that every kernel call has one numba signature (memory maps, read-only
    or not, in-memory arrays all look alike) and compiles once."""
    v = np.asarray(a).view()
    v.flags.writeable = False
    return v


def _pad8(size: int) -> int:
    return -(-size // 8) * 8


def _layout(n_tables: int, key_bits: int, n_rows: int) -> tuple[int, int, int, int]:
    """Byte offsets of positions, offsets and ids, and the file size."""
    pos_at = HEADER_SIZE
    off_at = pos_at + _pad8(n_tables * key_bits * 2)
    ids_at = off_at + _pad8(n_tables * ((1 << key_bits) + 1) * 4)
    end = ids_at + _pad8(n_tables * n_rows * 4)
    return pos_at, off_at, ids_at, end


def _int_param(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return int(value)


class BucketTables:
    """``L`` LSH hash tables over packed binary codes, each keyed by ``m`` of the code's bits.

    Build with :meth:`build`, search with :meth:`query`, save with :meth:`write` and reopen (memory-mapped) with
    :meth:`open`. The tables hold row ids only; :meth:`query` re-ranks candidates against the codes it is given.

    Each table is a CSR array over the whole key space: the rows whose key is ``b`` are
    ``ids[t, offsets[t, b] : offsets[t, b + 1]]``, in ascending id order; the key of a code is
    ``Σ_j bit(code, positions[t, j]) << j``. (A dense offsets array of ``2^m + 1`` entries costs
    no more memory than sorted unique keys plus their offsets when ``2^m ≈ n`` (the default), and turns each probe
    into one read instead of a binary search: 14 ns against 190 ns per probe, measured at 1 M codes, m = 20.)

    Parameter trade-offs: a longer key (``m``) makes buckets smaller (about ``n / 2^m`` codes each on uniform codes)
    but a near neighbour is less likely to agree on all key bits; more tables (``L``) raise recall linearly in memory
    and lookup time; more probes (``p``) raise recall per table at ``Σ_{i≤p} C(m, i)`` lookups per table. The
    defaults (:func:`default_key_bits`, :func:`default_n_tables`, ``probes=1``) aim at near duplicates: codes within
    about 10 % of the bits of the query.

    File layout (all integers little-endian; every array starts at a multiple of 8 bytes)::

        offset  size  field
             0     8  magic         b"HDUPBUCK"
             8     2  version       uint16, currently 1
            10     2  header_size   uint16, 72; the positions array starts here
            12     4  n_bits        uint32, meaningful bits per code (8..1024)
            16     4  row_stride    uint32, bytes per code row = ceil(n_bits / 64) * 8
            20     4  n_tables      uint32, L ≥ 1
            24     4  key_bits      uint32, m, 1..min(n_bits, 26)
            28     4  flags         uint32, 0 (reserved)
            32     8  n_rows        uint64, codes indexed, < 2^32
            40    16  fingerprint   caller's tag of the indexed codes (e.g. the code file's), zeros if unset
            56    16  checksum      blake2b-128 of (bytes 0..55 || blake2b-128 of bytes 72..end)
            72     …  positions     uint16 (L, m), key bit positions, each row ascending; zero-padded to 8 bytes
             …     …  offsets       uint32 (L, 2^m + 1), CSR offsets of each table; zero-padded to 8 bytes
             …     …  ids           uint32 (L, n_rows), row ids in key order; zero-padded to 8 bytes

    Attributes
    ----------
    n_bits, row_stride, n_rows, n_tables, key_bits : int
    positions : ndarray of uint16, shape (n_tables, key_bits)
    offsets : ndarray of uint32, shape (n_tables, 2**key_bits + 1)
    ids : ndarray of uint32, shape (n_tables, n_rows)
    fingerprint : bytes
        16 bytes.
    path : pathlib.Path or None
        The file the arrays are mapped from, None when built in memory.

    References
    ----------
    A. Gionis, P. Indyk and R. Motwani, "Similarity search in high dimensions via hashing", VLDB 1999.
    Q. Lv, W. Josephson, Z. Wang, M. Charikar and K. Li, "Multi-probe LSH: efficient indexing for high-dimensional
    similarity search", VLDB 2007.
    """

    def __init__(self, n_bits: int, n_rows: int, positions: NDArray[np.uint16], offsets: NDArray[np.uint32],
                 ids: NDArray[np.uint32], fingerprint: bytes = bytes(16), path: Path | None = None) -> None:
        self.n_bits = n_bits
        self.row_stride = bits.row_bytes(n_bits)
        self.n_rows = n_rows
        self.n_tables, self.key_bits = positions.shape
        self.positions = positions
        self.offsets = offsets
        self.ids = ids
        self.fingerprint = fingerprint
        self.path = path

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return (f"BucketTables(n_rows={self.n_rows}, n_bits={self.n_bits}, n_tables={self.n_tables}, "
                f"key_bits={self.key_bits}{where})")

    @property
    def nbytes(self) -> int:
        """Bytes held by the tables' arrays (what a query touches besides the codes)."""
        return self.positions.nbytes + self.offsets.nbytes + self.ids.nbytes

    # ------------------------------------------------------------------------------------------------- build

    @classmethod
    def build(cls, codes: ArrayLike | CodeFile, n_bits: int | None = None, *, n_tables: int | None = None,
              key_bits: int | None = None, random_state: int | np.random.Generator | None = 0,
              fingerprint: bytes | None = None) -> BucketTables:
        """Hash every code into ``n_tables`` tables.

        Parameters
        ----------
        codes : ndarray of uint8, shape (n, row_bytes(n_bits)), or CodeFile
            Packed codes in the :mod:`hashdup.bits` layout; row ``i`` gets id ``i``. Read ``n_tables`` times.
        n_bits : int, optional
            Meaningful bits per code; taken from the code file when ``codes`` is one.
        n_tables : int, optional
            ``L``, 1..1024. Default :func:`default_n_tables` (6 at 64 bits and 1 M codes).
        key_bits : int, optional
            ``m``, 1..min(n_bits, 26). Default :func:`default_key_bits`, ``round(log2 n)``.
        random_state : int, numpy Generator or None, default 0
            Seed of the key bit positions; the same seed gives the same tables and a byte-identical file.
        fingerprint : bytes, optional
            16-byte tag stored in the file; default the code file's fingerprint, or zeros for an array.

        Returns
        -------
        BucketTables
        """
        if isinstance(codes, CodeFile):
            n_bits = codes.n_bits if n_bits is None else n_bits
            fingerprint = codes.fingerprint if fingerprint is None else fingerprint
            codes = codes.codes
        if n_bits is None:
            raise TypeError("n_bits is required when codes is an array")
        n_bits = bits.check_n_bits(n_bits)
        codes = bits.as_codes(codes)
        if codes.shape[1] != bits.row_bytes(n_bits):
            raise ValueError(f"codes have {codes.shape[1]} bytes per row, {n_bits} bits need "
                             f"{bits.row_bytes(n_bits)}")
        n = codes.shape[0]
        if n > MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} codes can be indexed, got {n}")
        fingerprint = bytes(16) if fingerprint is None else bytes(fingerprint)
        if len(fingerprint) != 16:
            raise ValueError(f"fingerprint must be 16 bytes, got {len(fingerprint)}")
        m = default_key_bits(n, n_bits) if key_bits is None else _int_param(
            "key_bits", key_bits, 1, min(n_bits, MAX_KEY_BITS))
        L = default_n_tables(n_bits, m) if n_tables is None else _int_param("n_tables", n_tables, 1, 1024)
        positions = draw_positions(n_bits, L, m, _rng(random_state))
        offsets = np.zeros((L, (1 << m) + 1), dtype=np.uint32)
        ids = np.zeros((L, n), dtype=np.uint32)
        if n:
            _build_tables(_ro(bits.as_words(codes)), positions, offsets, ids)
        return cls(n_bits, n, positions, offsets, ids, fingerprint)

    # ------------------------------------------------------------------------------------------------- search

    def _check(self, codes_db: ArrayLike | CodeFile, Q: ArrayLike) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
        if isinstance(codes_db, CodeFile):
            codes_db = codes_db.codes
        db = bits.as_codes(codes_db)
        if db.shape != (self.n_rows, self.row_stride):
            raise ValueError(f"codes_db has shape {db.shape}, the tables index {self.n_rows} codes of "
                             f"{self.row_stride} bytes")
        return _ro(bits.as_words(db)), self._queries(Q)

    def _queries(self, Q: ArrayLike) -> NDArray[np.uint64]:
        Q = bits.as_codes(Q)
        if Q.shape[1] != self.row_stride:
            raise ValueError(f"queries have {Q.shape[1]} bytes per row, the tables index {self.row_stride}")
        return _ro(bits.as_words(Q))

    def query(self, codes_db: ArrayLike | CodeFile, Q: ArrayLike, k: int, *, probes: int = 1
              ) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        """Approximate ``k`` nearest codes of each query: bucket candidates re-ranked by exact distance.

        Parameters
        ----------
        codes_db : ndarray of uint8, shape (n_rows, row_stride), or CodeFile
            The codes the tables were built from (e.g. the code file's memory map); used for re-ranking.
        Q : ndarray of uint8, shape (nq, row_stride)
            Packed query codes.
        k : int
            Neighbours per query, ≥ 1.
        probes : int, default 1
            ``p``: also look up every key within ``p`` flipped key bits (0 = the query's own bucket only).

        Returns
        -------
        D : ndarray of int32, shape (nq, k)
            Exact Hamming distances of the best candidates, ascending; -1 where fewer than ``k`` were found.
        I : ndarray of int64, shape (nq, k)
            Their row ids, ties by ascending id; -1 padding.
        """
        k = _int_param("k", k, 1, 2**31 - 1)
        dbw, qw = self._check(codes_db, Q)
        masks = probe_masks(self.key_bits, probes)
        nq = qw.shape[0]
        D = np.full((nq, k), -1, dtype=np.int32)
        I = np.full((nq, k), -1, dtype=np.int64)
        if nq and self.n_rows:
            args = (_ro(self.positions), _ro(self.offsets), _ro(self.ids), masks, dbw, qw, min(k, self.n_rows))
            threads = get_num_threads()
            if threads == 1 or nq < PARALLEL_MIN_QUERIES:
                _knn_rows(*args, 0, nq, D, I)
            else:
                _knn_kernel(*args, min(nq, 4 * threads), D, I)
        return D, I

    def candidates(self, Q: ArrayLike, *, probes: int = 1) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The distinct rows that :meth:`query` re-ranks for each query.

        Returns
        -------
        lims : ndarray of int64, shape (nq + 1,)
        I : ndarray of int64, shape (lims[-1],)
            Query ``q``'s candidates are ``I[lims[q]:lims[q+1]]``, ascending.
        """
        qw = self._queries(Q)
        masks = probe_masks(self.key_bits, probes)
        lims = np.zeros(qw.shape[0] + 1, dtype=np.int64)
        if not self.n_rows or not qw.shape[0]:
            return lims, np.zeros(0, dtype=np.int64)
        I = _candidates_kernel(_ro(self.positions), _ro(self.offsets), _ro(self.ids), masks, qw, self.n_rows, lims)
        return lims, I

    # ------------------------------------------------------------------------------------------------- files

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the tables to ``path`` atomically, in the layout of the class docstring."""
        with _HEADER.create(path) as out:
            for arr in (self.positions.astype("<u2", copy=False), self.offsets.astype("<u4", copy=False),
                        self.ids.astype("<u4", copy=False)):
                out.write_array(arr)
                out.write(b"\0" * (_pad8(arr.nbytes) - arr.nbytes))
            out.write_header(self.n_bits, self.row_stride, self.n_tables, self.key_bits, 0, self.n_rows,
                             self.fingerprint)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = True) -> BucketTables:
        """Open and validate a bucket-table file; the arrays are read-only memory maps.

        Parameters
        ----------
        path : path-like
        verify : bool, default True
            Check the checksum and that the offsets and ids are consistent (reads the whole file once). Without
            it, a corrupt file can make :meth:`query` read out of bounds.

        Raises
        ------
        IndexFileError
            When the file is missing, too short, has a wrong magic, version, header field, size, checksum or content;
            a wrong header, size or checksum before any memory map is made.
        """
        path = Path(path)
        with _HEADER.open(path) as f:
            n_bits, _, _, n, fingerprint, (positions, offsets, ids) = _open_checked(f, path, verify)
        if verify:
            problem = _inconsistency(positions, offsets, ids, n_bits, n)
            if problem:
                raise IndexFileError(str(path), problem)
        return cls(int(n_bits), int(n), positions, offsets, ids, bytes(fingerprint), path)


def _open_checked(f: BinaryIO, path: Path, verify: bool) -> tuple[int, int, int, int, bytes, tuple[NDArray, ...]]:
    """Validate an open bucket-table file (header, then its size, then, with ``verify``, the checksum over the body
    read in chunks) and only then map its arrays read-only, through the same open file: a refused file is never
    memory-mapped. Returns n_bits, n_tables, key_bits, n_rows, fingerprint and (positions, offsets, ids)."""
    header = _HEADER.read(f, path)
    n_bits, stride, L, m, flags, n, fingerprint = header.values
    check_row_stride(path, n_bits, stride)
    if not 1 <= m <= min(n_bits, MAX_KEY_BITS):
        raise IndexFileError(str(path), f"key_bits {m} outside 1..{min(n_bits, MAX_KEY_BITS)}")
    if not 1 <= L <= 1024:
        raise IndexFileError(str(path), f"n_tables {L} outside 1..1024")
    if n > MAX_ROWS:
        raise IndexFileError(str(path), f"n_rows {n} exceeds {MAX_ROWS}")
    if flags != 0:
        raise IndexFileError(str(path), f"unknown flags {flags:#x}")
    pos_at, off_at, ids_at, end = _layout(L, m, n)
    if header.file_size != end:
        raise IndexFileError(str(path), f"file is {header.file_size} bytes, header says {L} tables of {m}-bit keys "
                                        f"over {n} rows ({end} bytes)")
    if verify:
        _HEADER.verify_body(f, path, header, end - HEADER_SIZE)
    positions = map_array(f, "<u2", pos_at, (L, m))
    offsets = map_array(f, "<u4", off_at, (L, (1 << m) + 1))
    ids = map_array(f, "<u4", ids_at, (L, n))
    return int(n_bits), int(L), int(m), int(n), bytes(fingerprint), (positions, offsets, ids)


def _inconsistency(positions: NDArray, offsets: NDArray, ids: NDArray, n_bits: int, n: int) -> str | None:
    """What is wrong with arrays whose checksum matched (a file written by something else), or None."""
    if positions.size and int(positions.max()) >= n_bits:
        return f"a key bit position is {int(positions.max())}, beyond n_bits {n_bits}"
    if positions.shape[1] > 1 and (np.diff(positions.astype(np.int64), axis=1) <= 0).any():
        return "key bit positions are not strictly ascending"
    if (offsets[:, 0] != 0).any() or (offsets[:, -1] != n).any():
        return f"table offsets do not run from 0 to n_rows {n}"
    for t in range(offsets.shape[0]):
        if (np.diff(offsets[t].astype(np.int64)) < 0).any():
            return f"offsets of table {t} decrease"
        if n and int(ids[t].max()) >= n:
            return f"table {t} holds row id {int(ids[t].max())}, beyond n_rows {n}"
    return None
