"""The one bit layout of hashdup: packed codes, their stride and Hamming distances.

A code of ``n_bits`` bits is stored as a row of ``row_bytes(n_bits)`` uint8 values: bit ``b`` of the code is bit
``b % 8`` (least significant first, numpy's ``bitorder="little"``) of byte ``b // 8``. Rows are padded with zero bits
to a multiple of 64 bits, so a row can be viewed as ``row_bytes // 8`` little-endian uint64 words. Padding bits are
always zero, so they never contribute to a Hamming distance.

Nothing else in hashdup calls :func:`numpy.packbits`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

MIN_BITS = 8
MAX_BITS = 1024
WORD_BITS = 64


def check_n_bits(n_bits: int) -> int:
    """Validate a code length.

    Parameters
    ----------
    n_bits : int
        Number of bits per code, from 8 to 1024.

    Returns
    -------
    int
        ``n_bits`` as a Python int.
    """
    if isinstance(n_bits, bool) or int(n_bits) != n_bits:
        raise ValueError(f"n_bits must be an integer, got {n_bits!r}")
    n_bits = int(n_bits)
    if not MIN_BITS <= n_bits <= MAX_BITS:
        raise ValueError(f"n_bits must be between {MIN_BITS} and {MAX_BITS}, got {n_bits}")
    return n_bits


def row_bytes(n_bits: int) -> int:
    """Bytes per packed row: ``n_bits`` rounded up to a multiple of 64 bits, in bytes."""
    if n_bits < 1:
        raise ValueError(f"n_bits must be positive, got {n_bits}")
    return -(-n_bits // WORD_BITS) * (WORD_BITS // 8)


def pack(bits: ArrayLike) -> NDArray[np.uint8]:
    """Pack a boolean matrix into padded code rows.

    Parameters
    ----------
    bits : array_like of bool, shape (n, n_bits)
        One code per row; any non-zero value counts as a 1 bit.

    Returns
    -------
    codes : ndarray of uint8, shape (n, row_bytes(n_bits))
        Packed codes, little bit order, zero padding.
    """
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"bits must be a 2-D array (n, n_bits), got shape {bits.shape}")
    n, n_bits = bits.shape
    stride = row_bytes(max(n_bits, 1))
    codes = np.zeros((n, stride), dtype=np.uint8)
    if n and n_bits:
        packed = np.packbits(bits.astype(bool, copy=False), axis=1, bitorder="little")
        codes[:, : packed.shape[1]] = packed
    return codes


def unpack(codes: ArrayLike, n_bits: int) -> NDArray[np.bool_]:
    """Unpack code rows into a boolean matrix.

    Parameters
    ----------
    codes : array_like of uint8, shape (n, n_bytes)
        Packed codes with ``n_bytes >= ceil(n_bits / 8)``.
    n_bits : int
        Number of meaningful bits per row.

    Returns
    -------
    bits : ndarray of bool, shape (n, n_bits)
    """
    codes = as_codes(codes)
    if codes.shape[1] * 8 < n_bits:
        raise ValueError(f"codes have {codes.shape[1] * 8} bits per row, fewer than n_bits={n_bits}")
    return np.unpackbits(codes, axis=1, count=n_bits, bitorder="little").astype(bool)


def as_codes(codes: ArrayLike) -> NDArray[np.uint8]:
    """Check that ``codes`` is a 2-D uint8 array and return it without copying."""
    arr = np.asarray(codes)
    if arr.dtype != np.uint8:
        raise TypeError(f"codes must be uint8 packed rows, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"codes must be a 2-D array (n, n_bytes), got shape {arr.shape}")
    return arr


def as_words(codes: ArrayLike) -> NDArray[np.uint64]:
    """View padded code rows as uint64 words, shape (n, row_bytes // 8).

    Copies only when the rows are not 8-byte aligned and contiguous.
    """
    codes = as_codes(codes)
    if codes.shape[1] % 8:
        raise ValueError(f"code rows must be padded to a multiple of 8 bytes, got {codes.shape[1]} bytes")
    if not codes.flags.c_contiguous or codes.ctypes.data % 8:
        codes = np.ascontiguousarray(codes).copy()
    return codes.view("<u8")


def hamming(a: ArrayLike, b: ArrayLike) -> NDArray[np.int32]:
    """All pairwise Hamming distances between two sets of packed codes.

    Parameters
    ----------
    a : array_like of uint8, shape (n, n_bytes)
    b : array_like of uint8, shape (m, n_bytes)

    Returns
    -------
    D : ndarray of int32, shape (n, m)
        ``D[i, j]`` is the number of differing bits between ``a[i]`` and ``b[j]``.
    """
    wa, wb = as_words(a), as_words(b)
    if wa.shape[1] != wb.shape[1]:
        raise ValueError(f"code widths differ: {wa.shape[1] * 8} and {wb.shape[1] * 8} bytes")
    D = np.zeros((wa.shape[0], wb.shape[0]), dtype=np.int32)
    for w in range(wa.shape[1]):
        D += np.bitwise_count(wa[:, w, None] ^ wb[None, :, w])
    return D
