"""Versioned, self-describing headers of hashdup's binary files (the code file and the bucket-table file).

Every such file starts with the same frame around the format's own fields (integers little-endian)::

      offset        size  field
           0           8  magic        identifies the format
           8           2  version      uint16
          10           2  header_size  uint16, bytes of the whole header: the body starts here
          12           …  fields       the format's own fields
    header_size - 16  16  checksum     blake2b-128 of (every header byte before it || blake2b-128 of the body)
    header_size        …  body

:class:`HeaderFormat` packs such a header and, on open, checks what the frame alone can check (length, magic,
version, header size) and, on request, the checksum over the body, always before any memory map is made; the
format checks its own fields and the file size in between, and :func:`map_array` maps the body's arrays only after
that. :class:`HeaderWriter` writes a file atomically: a placeholder header, the body, then the real header.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

from hashdup import bits
from hashdup.errors import IndexFileError
from hashdup.io.atomic import atomic_open

#: Bytes of the checksum that ends every header.
CHECKSUM_SIZE = 16
#: Bytes read, or array elements written, at a time while streaming a body.
_CHUNK = 1 << 22


def body_hash() -> hashlib.blake2b:
    """A fresh hash of a body, fed chunk by chunk; its ``digest()`` goes into :func:`checksum`."""
    return hashlib.blake2b(digest_size=CHECKSUM_SIZE)


def checksum(prefix: bytes, body_digest: bytes) -> bytes:
    """The header checksum: blake2b-128 of the header bytes before it followed by the body's digest."""
    return hashlib.blake2b(prefix + body_digest, digest_size=CHECKSUM_SIZE).digest()


def check_row_stride(path: Path, n_bits: int, row_stride: int) -> None:
    """Refuse an ``n_bits`` outside :mod:`hashdup.bits`'s range, or a ``row_stride`` that does not match it.

    Both are header fields of every file that holds or indexes packed codes.

    Raises
    ------
    IndexFileError
    """
    if not bits.MIN_BITS <= n_bits <= bits.MAX_BITS:
        raise IndexFileError(str(path), f"n_bits {n_bits} outside {bits.MIN_BITS}..{bits.MAX_BITS}")
    if row_stride != bits.row_bytes(n_bits):
        raise IndexFileError(str(path), f"row stride {row_stride} does not match n_bits {n_bits} "
                                        f"(expected {bits.row_bytes(n_bits)})")


def map_array(f: BinaryIO, dtype: DTypeLike, offset: int, shape: tuple[int, ...]) -> NDArray:
    """A read-only memory map of an array in an open file; call it only once the file has been checked.

    Parameters
    ----------
    f : binary file
        Open for reading.
    dtype : str, numpy dtype or scalar type
        With explicit byte order for multi-byte types (``"<u4"``).
    offset : int
        Byte offset of the array in the file.
    shape : tuple of int

    Returns
    -------
    ndarray
        A memory map, or a read-only empty array when ``shape`` has no elements (a memory map cannot be empty).
    """
    if math.prod(shape):
        return np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape)
    empty = np.zeros(shape, dtype=dtype)
    empty.flags.writeable = False
    return empty


class Header(NamedTuple):
    """A header read by :meth:`HeaderFormat.read`.

    Attributes
    ----------
    values : tuple
        The format's own fields, in the order of its layout (after magic, version and header size).
    raw : bytes
        The header's bytes, checksum included.
    file_size : int
        Size of the whole file in bytes, taken after the header was read.
    """

    values: tuple[Any, ...]
    raw: bytes
    file_size: int


class HeaderFormat:
    """The header of one binary file format: magic, version, the format's own fields, checksum.

    Parameters
    ----------
    magic : bytes
        8 bytes.
    version : int
        The only version this hashdup reads and writes.
    fields : str
        :mod:`struct` codes of the format's own fields, without byte order (little-endian is implied), e.g.
        ``"IIIQ16s"``; they follow magic, version and header size, and the checksum follows them.
    kind : str
        What error messages call a file of the format, e.g. ``"code file"``.
    format_name : str
        What the version error calls the format, e.g. ``"code file format"``.

    Attributes
    ----------
    size : int
        Bytes of the whole header, checksum included: where the body starts.
    """

    def __init__(self, magic: bytes, version: int, fields: str, *, kind: str, format_name: str) -> None:
        if len(magic) != 8:
            raise ValueError(f"magic must be 8 bytes, got {len(magic)}")
        self.magic = magic
        self.version = version
        self.kind = kind
        self.format_name = format_name
        self._struct = struct.Struct("<8sHH" + fields)
        self.size = self._struct.size + CHECKSUM_SIZE

    def __repr__(self) -> str:
        return f"HeaderFormat({self.magic!r}, version={self.version}, size={self.size})"

    def pack(self, values: Sequence[Any], body_digest: bytes) -> bytes:
        """The header of a file whose own fields are ``values`` and whose body hashes to ``body_digest``."""
        prefix = self._struct.pack(self.magic, self.version, self.size, *values)
        return prefix + checksum(prefix, body_digest)

    @contextlib.contextmanager
    def open(self, path: Path) -> Iterator[BinaryIO]:
        """Open ``path`` for reading; an ``OSError`` inside the block becomes an :class:`IndexFileError`."""
        try:
            with open(path, "rb") as f:
                yield f
        except OSError as e:
            raise IndexFileError(str(path), f"cannot read {self.kind}: {e.strerror or e}") from e

    def read(self, f: BinaryIO, path: Path) -> Header:
        """Read the header from the start of ``f`` and check its length, magic, version and header size.

        Raises
        ------
        IndexFileError
            Naming ``path`` and the field that is wrong.
        """
        raw = f.read(self.size)
        file_size = os.fstat(f.fileno()).st_size
        if len(raw) < self.size:
            raise IndexFileError(str(path), f"{self.kind} is {len(raw)} bytes, shorter than its {self.size}-byte "
                                            f"header")
        magic, version, header_size, *values = self._struct.unpack_from(raw)
        if magic != self.magic:
            raise IndexFileError(str(path), f"not a hashdup {self.kind} (magic {magic!r}, expected {self.magic!r})")
        if version != self.version:
            raise IndexFileError(str(path), f"{self.format_name} version {version}, this hashdup reads version "
                                            f"{self.version}")
        if header_size != self.size:
            raise IndexFileError(str(path), f"header size {header_size}, expected {self.size}")
        return Header(tuple(values), raw, file_size)

    def verify_body(self, f: BinaryIO, path: Path, header: Header, body_size: int) -> None:
        """Read the ``body_size`` bytes that follow the header (``f`` is where :meth:`read` left it) in chunks and
        compare their checksum with the header's.

        Raises
        ------
        IndexFileError
            When the file ends early or the checksum does not match.
        """
        body = body_hash()
        left = body_size
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                raise IndexFileError(str(path), f"{self.kind} shrank while it was read")
            body.update(chunk)
            left -= len(chunk)
        prefix = header.raw[: self._struct.size]
        if checksum(prefix, body.digest()) != header.raw[self._struct.size :]:
            raise IndexFileError(str(path), f"checksum mismatch: the {self.kind} is corrupt")

    def create(self, path: str | os.PathLike[str]) -> HeaderWriter:
        """A :class:`HeaderWriter` of a new file of this format at ``path``."""
        return HeaderWriter(self, path)


class HeaderWriter:
    """Write a file of one :class:`HeaderFormat` atomically: a zero header, the body, then the real header.

    Use as a context manager: :meth:`write` the body, then :meth:`write_header` once its fields are known. The file
    appears under its name only when the block ends without error; until then the previous file (if any) stays.
    """

    def __init__(self, fmt: HeaderFormat, path: str | os.PathLike[str]) -> None:
        self._fmt = fmt
        self._ctx = atomic_open(path)
        self._f: BinaryIO | None = None
        self._body = body_hash()
        self._header_written = False

    def __enter__(self) -> HeaderWriter:
        self._f = self._ctx.__enter__()
        self._f.write(b"\0" * self._fmt.size)
        return self

    def _file(self) -> BinaryIO:
        if self._f is None:
            raise RuntimeError(f"{self._fmt.kind}: write inside the `with` block of the HeaderWriter, not before it")
        return self._f

    def write(self, data: bytes) -> None:
        """Append ``data`` to the body."""
        self._file().write(data)
        self._body.update(data)

    def write_array(self, arr: NDArray) -> None:
        """Append the bytes of ``arr`` in C order, in chunks of elements (bounded temporary memory)."""
        flat = np.asarray(arr).reshape(-1)
        for start in range(0, flat.shape[0], _CHUNK):
            self.write(flat[start : start + _CHUNK].tobytes())

    def write_header(self, *values: Any) -> None:
        """Write the header, the format's own fields being ``values``, over the placeholder."""
        f = self._file()
        f.seek(0)
        f.write(self._fmt.pack(values, self._body.digest()))
        f.flush()
        self._header_written = True

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._header_written:
            err = RuntimeError(f"{self._fmt.kind} closed before its header was written")
            self._ctx.__exit__(RuntimeError, err, None)
            raise err
        self._ctx.__exit__(exc_type, exc, tb)
