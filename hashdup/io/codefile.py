"""The code file: packed binary codes behind a fixed, self-describing header, read through a memory map.

The header's frame (magic, version, size, checksum) is :mod:`hashdup.io.header`'s; this module holds the code file's
own fields and checks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hashdup import bits
from hashdup.errors import IndexFileError
from hashdup.io.header import HeaderFormat, check_row_stride, map_array

MAGIC = b"HDUPCODE"
VERSION = 1
# own fields after magic, version, header size: n_bits, row_stride, flags, n_rows, fingerprint
_HEADER = HeaderFormat(MAGIC, VERSION, "IIIQ16s", kind="code file", format_name="code file format")
HEADER_SIZE = _HEADER.size  # 64


class CodeFile:
    """A read-only, memory-mapped file of packed binary codes.

    Layout (all integers little-endian)::

        offset  size  field
             0     8  magic           b"HDUPCODE"
             8     2  version         uint16, currently 1
            10     2  header_size     uint16, 64; the first code row starts here
            12     4  n_bits          uint32, meaningful bits per code (8..1024)
            16     4  row_stride      uint32, bytes per row = ceil(n_bits / 64) * 8
            20     4  flags           uint32, 0 (reserved)
            24     8  n_rows          uint64
            32    16  fingerprint     the encoder's fingerprint (blake2b-128 of its parameters and fitted state)
            48    16  checksum        blake2b-128 of (bytes 0..47 || blake2b-128 of the body)
            64     …  body            n_rows × row_stride bytes: the codes in :mod:`hashdup.bits` layout

    Row ``i`` of the body is the code of catalogue id ``i``. Files are written atomically by :meth:`write` or
    :class:`CodeFileWriter`; :meth:`open` checks magic, version, sizes against the file length and, unless
    ``verify=False``, the checksum, before any memory map is made.

    Attributes
    ----------
    path : pathlib.Path
    n_bits : int
    row_stride : int
    n_rows : int
    fingerprint : bytes
        16 bytes.
    codes : ndarray of uint8, shape (n_rows, row_stride)
        Read-only memory map of the body (an empty array when ``n_rows == 0``).
    """

    def __init__(self, path: Path, n_bits: int, row_stride: int, n_rows: int, fingerprint: bytes,
                 codes: NDArray[np.uint8]) -> None:
        self.path = path
        self.n_bits = n_bits
        self.row_stride = row_stride
        self.n_rows = n_rows
        self.fingerprint = fingerprint
        self.codes = codes

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return f"CodeFile({str(self.path)!r}, n_rows={self.n_rows}, n_bits={self.n_bits})"

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = True) -> CodeFile:
        """Open and validate a code file.

        Parameters
        ----------
        path : path-like
        verify : bool, default True
            Also check the checksum (reads the whole file once).

        Raises
        ------
        IndexFileError
            When the file is missing, too short, has a wrong magic, version, header size, n_bits, row stride, flags,
            size or checksum; always before the body is memory-mapped.
        """
        path = Path(path)
        with _HEADER.open(path) as f:
            codes, n_bits, stride, n_rows, fingerprint = _open_checked(f, path, verify)
        return cls(path, n_bits, stride, n_rows, fingerprint, codes)

    @staticmethod
    def write(path: str | os.PathLike[str], codes: ArrayLike, n_bits: int, fingerprint: bytes) -> None:
        """Write ``codes`` (uint8, shape (n, row_bytes(n_bits))) to ``path`` atomically."""
        with CodeFileWriter(path, n_bits, fingerprint) as w:
            w.append(codes)


def _open_checked(f: BinaryIO, path: Path, verify: bool) -> tuple[NDArray[np.uint8], int, int, int, bytes]:
    """Validate an open code file (header, then sizes, then, with ``verify``, the checksum over the body read in
    chunks), and only then map the body read-only, through the same open file: no memory map is made of a file that
    is refused, and the map shows the bytes that were checked even if the path is replaced meanwhile."""
    header = _HEADER.read(f, path)
    n_bits, stride, flags, n_rows, fingerprint = header.values
    check_row_stride(path, n_bits, stride)
    if flags != 0:
        raise IndexFileError(str(path), f"unknown flags {flags:#x} (expected 0)")
    expected = HEADER_SIZE + n_rows * stride
    if header.file_size != expected:
        raise IndexFileError(str(path), f"file is {header.file_size} bytes, header says {n_rows} rows of {stride} "
                                        f"bytes ({expected} bytes)")
    if verify:
        _HEADER.verify_body(f, path, header, n_rows * stride)
    return map_array(f, np.uint8, HEADER_SIZE, (n_rows, stride)), n_bits, stride, n_rows, fingerprint


class CodeFileWriter:
    """Stream code rows into a new code file; the file appears under its name only when :meth:`close` succeeds.

    Use as a context manager; an exception inside the block leaves the previous file (if any) untouched.
    """

    def __init__(self, path: str | os.PathLike[str], n_bits: int, fingerprint: bytes) -> None:
        self.n_bits = bits.check_n_bits(n_bits)
        self.row_stride = bits.row_bytes(n_bits)
        if len(fingerprint) != 16:
            raise ValueError(f"fingerprint must be 16 bytes, got {len(fingerprint)}")
        self.fingerprint = bytes(fingerprint)
        self.n_rows = 0
        self._out = _HEADER.create(path)

    def __enter__(self) -> CodeFileWriter:
        self._out.__enter__()
        return self

    def append(self, codes: ArrayLike) -> None:
        """Append packed rows of shape (n, row_stride)."""
        codes = bits.as_codes(codes)
        if codes.shape[1] != self.row_stride:
            raise ValueError(f"rows are {codes.shape[1]} bytes, this file holds {self.row_stride}-byte rows")
        self._out.write(np.ascontiguousarray(codes).tobytes())
        self.n_rows += codes.shape[0]

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._out.write_header(self.n_bits, self.row_stride, 0, self.n_rows, self.fingerprint)
        self._out.__exit__(exc_type, exc, tb)
