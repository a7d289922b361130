"""A seeded corpus of hostile image files for the fuzz test (``tests/test_fuzz.py``) and ``scripts/fuzz.py``.

Each case is made from a small valid *seed file* (a real photo from ``sample_data/photos`` re-encoded as JPEG,
progressive JPEG, PNG in five modes, GIF, animated GIF, TIFF in six variants, WebP lossy/lossless/animated or BMP)
by one *mutation*: truncation, bit flips, byte-range overwrites, insertions, deletions, repeated ranges,
format-aware corruption of dimension and length fields (PNG IHDR with its CRC fixed, JPEG SOF, GIF screen and frame
descriptors, TIFF tags, WebP VP8/VP8L/VP8X, BMP), header-only files, many JPEG scans, concatenations, or a
non-image (zero bytes, random bytes, text, random bytes behind an image signature). Case ``i`` of seed ``S`` is a
pure function of ``(S, i)``: ``make_case(S, i)`` rebuilds it anywhere. The oracle and the isolated runner are in
:mod:`tests.fuzz_runner`.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "sample_data" / "photos" / "chelsea.jpg"


@dataclass(frozen=True)
class Case:
    """One fuzz case: ``data`` to be stored as a file called ``name``; ``kind`` names its seed and mutation."""

    seed: int
    index: int
    name: str
    kind: str
    data: bytes

    @property
    def id(self) -> str:
        return f"{self.seed}:{self.index}"


# ------------------------------------------------------------------------------------------------------- seed files


def _save(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@cache
def seed_files() -> dict[str, tuple[str, bytes]]:
    """Small valid files cut from a real photo: ``{seed name: (extension, bytes)}``, 48–96 px on a side."""
    from PIL import Image

    photo = Image.open(PHOTO).convert("RGB")

    def at(w: int, h: int) -> Image.Image:
        return photo.resize((w, h), Image.Resampling.LANCZOS)

    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [at(48, 40).rotate(a) for a in (0, 10, 20)]
    palette = at(64, 64).quantize(64)
    palette.info["transparency"] = 0
    sixteen = Image.fromarray(np.asarray(at(56, 48).convert("L"), dtype=np.uint16) * 257)
    seeds = {
        "jpeg": (".jpg", _save(at(80, 60), "JPEG", quality=85)),
        "jpeg-progressive": (".jpg", _save(at(64, 64), "JPEG", quality=80, progressive=True, optimize=True)),
        "jpeg-exif-restart": (".jpeg", _save(at(72, 48), "JPEG", quality=75, exif=exif, restart_marker_blocks=4,
                                             subsampling=0)),
        "jpeg-gray": (".jpg", _save(at(48, 64).convert("L"), "JPEG", quality=70)),
        "jpeg-cmyk": (".jpg", _save(at(56, 56).convert("CMYK"), "JPEG", quality=80)),
        "png": (".png", _save(at(64, 48), "PNG")),
        "png-rgba": (".png", _save(at(48, 48).convert("RGBA"), "PNG", optimize=True)),
        "png-palette": (".png", _save(palette, "PNG")),
        "png-16bit": (".png", _save(sixteen, "PNG")),
        "png-1bit": (".png", _save(at(96, 64).convert("1"), "PNG")),
        "gif": (".gif", _save(at(64, 48), "GIF")),
        "gif-animated": (".gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50,
                                       loop=0)),
        "tiff": (".tif", _save(at(48, 48), "TIFF")),
        "tiff-lzw": (".tiff", _save(at(64, 48), "TIFF", compression="tiff_lzw")),
        "tiff-deflate": (".tiff", _save(at(48, 64), "TIFF", compression="tiff_adobe_deflate")),
        "tiff-jpeg": (".tif", _save(at(64, 64), "TIFF", compression="jpeg")),
        "tiff-cmyk-packbits": (".tif", _save(at(48, 40).convert("CMYK"), "TIFF", compression="packbits")),
        "tiff-16bit": (".tif", _save(sixteen, "TIFF")),
        "webp": (".webp", _save(at(64, 48), "WEBP", quality=70)),
        "webp-lossless": (".webp", _save(at(48, 48).convert("RGBA"), "WEBP", lossless=True)),
        "webp-animated": (".webp", _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50)),
        "bmp": (".bmp", _save(at(40, 32), "BMP")),
    }
    return seeds


# ------------------------------------------------------------------------------------------------ format structure


def _png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset of the length field, type, data length) of every PNG chunk that fits in ``data``."""
    out, at = [], 8
    while at + 12 <= len(data):
        n = struct.unpack(">I", data[at : at + 4])[0]
        out.append((at, data[at + 4 : at + 8], n))
        at += 12 + n
    return out


def _png_put(data: bytearray, chunk_at: int, field: int, value: bytes) -> None:
    """Overwrite bytes inside a PNG chunk's data and fix its CRC, so that the corruption reaches the decoder."""
    n = struct.unpack(">I", data[chunk_at : chunk_at + 4])[0]
    data[chunk_at + 8 + field : chunk_at + 8 + field + len(value)] = value
    body = bytes(data[chunk_at + 4 : chunk_at + 8 + n])
    data[chunk_at + 8 + n : chunk_at + 12 + n] = struct.pack(">I", zlib.crc32(body))


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the marker, marker byte, segment length) of each JPEG header segment, up to the first SOS."""
    out, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        n = struct.unpack(">H", data[at + 2 : at + 4])[0]
        out.append((at, marker, n))
        if marker == 0xDA:
            break
        at += 2 + n
    return out


def _tiff_entries(data: bytes) -> tuple[str, list[tuple[int, int]]]:
    """Byte order and (offset of the entry, tag) of every entry of the first TIFF IFD."""
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return order, []
    n = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
    return order, [(ifd + 2 + 12 * k, struct.unpack(order + "H", data[ifd + 2 + 12 * k : ifd + 4 + 12 * k])[0])
                   for k in range(n) if ifd + 14 + 12 * k <= len(data)]


def _riff_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, fourcc, size) of the top-level chunks of a RIFF (WebP) file."""
    out, at = [], 12
    while at + 8 <= len(data):
        n = struct.unpack("<I", data[at + 4 : at + 8])[0]
        out.append((at, data[at : at + 4], n))
        at += 8 + n + (n & 1)
    return out


def _gif_descriptors(data: bytes) -> list[int]:
    """Offsets of the image descriptors (0x2C) of a GIF, found by walking its blocks."""
    out = []
    flags = data[10]
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while at < len(data):
        b = data[at]
        if b == 0x3B:
            break
        if b == 0x21:
            at += 2
        elif b == 0x2C:
            out.append(at)
            flags = data[at + 9] if at + 9 < len(data) else 0
            at += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            break
        while at < len(data) and data[at]:  # data sub-blocks
            at += data[at] + 1
        at += 1
    return out


def _dimension(rng: np.random.Generator, bits: int) -> int:
    """A hostile value for a ``bits``-bit dimension field: zero, one, huge, the top bit, or random."""
    top = (1 << bits) - 1
    return int(rng.choice([0, 1, top, 1 << (bits - 1), top - 1, int(rng.integers(2, top)),
                           int(rng.integers(2, min(top, 1 << 17)))]))


def set_dimensions(data: bytes, seed: str, width: int | None = None, height: int | None = None, *,
                   gif_places: list[int] | None = None) -> bytes:
    """The seed file ``data`` (of seed ``seed``) claiming another width and/or height, in every field that holds
    them: PNG IHDR (CRC fixed), JPEG SOF, GIF logical screen and frame descriptors (or the offsets ``gif_places``),
    TIFF ImageWidth/ImageLength (rewritten as LONG), WebP VP8X canvas, VP8L and VP8 headers, BMP. Values are
    masked to the field's width."""
    out = bytearray(data)
    if seed.startswith("png"):
        at = _png_chunks(data)[0][0]  # IHDR comes first
        w, h = struct.unpack(">II", data[at + 8 : at + 16])
        _png_put(out, at, 0, struct.pack(">II", (w if width is None else width) & 0xFFFFFFFF,
                                         (h if height is None else height) & 0xFFFFFFFF))
    elif seed.startswith("jpeg"):
        for at, marker, _ in _jpeg_segments(data):
            if marker in (0xC0, 0xC1, 0xC2):
                if height is not None:
                    out[at + 5 : at + 7] = struct.pack(">H", height & 0xFFFF)
                if width is not None:
                    out[at + 7 : at + 9] = struct.pack(">H", width & 0xFFFF)
    elif seed.startswith("gif"):
        places = gif_places if gif_places is not None else [6] + [d + 5 for d in _gif_descriptors(data)]
        for at in places:
            if width is not None:
                out[at : at + 2] = struct.pack("<H", width & 0xFFFF)
            if height is not None:
                out[at + 2 : at + 4] = struct.pack("<H", height & 0xFFFF)
    elif seed.startswith("tiff"):
        order, entries = _tiff_entries(data)
        for at, tag in entries:
            value = width if tag == 256 else height if tag == 257 else None
            if value is not None:
                out[at + 2 : at + 12] = struct.pack(order + "HII", 4, 1, value & 0xFFFFFFFF)
    elif seed.startswith("webp"):
        for at, fourcc, _ in _riff_chunks(data):
            body = at + 8
            if fourcc == b"VP8X":  # canvas width-1, height-1: 24 bits each
                if width is not None:
                    out[body + 4 : body + 7] = ((width - 1) & 0xFFFFFF).to_bytes(3, "little")
                if height is not None:
                    out[body + 7 : body + 10] = ((height - 1) & 0xFFFFFF).to_bytes(3, "little")
            elif fourcc == b"VP8L":  # 14-bit width-1 and height-1 after the 0x2f signature
                v = int.from_bytes(data[body + 1 : body + 5], "little")
                if width is not None:
                    v = (v & ~0x3FFF) | ((width - 1) & 0x3FFF)
                if height is not None:
                    v = (v & ~(0x3FFF << 14)) | (((height - 1) & 0x3FFF) << 14)
                out[body + 1 : body + 5] = v.to_bytes(4, "little")
            elif fourcc == b"VP8 ":  # 14-bit width and height (2 scale bits above) after the start code
                if width is not None:
                    out[body + 6 : body + 8] = struct.pack("<H", width & 0xFFFF)
                if height is not None:
                    out[body + 8 : body + 10] = struct.pack("<H", height & 0xFFFF)
    elif seed == "bmp":
        if width is not None:
            out[18:22] = struct.pack("<i", width)
        if height is not None:
            out[22:26] = struct.pack("<i", height)
    return bytes(out)


def _dims(data: bytes, seed: str, rng: np.random.Generator) -> bytes:
    """Set the image's stored width and/or height to hostile values (the fields a decompression bomb lies in)."""
    which = int(rng.integers(1, 4))  # 1 width, 2 height, 3 both
    if seed == "bmp":
        values = [-1, 0, 2**31 - 1, -(2**31), 65536, 1 << 20, -65536]
        w, h = (int(rng.choice(values)) for _ in range(2))
    else:
        bits = 31 if seed.startswith(("png", "tiff")) else 24 if seed.startswith("webp") else 16
        w, h = _dimension(rng, bits), _dimension(rng, bits)
    places = None
    if seed.startswith("gif"):  # the logical screen, some frames, or both
        every = [6] + [d + 5 for d in _gif_descriptors(data)]
        places = sorted(rng.choice(every, size=int(rng.integers(1, len(every) + 1)), replace=False).tolist())
    return set_dimensions(data, seed, w if which & 1 else None, h if which & 2 else None, gif_places=places)


def _lengths(data: bytes, seed: str, rng: np.random.Generator) -> bytes:
    """Corrupt a chunk, segment, block or tag length/count/offset field (or a format parameter) of the file."""
    out = bytearray(data)

    def hostile(bits: int) -> int:
        return _dimension(rng, bits)

    if seed.startswith("png"):
        chunks = _png_chunks(data)
        at, kind, n = chunks[int(rng.integers(len(chunks)))]
        if kind == b"IHDR" and rng.random() < 0.7:  # bit depth, colour type, compression, filter, interlace
            field = int(rng.integers(8, 13))
            _png_put(out, at, field, bytes([int(rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 255]))]))
        else:
            out[at : at + 4] = struct.pack(">I", hostile(31))
    elif seed.startswith("jpeg"):
        segments = _jpeg_segments(data)
        at, marker, n = segments[int(rng.integers(len(segments)))]
        if marker in (0xC0, 0xC1, 0xC2) and rng.random() < 0.5:  # precision or number of components
            field = int(rng.choice([4, 9]))
            out[at + field] = int(rng.choice([0, 1, 2, 3, 4, 5, 8, 12, 16, 255]))
        else:
            out[at + 2 : at + 4] = struct.pack(">H", int(rng.choice([0, 1, 2, 3, n - 1, n + 1, 0xFFFF,
                                                                       int(rng.integers(0, 0x10000))])))
    elif seed.startswith("gif"):
        descriptors = _gif_descriptors(data)
        choice = int(rng.integers(3))
        if choice == 0 and descriptors:  # the LZW minimum code size
            out[min(descriptors[-1] + 10, len(out) - 1)] = int(rng.choice([0, 1, 2, 8, 11, 12, 13, 255]))
        elif choice == 1:  # the global colour table's flags and size
            out[10] = int(rng.integers(256))
        else:  # a data sub-block's size byte
            pos = int(rng.integers(13, len(out)))
            out[pos] = int(rng.choice([0, 1, 254, 255]))
    elif seed.startswith("tiff"):
        order, entries = _tiff_entries(data)
        if rng.random() < 0.15:  # IFD offset, or the entry count
            if rng.random() < 0.5:
                out[4:8] = struct.pack(order + "I", hostile(32))
            else:
                ifd = struct.unpack(order + "I", data[4:8])[0]
                out[ifd : ifd + 2] = struct.pack(order + "H", hostile(16))
        else:
            at, _tag = entries[int(rng.integers(len(entries)))]
            field = int(rng.choice([2, 4, 8]))  # type, count, value/offset
            width = 2 if field == 2 else 4
            endian = "little" if order == "<" else "big"
            out[at + field : at + field + width] = hostile(8 * width).to_bytes(width, endian)
    elif seed.startswith("webp"):
        chunks = _riff_chunks(data)
        if rng.random() < 0.3:
            out[4:8] = struct.pack("<I", hostile(32))  # RIFF size
        else:
            at, _, _ = chunks[int(rng.integers(len(chunks)))]
            out[at + 4 : at + 8] = struct.pack("<I", hostile(32))
    elif seed == "bmp":
        field = int(rng.choice([2, 10, 14, 26, 28, 30, 34, 46]))  # size, data offset, header size, planes, bpp, ...
        out[field : field + 2] = struct.pack("<H", hostile(16))
    return bytes(out)


def _header_only(data: bytes, seed: str, rng: np.random.Generator) -> bytes:
    """The file cut where its pixel data begins (sometimes with an end marker added back)."""
    if seed.startswith("png"):
        cut = next((at for at, kind, _ in _png_chunks(data) if kind == b"IDAT"), len(data))
        return data[:cut] + (b"\0\0\0\0IEND\xaeB`\x82" if rng.random() < 0.5 else b"")
    if seed.startswith("jpeg"):
        at, _marker, n = _jpeg_segments(data)[-1]
        return data[: at + 2 + n] + (b"\xff\xd9" if rng.random() < 0.5 else b"")
    if seed.startswith("gif"):
        d = _gif_descriptors(data)
        return data[: (d[0] + 10 if d else 13)] + (b";" if rng.random() < 0.5 else b"")
    if seed.startswith("tiff"):
        _order, entries = _tiff_entries(data)
        end = max((at + 12 for at, _ in entries), default=8) + 4
        return data[: max(end, 8)]
    if seed.startswith("webp"):
        return data[: 12 + 8 + int(rng.integers(0, 11))]
    return data[: 14 + 40]


def _many_scans(data: bytes, seed: str, rng: np.random.Generator) -> bytes:
    """A JPEG whose (possibly huge) frame is followed by thousands of empty scans: slow in naive decoders."""
    if not seed.startswith("jpeg"):
        return _dims(data, seed, rng)
    out = bytearray(data)
    segments = _jpeg_segments(data)
    side = int(rng.choice([0, 2048, 4096]))  # 4096 x 4096 with 20 000 scans took libjpeg 23 s
    for at, marker, _ in segments:
        if marker in (0xC0, 0xC1, 0xC2) and side:
            out[at + 5 : at + 9] = struct.pack(">HH", side, side)
    at, marker, n = segments[-1]
    sos = bytes(out[at : at + 2 + n])
    return bytes(out[: at]) + sos * int(rng.integers(1000, 20000)) + b"\xff\xd9"


# ---------------------------------------------------------------------------------------------------- mutations


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(1, len(data)))]


def _bit_flips(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    n = int(rng.integers(1, 65))
    # half the flips land in the first 256 bytes, where the headers are
    head = rng.integers(0, min(256, len(out)), size=n // 2)
    anywhere = rng.integers(0, len(out), size=n - n // 2)
    for pos, bit in zip(np.concatenate([head, anywhere]), rng.integers(0, 8, size=n), strict=True):
        out[int(pos)] ^= 1 << int(bit)
    return bytes(out)


def _overwrite(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    n = int(rng.integers(1, 65))
    at = int(rng.integers(0, max(len(out) - 1, 1)))
    fill = rng.choice(["random", "zero", "ff"])
    block = (rng.integers(0, 256, size=n, dtype=np.uint8).tobytes() if fill == "random"
             else (b"\0" if fill == "zero" else b"\xff") * n)
    out[at : at + n] = block[: len(out) - at]
    return bytes(out)


def _insert(data: bytes, rng: np.random.Generator) -> bytes:
    at = int(rng.integers(0, len(data)))
    return data[:at] + rng.integers(0, 256, size=int(rng.integers(1, 257)), dtype=np.uint8).tobytes() + data[at:]


def _delete(data: bytes, rng: np.random.Generator) -> bytes:
    at = int(rng.integers(0, len(data) - 1))
    return data[:at] + data[at + int(rng.integers(1, 257)) :]


def _repeat(data: bytes, rng: np.random.Generator) -> bytes:
    at = int(rng.integers(0, len(data) - 1))
    n = int(rng.integers(1, 1025))
    return data[: at + n] + data[at : at + n] * int(rng.integers(1, 50)) + data[at + n :]


def _zero_tail(data: bytes, rng: np.random.Generator) -> bytes:
    at = int(rng.integers(1, len(data)))
    return data[:at] + b"\0" * (len(data) - at)


#: Mutations of a seed file's bytes, with their weights.
BYTE_MUTATIONS: dict[str, tuple[float, Callable[[bytes, np.random.Generator], bytes]]] = {
    "truncate": (3, _truncate),
    "bitflip": (4, _bit_flips),
    "overwrite": (2, _overwrite),
    "insert": (1, _insert),
    "delete": (1, _delete),
    "repeat": (1, _repeat),
    "zero-tail": (0.5, _zero_tail),
}
#: Mutations that understand the seed's format.
FORMAT_MUTATIONS: dict[str, tuple[float, Callable[[bytes, str, np.random.Generator], bytes]]] = {
    "dims": (2, _dims),
    "lengths": (2, _lengths),
    "header-only": (0.7, _header_only),
    "many-scans": (0.15, _many_scans),
}
#: Files made from no seed (or two).
OTHER_KINDS = {"empty": 0.1, "random": 0.2, "random-signature": 0.3, "text": 0.2, "concat": 0.3, "valid": 0.3}
_SIGNATURES = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"II*\x00", b"MM\x00*", b"RIFF\0\0\0\0WEBPVP8 ",
               b"BM"]
_EXTENSIONS = [".jpg", ".png", ".gif", ".tif", ".webp", ".bmp", ".jpeg"]


def make_case(seed: int, index: int) -> Case:
    """Case ``index`` of the corpus seeded by ``seed`` (the same pair always gives the same bytes)."""
    rng = np.random.default_rng([seed, index])
    seeds = seed_files()
    names = sorted(seeds)
    kinds = {**{k: w for k, (w, _) in BYTE_MUTATIONS.items()}, **{k: w for k, (w, _) in FORMAT_MUTATIONS.items()},
             **OTHER_KINDS}
    weights = np.array(list(kinds.values()))
    kind = str(rng.choice(list(kinds), p=weights / weights.sum()))
    seed_name = names[int(rng.integers(len(names)))]
    ext, data = seeds[seed_name]
    if kind in BYTE_MUTATIONS:
        data = BYTE_MUTATIONS[kind][1](data, rng)
    elif kind in FORMAT_MUTATIONS:
        data = FORMAT_MUTATIONS[kind][1](data, seed_name, rng)
    elif kind == "empty":
        data = b""
    elif kind == "random":
        data = rng.integers(0, 256, size=int(rng.integers(1, 4097)), dtype=np.uint8).tobytes()
        ext = _EXTENSIONS[int(rng.integers(len(_EXTENSIONS)))]
    elif kind == "random-signature":
        data = (_SIGNATURES[int(rng.integers(len(_SIGNATURES)))]
                + rng.integers(0, 256, size=int(rng.integers(0, 4097)), dtype=np.uint8).tobytes())
    elif kind == "text":
        data = f"This is not a picture. Line {int(rng.integers(1000))}.\n".encode() * int(rng.integers(1, 200))
        ext = ".jpg"
    elif kind == "concat":
        other = seeds[names[int(rng.integers(len(names)))]][1]
        data = data + other if rng.random() < 0.5 else other[: len(other) // 2] + data
    return Case(seed, index, f"case-{seed}-{index:06d}{ext}", f"{seed_name}/{kind}", data)
