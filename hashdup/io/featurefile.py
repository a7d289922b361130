"""The feature file: every indexed image's local features (keypoints, packed ORB descriptors, band-passed
thumbnail), stored once at index time so that verifying a pair of images never decodes or filters them again.

The header's frame (magic, version, size, checksum) is :mod:`hashdup.io.header`'s; this module holds the feature
file's own fields, its sections and their checks.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
from numpy.typing import NDArray

from hashdup.errors import IndexFileError
from hashdup.io.header import HeaderFormat, map_array

#: Keypoint coordinates are stored as unsigned 16-bit fixed point with this many steps per pixel.
COORD_SCALE = 64
#: Bytes of one packed ORB descriptor (256 bits).
DESCRIPTOR_BYTES = 32
#: The band-passed thumbnail is stored as int8 with this many steps per unit of its local contrast (values beyond
#: ±127/BAND_SCALE, about one pixel in 100,000, are clipped).
BAND_SCALE = 32
_RECORD = struct.Struct("<4sHHHHH")  # tag, frame h, frame w, thumb h, thumb w, keypoints
_TAG = b"LF02"  # LF01 held the contrast-stretched thumbnail (uint8) instead of the band-passed one


@dataclass(frozen=True)
class LocalFeatures:
    """The local features of one image.

    Attributes
    ----------
    frame_shape : (int, int)
        (height, width) of the frame the keypoints were found in, in pixels.
    keypoints : ndarray of uint16, shape (k, 2)
        (x, y) of each keypoint in the frame, in 1/:data:`COORD_SCALE` pixel.
    descriptors : ndarray of uint8, shape (k, 32)
        The keypoints' 256-bit ORB descriptors, packed.
    thumb : ndarray of int8, shape (th, tw)
        The frame's greyscale, contrast-stretched, shrunk to at most
        :attr:`hashdup.descriptors.local.LocalExtractor.thumb_pixels` pixels and band-passed
        (:func:`hashdup.descriptors.local.band_pass`), in steps of 1/:data:`BAND_SCALE`: what the photometric check
        of :mod:`hashdup.dedup.verify` compares (:meth:`band`).
    """

    frame_shape: tuple[int, int]
    keypoints: NDArray[np.uint16]
    descriptors: NDArray[np.uint8]
    thumb: NDArray[np.int8]

    @property
    def nbytes(self) -> int:
        """Bytes this record takes in a feature file (keypoints, descriptors and thumbnail)."""
        return self.keypoints.nbytes + self.descriptors.nbytes + self.thumb.nbytes

    def band(self) -> NDArray[np.float32]:
        """The band-passed thumbnail as float32 (:attr:`thumb` / :data:`BAND_SCALE`)."""
        return self.thumb.astype(np.float32) * np.float32(1 / BAND_SCALE)

    def points(self) -> NDArray[np.float32]:
        """Keypoint coordinates (x, y) in frame pixels, float32, shape (k, 2)."""
        return self.keypoints.astype(np.float32) / np.float32(COORD_SCALE)

    def to_bytes(self) -> bytes:
        """A compact, self-checking serialisation (little-endian) for the indexing journal; see :meth:`from_bytes`."""
        th, tw = self.thumb.shape
        head = _RECORD.pack(_TAG, *self.frame_shape, th, tw, len(self.keypoints))
        return b"".join([head, np.ascontiguousarray(self.keypoints, dtype="<u2").tobytes(),
                         np.ascontiguousarray(self.descriptors).tobytes(), np.ascontiguousarray(self.thumb).tobytes()])

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        """The record :meth:`to_bytes` wrote.

        Raises
        ------
        ValueError
            When ``data`` is not such a record or its length does not match its sizes.
        """
        if len(data) < _RECORD.size:
            raise ValueError(f"local-feature record of {len(data)} bytes is shorter than its header")
        tag, fh, fw, th, tw, k = _RECORD.unpack_from(data)
        expected = _RECORD.size + k * (4 + DESCRIPTOR_BYTES) + th * tw
        if tag != _TAG or len(data) != expected:
            raise ValueError(f"not a local-feature record (tag {tag!r}, {len(data)} bytes, expected {expected})")
        o = _RECORD.size
        kp = np.frombuffer(data, dtype="<u2", count=2 * k, offset=o).reshape(k, 2).astype(np.uint16)
        o += 4 * k
        desc = np.frombuffer(data, dtype=np.uint8, count=k * DESCRIPTOR_BYTES, offset=o).reshape(k, DESCRIPTOR_BYTES)
        o += k * DESCRIPTOR_BYTES
        thumb = np.frombuffer(data, dtype=np.int8, count=th * tw, offset=o).reshape(th, tw)
        return cls((fh, fw), kp, desc.copy(), thumb.copy())


class Features(Protocol):
    """What holds every image's local features, by id: a :class:`FeatureFile`, or a list of records."""

    def __getitem__(self, i: int, /) -> LocalFeatures: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class FeatureTable:
    """Every image's local features as flat arrays (compressed-sparse-row), the form compiled code takes them in.

    Image ``i``'s descriptors are ``words[kp_offsets[i]:kp_offsets[i + 1]]`` (each 4 uint64 words) and its
    band-passed thumbnail ``thumbs[thumb_offsets[i]:...]`` (int8, row-major, ``shapes[i, 2:]``); ``shapes[i]`` is
    (frame height, frame width, thumbnail height, thumbnail width). :meth:`FeatureFile.table` gives a table whose
    big arrays are views of the memory map (nothing copied); :meth:`of` builds one from records.
    """

    words: NDArray[np.uint64]
    kp_offsets: NDArray[np.int64]
    thumbs: NDArray[np.int8]
    thumb_offsets: NDArray[np.int64]
    shapes: NDArray[np.int64]

    @classmethod
    def of(cls, records: Sequence[LocalFeatures]) -> FeatureTable:
        """The table of ``records`` (row i for record i), copied into new arrays."""
        kp = np.zeros(len(records) + 1, dtype=np.int64)
        kp[1:] = np.cumsum([len(r.descriptors) for r in records])
        th = np.zeros(len(records) + 1, dtype=np.int64)
        th[1:] = np.cumsum([r.thumb.size for r in records])
        words = np.zeros((int(kp[-1]), DESCRIPTOR_BYTES // 8), dtype=np.uint64)
        thumbs = np.zeros(int(th[-1]), dtype=np.int8)
        shapes = np.zeros((len(records), 4), dtype=np.int64)
        for i, r in enumerate(records):
            words[kp[i] : kp[i + 1]] = np.ascontiguousarray(r.descriptors, dtype=np.uint8).view(np.uint64)
            thumbs[th[i] : th[i + 1]] = np.asarray(r.thumb, dtype=np.int8).reshape(-1)
            shapes[i] = (*r.frame_shape, *r.thumb.shape)
        return cls(words, kp, thumbs, th, shapes)


MAGIC = b"HDUPFEAT"
#: 2: the thumbnails are stored band-passed (int8); version 1 held them contrast-stretched (uint8).
VERSION = 2
# own fields after magic, version, header size: n_rows, n_keypoints, thumb_bytes, frame, max_keypoints,
# thumb_pixels, flags, reserved (so that the body starts 8-byte aligned)
_HEADER = HeaderFormat(MAGIC, VERSION, "QQQIIIII", kind="feature file", format_name="feature file format")
HEADER_SIZE = _HEADER.size  # 72


def _pad8(n: int) -> int:
    return -n % 8


def _layout(n_rows: int, n_keypoints: int, thumb_bytes: int) -> list[tuple[str, str, int, tuple[int, ...]]]:
    """``(name, dtype, offset, shape)`` of each section of a feature file, in file order, each 8-byte aligned."""
    sections = [("shapes", "<u2", (n_rows, 4)), ("kp_offsets", "<u8", (n_rows + 1,)),
                ("thumb_offsets", "<u8", (n_rows + 1,)), ("keypoints", "<u2", (n_keypoints, 2)),
                ("descriptors", "u1", (n_keypoints, DESCRIPTOR_BYTES)), ("thumbs", "i1", (thumb_bytes,))]
    out, offset = [], HEADER_SIZE
    for name, dtype, shape in sections:
        out.append((name, dtype, offset, shape))
        size = np.dtype(dtype).itemsize * math.prod(shape)  # Python integers: no overflow on a damaged header
        offset += size + _pad8(size)
    out.append(("end", "u1", offset, (0,)))
    return out


class FeatureFile:
    """A read-only, memory-mapped file of local features, one record per indexed image.

    Layout (all integers little-endian)::

        offset  size  field
             0     8  magic           b"HDUPFEAT"
             8     2  version         uint16, currently 2
            10     2  header_size     uint16, 72; the first section starts here
            12     8  n_rows          uint64, images (row i is catalogue id i)
            20     8  n_keypoints     uint64, keypoints of all images
            28     8  thumb_bytes     uint64, thumbnail bytes of all images
            36     4  frame           uint32, longest side of the frames the keypoints are in, in pixels
            40     4  max_keypoints   uint32, most keypoints of one image
            44     4  thumb_pixels    uint32, most thumbnail pixels of one image
            48     4  flags           uint32, 0 (reserved)
            52     4  reserved        uint32, 0
            56    16  checksum        blake2b-128 of (bytes 0..55 || blake2b-128 of the body)
            72     …  body            the sections below, in order, each padded with zeros to a multiple of 8 bytes

        section        dtype   shape               content
        shapes         <u2     (n_rows, 4)         frame height, frame width, thumbnail height, thumbnail width
        kp_offsets     <u8     (n_rows + 1,)       image i's keypoints are rows kp_offsets[i]:kp_offsets[i+1]
        thumb_offsets  <u8     (n_rows + 1,)       image i's thumbnail is thumbs[thumb_offsets[i]:...[i+1]]
        keypoints      <u2     (n_keypoints, 2)    (x, y) in the frame, in 1/64 pixel
        descriptors    u1      (n_keypoints, 32)   256-bit ORB descriptors, packed
        thumbs         i1      (thumb_bytes,)      band-passed thumbnails in 1/32 steps, row-major, one after another

    :meth:`open` checks magic, version and sizes against the file length, then (unless ``verify=False``) the
    checksum, before any memory map is made, and then that the offsets and shapes agree with each other.

    Attributes
    ----------
    path : pathlib.Path
    n_rows, n_keypoints, thumb_bytes, frame, max_keypoints, thumb_pixels : int
    file_size : int
        Bytes of the whole file.
    """

    def __init__(self, path: Path, fields: tuple[int, ...], arrays: dict[str, NDArray], file_size: int) -> None:
        self.path = path
        (self.n_rows, self.n_keypoints, self.thumb_bytes, self.frame, self.max_keypoints,
         self.thumb_pixels) = fields
        self.file_size = file_size
        self._a = arrays

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return f"FeatureFile({str(self.path)!r}, n_rows={self.n_rows}, frame={self.frame})"

    @property
    def bytes_per_image(self) -> float:
        """Bytes of the file per image (0 for an empty file)."""
        return self.file_size / self.n_rows if self.n_rows else 0.0

    def table(self) -> FeatureTable:
        """The whole file as a :class:`FeatureTable`: descriptors and thumbnails are views of the memory map."""
        a = self._a
        return FeatureTable(a["descriptors"].view(np.uint64), a["kp_offsets"].astype(np.int64),
                            a["thumbs"], a["thumb_offsets"].astype(np.int64), a["shapes"].astype(np.int64))

    def __getitem__(self, i: int) -> LocalFeatures:
        """Image ``i``'s features, as read-only views of the memory map."""
        if not 0 <= i < self.n_rows:
            raise IndexError(f"image {i} out of range 0..{self.n_rows - 1}")
        a = self._a
        fh, fw, th, tw = (int(v) for v in a["shapes"][i])
        k0, k1 = int(a["kp_offsets"][i]), int(a["kp_offsets"][i + 1])
        t0 = int(a["thumb_offsets"][i])
        return LocalFeatures((fh, fw), a["keypoints"][k0:k1], a["descriptors"][k0:k1],
                             a["thumbs"][t0 : t0 + th * tw].reshape(th, tw))

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = True) -> FeatureFile:
        """Open and validate a feature file.

        Raises
        ------
        IndexFileError
            When the file is missing, too short, or has a wrong magic, version, header size, flags, size, checksum,
            or offsets and shapes that disagree; size and checksum are checked before any memory map is made.
        """
        path = Path(path)
        with _HEADER.open(path) as f:
            return _open_checked(f, path, verify)

    @staticmethod
    def write(path: str | os.PathLike[str], records: Sequence[LocalFeatures], *, frame: int, max_keypoints: int,
              thumb_pixels: int) -> None:
        """Write ``records`` (row i for catalogue id i) to ``path`` atomically.

        Raises
        ------
        ValueError
            When a record does not fit the file's settings (frame, keypoints, thumbnail size).
        """
        n = len(records)
        shapes = np.zeros((n, 4), dtype="<u2")
        kp_offsets = np.zeros(n + 1, dtype="<u8")
        thumb_offsets = np.zeros(n + 1, dtype="<u8")
        for i, r in enumerate(records):
            th, tw = r.thumb.shape
            k = len(r.keypoints)
            if max(r.frame_shape) != frame or k > max_keypoints or th * tw > thumb_pixels or r.descriptors.shape != (
                    k, DESCRIPTOR_BYTES) or r.thumb.dtype != np.int8:
                raise ValueError(f"record {i} (frame {r.frame_shape}, {k} keypoints, {r.thumb.dtype} thumbnail "
                                 f"{th}×{tw}) does not fit frame {frame}, {max_keypoints} keypoints, {thumb_pixels} "
                                 "int8 thumbnail pixels")
            shapes[i] = (*r.frame_shape, th, tw)
            kp_offsets[i + 1] = kp_offsets[i] + k
            thumb_offsets[i + 1] = thumb_offsets[i] + th * tw
        n_kp, n_thumb = int(kp_offsets[-1]), int(thumb_offsets[-1])
        with _HEADER.create(path) as out:
            def section(arr: NDArray) -> None:
                out.write_array(arr)
                out.write(b"\0" * _pad8(arr.nbytes))

            section(shapes)
            section(kp_offsets)
            section(thumb_offsets)
            for name, dtype in (("keypoints", "<u2"), ("descriptors", "u1"), ("thumbs", "i1")):
                size = 0
                for r in records:
                    arr = {"keypoints": r.keypoints, "descriptors": r.descriptors, "thumbs": r.thumb}[name]
                    data = np.ascontiguousarray(arr, dtype=dtype).tobytes()
                    out.write(data)
                    size += len(data)
                out.write(b"\0" * _pad8(size))
            out.write_header(n, n_kp, n_thumb, frame, max_keypoints, thumb_pixels, 0, 0)


def _open_checked(f: BinaryIO, path: Path, verify: bool) -> FeatureFile:
    header = _HEADER.read(f, path)
    n_rows, n_kp, n_thumb, frame, max_kp, thumb_pixels, flags, reserved = header.values
    if flags != 0 or reserved != 0:
        raise IndexFileError(str(path), f"unknown flags {flags:#x} or reserved field {reserved:#x} (expected 0)")
    if not 32 <= frame <= 1023:
        raise IndexFileError(str(path), f"frame {frame} outside 32..1023 pixels")
    if n_kp > n_rows * max_kp or n_thumb > n_rows * thumb_pixels:
        raise IndexFileError(str(path), f"{n_kp} keypoints and {n_thumb} thumbnail bytes do not fit {n_rows} images "
                                        f"of at most {max_kp} keypoints and {thumb_pixels} pixels")
    layout = _layout(n_rows, n_kp, n_thumb)
    expected = layout[-1][2]
    if header.file_size != expected:
        raise IndexFileError(str(path), f"file is {header.file_size} bytes, header says {n_rows} images, {n_kp} "
                                        f"keypoints and {n_thumb} thumbnail bytes ({expected} bytes)")
    if verify:
        _HEADER.verify_body(f, path, header, expected - HEADER_SIZE)
    arrays = {name: np.asarray(map_array(f, dtype, offset, shape)) for name, dtype, offset, shape in layout[:-1]}
    for name in ("shapes", "kp_offsets", "thumb_offsets"):  # small: read once, indexed without the map's overhead
        arrays[name] = np.array(arrays[name])
    _check_sections(path, arrays, n_rows, n_kp, n_thumb, frame, max_kp, thumb_pixels)
    return FeatureFile(path, (n_rows, n_kp, n_thumb, frame, max_kp, thumb_pixels), arrays, header.file_size)


def _check_sections(path: Path, a: dict[str, NDArray], n_rows: int, n_kp: int, n_thumb: int, frame: int,
                    max_kp: int, thumb_pixels: int) -> None:
    """Offsets start at 0, never decrease, end at the totals; each image's sizes fit the header's limits."""
    shapes = np.asarray(a["shapes"], dtype=np.int64)
    for name, total in (("kp_offsets", n_kp), ("thumb_offsets", n_thumb)):
        off = np.asarray(a[name], dtype=np.uint64)
        if off[0] != 0 or off[-1] != total or (n_rows and bool((off[1:] < off[:-1]).any())):
            raise IndexFileError(str(path), f"{name} are not increasing from 0 to {total}")
    if not n_rows:
        return
    counts = np.diff(np.asarray(a["kp_offsets"], dtype=np.int64))
    areas = shapes[:, 2] * shapes[:, 3]
    bad = np.flatnonzero((counts > max_kp) | (np.maximum(shapes[:, 0], shapes[:, 1]) != frame)
                         | (areas != np.diff(np.asarray(a["thumb_offsets"], dtype=np.int64)))
                         | (areas > thumb_pixels) | (areas == 0))
    if len(bad):
        i = int(bad[0])
        raise IndexFileError(str(path), f"image {i} has {int(counts[i])} keypoints, frame {tuple(shapes[i, :2])} and "
                                        f"thumbnail {tuple(shapes[i, 2:])}, which the header's limits or offsets "
                                        f"do not allow")
