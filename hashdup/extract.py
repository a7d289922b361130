"""Reading, hashing, decoding and describing files: the per-file work of ``hashdup index``.

:func:`extract` yields one :class:`Extracted` per input path, in input order, whatever runs the work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hashdup.descriptors import Descriptor
from hashdup.errors import ImageError
from hashdup.io import images

#: Descriptors are stored as float16; every descriptor leaves :func:`extract` rounded through it.
STORED_DTYPE = np.float16


@dataclass(frozen=True)
class Extracted:
    """What one file gave.

    ``ignored`` files are not images (no image signature and no image extension) and are left out of the catalogue;
    files with an ``error`` (a one-line reason) are recorded as skipped; the others have every field set and a
    ``descriptor`` row (float32 values rounded through float16).
    """

    position: int
    size: int | None = None
    mtime_ns: int | None = None
    blake2b: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None
    ignored: bool = False
    descriptor: NDArray[np.float32] | None = None


def describe_images(descriptor: Descriptor, pixels: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
    """Descriptors of decoded images, rounded through the stored dtype (float16)."""
    if not pixels:
        return np.zeros((0, descriptor.n_features), dtype=np.float32)
    return descriptor.describe(np.stack(pixels)).astype(STORED_DTYPE).astype(np.float32)


def extract_chunk(paths: Sequence[str], descriptor: Descriptor, start: int = 0) -> list[Extracted]:
    """Extract a chunk of files in one process; ``start`` is the position of ``paths[0]`` in the whole run."""
    out: list[Extracted | None] = [None] * len(paths)
    pending: list[tuple[int, FileInfo]] = []
    pixels: list[NDArray[np.uint8]] = []
    for n, path in enumerate(paths):
        size = mtime = None
        try:
            content = images.read_file(path, only_images=True)
            if content is None:
                out[n] = Extracted(start + n, ignored=True)
                continue
            size, mtime = content.size, content.mtime_ns
            digest = hashlib.blake2b(content.data, digest_size=16).hexdigest()
            img = images.decode(content.data, descriptor.image_size, name=path)
            pending.append((n, FileInfo(size, mtime, digest, img.width, img.height, img.format)))
            pixels.append(img.pixels)
        except ImageError as e:
            out[n] = Extracted(start + n, size, mtime, error=e.reason)
    X = describe_images(descriptor, pixels)
    for (n, f), row in zip(pending, X, strict=True):
        out[n] = Extracted(start + n, f.size, f.mtime_ns, f.blake2b, f.width, f.height, f.format, descriptor=row)
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class FileInfo:
    size: int
    mtime_ns: int
    blake2b: str
    width: int
    height: int
    format: str


def extract(paths: Sequence[str], descriptor: Descriptor, *, chunk_size: int = 32) -> Iterator[Extracted]:
    """Extract every file, yielding results in input order.

    Parameters
    ----------
    paths : sequence of str
        Absolute file paths.
    descriptor : Descriptor
    chunk_size : int
        Files handled together (one descriptor batch).

    Yields
    ------
    Extracted
        One per path, ``position`` 0, 1, 2, ...
    """
    for a in range(0, len(paths), chunk_size):
        yield from extract_chunk(paths[a : a + chunk_size], descriptor, a)
