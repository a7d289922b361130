"""Reading and decoding images; with the two modules built on it (named below), the only Pillow user of hashdup.

Decoding is defensive: the format comes from the file's content, EXIF orientation is applied, every mode is
normalised to 8-bit RGB, large JPEGs are decoded at a reduced size through the DCT (``Image.draft``), and a file
that cannot be read raises :class:`~hashdup.errors.ImageError` with a one-line reason instead of crashing a run.

Hostile input is refused before any pixel memory is allocated: only the formats hashdup reads are tried
(:data:`OPEN_FORMATS`; no EPS, which would run Ghostscript, nor the many formats without a signature), images over
:data:`MAX_PIXELS` are refused, and so are large images claimed by files too small to hold them
(:data:`MAX_PIXELS_PER_BYTE`) and JPEGs with more scans than any encoder writes (:data:`MAX_JPEG_SCANS`). Files that are
not regular files (FIFOs, devices) are refused without being opened for a blocking read. ``tests/test_fuzz.py``
holds this module to that promise on a seeded corpus of mutated files; ``scripts/fuzz.py`` runs a longer corpus.

Built on this module and its checks: :mod:`hashdup.io.edits` (synthetic edits, for self-supervised training and
benchmarks) and :mod:`hashdup.io.thumbnails` (upright thumbnails for the HTML report, greyscale arrays for
verification).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np
from numpy.typing import NDArray
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from hashdup.errors import ImageError
from hashdup.io.facts import FileStat, stat_of

#: Largest image, in pixels, that hashdup decodes (Pillow's own decompression-bomb error threshold).
MAX_PIXELS = 2 * 89_478_485
#: Largest file, in bytes, that hashdup reads.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Images of more than :data:`BOMB_FREE_PIXELS` pixels (4.2 M, 2048 × 2048) must come from a file of at least one
#: byte per ``MAX_PIXELS_PER_BYTE`` pixels (a 32 × 32 block); smaller files claiming that many pixels are refused as
#: decompression bombs. Photos take 2 to 50 pixels per byte and graphics a few hundred; only near-blank canvases
#: compress further (deflate tops out at 1032:1, GIF's LZW at about 2730 pixels per byte, lossless WebP and CCITT fax
#: without bound). So a file of ``n`` bytes never makes hashdup allocate more than ``max(2^22, 1024 n)`` pixels.
MAX_PIXELS_PER_BYTE = 1024
BOMB_FREE_PIXELS = 1 << 22
#: Most scans (SOS markers) a JPEG may have: encoders write 1 (baseline) to about 10-20 (progressive), while a
#: crafted file with thousands of empty scans makes libjpeg pass over the whole image for each one.
MAX_JPEG_SCANS = 256
#: Pillow plugins tried on a file's content: the formats hashdup reads (see :data:`IMAGE_EXTENSIONS`).
OPEN_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "HEIF", "AVIF")

#: File-name extensions of image formats; files without a known image signature are reported as bad only when their
#: name carries one of these (other files, such as videos or sidecars, are ignored).
IMAGE_EXTENSIONS = frozenset(
    [".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".heic", ".heif",
     ".avif", ".hif"]
)

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}

try:  # optional extra: pip install 'hashdup[heif]'
    import pillow_heif

    pillow_heif.register_heif_opener()
    register_avif_opener = getattr(pillow_heif, "register_avif_opener", None)  # older pillow-heif releases only
    if register_avif_opener is not None:
        register_avif_opener()
    HEIF_SUPPORT = True
except Exception:  # pragma: no cover - depends on the optional extra
    HEIF_SUPPORT = False


def sniff_format(head: bytes) -> str | None:
    """Name the image format from a file's first bytes (at least 16), or None when no known signature matches.

    Recognises JPEG, PNG, GIF, BMP, TIFF, WebP and HEIF/AVIF; Pillow makes the final decision when decoding.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM") and len(head) >= 14:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"
    return None


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for a descriptor.

    Attributes
    ----------
    pixels : ndarray of uint8, shape (size, size, 3)
        RGB pixels of the whole frame resized (aspect ratio not kept) to a square.
    width, height : int
        Size of the upright image (after EXIF orientation) in the file, in pixels.
    format : str
        Format Pillow decoded, e.g. ``"JPEG"``.
    decoded_size : tuple of int
        (width, height) actually decoded before the final resize; smaller than the file's size when the JPEG DCT
        scaling was used.
    gray : ndarray of uint8, shape (h, w), or None
        With ``decode(..., frame=F)``: the upright picture in greyscale (BT.601 luma), aspect ratio kept, longest
        side ``F`` (smaller pictures enlarged), for :class:`hashdup.descriptors.local.LocalExtractor`.
    """

    pixels: NDArray[np.uint8]
    width: int
    height: int
    format: str
    decoded_size: tuple[int, int]
    gray: NDArray[np.uint8] | None = None


@dataclass(frozen=True)
class FileBytes:
    """A file's content with the size and modification time (``stat``) of the file it was read from."""

    data: bytes
    stat: FileStat


@overload
def read_file(path: str | os.PathLike[str], max_bytes: int = ..., *,
              only_images: Literal[False] = ...) -> FileBytes: ...


@overload
def read_file(path: str | os.PathLike[str], max_bytes: int = ..., *, only_images: bool) -> FileBytes | None: ...


def read_file(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES, *,
              only_images: bool = False) -> FileBytes | None:
    """Read a whole file, refusing ones larger than ``max_bytes``.

    Parameters
    ----------
    path : path-like
    max_bytes : int
        Size limit in bytes.
    only_images : bool, default False
        Return None, after reading only the first 16 bytes, for a file that neither starts with a known image
        signature (:func:`sniff_format`) nor has an image extension: such files are not hashdup's business.

    Returns
    -------
    FileBytes or None

    Raises
    ------
    ImageError
        When the file cannot be read (missing, vanished, unreadable, a broken link, a symbolic-link loop), is not a
        regular file (a folder, FIFO, socket or device: opened without blocking, never read) or is too large.
    """
    spath = os.fsdecode(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the run
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageError(spath, "symbolic link loop") from e
        if os.path.islink(path) and not os.path.exists(path):
            raise ImageError(spath, "broken symbolic link") from e
        raise ImageError(spath, f"cannot read file: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode)
        if regular:
            os.set_blocking(fd, True)
            f = open(fd, "rb")  # noqa: SIM115 - owns fd from here on, closed by the `with f` below
    except OSError as e:
        os.close(fd)
        raise ImageError(spath, f"cannot read file: {e.strerror or e}") from e
    if not regular:
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
        raise ImageError(spath, f"not a regular file ({kind})")
    try:
        with f:
            head = f.read(16)
            if only_images and sniff_format(head) is None and not is_image_name(spath):
                return None
            if st.st_size > max_bytes:
                raise ImageError(spath, f"file too large ({st.st_size} bytes, limit {max_bytes})")
            # read what fstat promised plus one byte, then the rest if it grew meanwhile (no 512 MiB buffer per file)
            data = head + f.read(max(min(st.st_size, max_bytes) + 1 - len(head), 0))
            if len(data) > st.st_size:
                data += f.read(max(max_bytes + 1 - len(data), 0))
    except OSError as e:
        raise ImageError(spath, f"cannot read file: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise ImageError(spath, f"file too large (over {max_bytes} bytes)")
    return FileBytes(data, stat_of(st))


def decode(data: bytes, size: int, *, name: str = "<bytes>", max_pixels: int = MAX_PIXELS,
           edit: Callable[[Image.Image], Image.Image] | None = None, frame: int | None = None) -> DecodedImage:
    """Decode image bytes into a square RGB array.

    Parameters
    ----------
    data : bytes
        The file's content.
    size : int
        Side of the square output, in pixels.
    name : str
        Used in error messages.
    max_pixels : int
        Decompression-bomb limit: images with more pixels are refused before decoding.
    edit : callable, optional
        Applied to the upright RGB image (decoded at 4 × ``size`` or more) before the final resize; see
        :func:`hashdup.io.edits.decode_edited`.
    frame : int, optional
        Also return the greyscale frame of longest side ``frame`` (:attr:`DecodedImage.gray`), from the same
        decoding (which is chosen for ``size`` alone, so that the descriptor's pixels do not depend on ``frame``).

    Returns
    -------
    DecodedImage

    Raises
    ------
    ImageError
        For empty, non-image, truncated, corrupt or oversized input, with a one-line reason.
    """
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, EXIF and palette warnings: checked below
            return _decode(data, size, name, max_pixels, edit, frame)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"decompression bomb refused: {e}") from e
    except UnidentifiedImageError as e:
        kind = sniff_format(data[:16])
        reason = f"corrupt {kind} file" if kind else "not an image (unknown format)"
        raise ImageError(name, reason) from e
    except MemoryError as e:
        raise ImageError(name, "not enough memory to decode the image") from e
    except Exception as e:  # Pillow's plugins raise many kinds of errors on malformed input; none may stop a run
        msg = _one_line(e)
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            detail = msg.replace("image file is truncated", "").strip(" ()")
            raise ImageError(name, f"truncated image ({detail})" if detail else "truncated image") from e
        raise ImageError(name, f"corrupt image ({msg})") from e


def _one_line(e: BaseException) -> str:
    """The first non-blank line of an exception's message (its type's name when there is none), at most 200
    characters."""
    try:
        text = str(e)
    except Exception:
        text = ""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "") or type(e).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open image bytes (read the header only, allocate no pixels) and refuse decompression bombs.

    Raises
    ------
    ImageError
        For an image without pixels, over ``max_pixels``, with more than :data:`MAX_PIXELS_PER_BYTE` pixels per byte
        of file above :data:`BOMB_FREE_PIXELS`, or a JPEG of more than :data:`MAX_JPEG_SCANS` scans.
    """
    img = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(name, f"image has no pixels ({width}x{height})")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageError(name, f"decompression bomb refused: {width}x{height} pixels exceeds the limit of {max_pixels}")
    if pixels > BOMB_FREE_PIXELS and pixels > MAX_PIXELS_PER_BYTE * len(data):
        raise ImageError(name, f"decompression bomb refused: {width}x{height} pixels from a file of {len(data)} "
                               f"bytes (over {MAX_PIXELS_PER_BYTE} pixels per byte)")
    if img.format in ("JPEG", "MPO") and (scans := data.count(b"\xff\xda")) > MAX_JPEG_SCANS:
        raise ImageError(name, f"corrupt JPEG file ({scans} scans, more than {MAX_JPEG_SCANS})")
    # Image.open leaves every format at its first frame; asking for n_frames would walk every frame of the file
    return img


def _decode(data: bytes, size: int, name: str, max_pixels: int,
            edit: Callable[[Image.Image], Image.Image] | None, frame: int | None = None) -> DecodedImage:
    img = _open_checked(data, name, max_pixels)
    fmt = img.format or "unknown"
    width, height = img.size
    if isinstance(img, JpegImagePlugin.JpegImageFile):  # JPEG and MPO: decode at 1/2, 1/4 or 1/8 through the DCT
        draft = size if edit is None else 4 * size  # the frame does not change it: a query decodes alike
        img.draft(img.mode, (draft, draft))
    img.load()
    decoded_size = img.size
    # read after load: some plugins (TIFF) turn the pixels upright themselves while loading and drop the tag
    orientation = _exif_orientation(img)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    img = _to_rgb(img)
    if orientation not in (None, 1):
        img = _apply_orientation(img, orientation)
    if edit is not None:
        img = edit(img).convert("RGB")
    gray = None if frame is None else _gray_frame(img, frame, (width, height) if edit is None else img.size)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    pixels = np.asarray(img, dtype=np.uint8)
    if pixels.shape != (size, size, 3):  # pragma: no cover - defensive
        raise ImageError(name, f"unexpected decoded shape {pixels.shape}")
    return DecodedImage(pixels, int(width), int(height), fmt, (int(decoded_size[0]), int(decoded_size[1])), gray)


def _gray_frame(img: Image.Image, frame: int, size: tuple[int, int]) -> NDArray[np.uint8]:
    """The upright RGB image in greyscale, resized to the aspect ratio of ``size`` (the picture's own, not that of
    a reduced JPEG decoding, which rounds up) with its longest side ``frame`` pixels."""
    w, h = size
    s = frame / max(w, h)
    target = (max(1, round(w * s)), max(1, round(h * s)))
    if max(target) != frame:  # pragma: no cover - defensive: rounding keeps the longest side
        target = (frame, target[1]) if w >= h else (target[0], frame)
    gray = img.convert("L")
    if gray.size != target:
        gray = gray.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(gray, dtype=np.uint8)


def _exif_orientation(img: Image.Image) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # a broken EXIF block must not lose the picture
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
    """Turn the stored pixels upright according to the EXIF Orientation tag (TIFF 6.0 / EXIF 2.3 semantics)."""
    op = _TRANSPOSE.get(orientation)
    return img if op is None else img.transpose(op)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Normalise any Pillow mode to 8-bit RGB; transparent pixels are composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img)
        top = 65535 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        arr8 = (np.clip(arr, 0, top).astype(np.uint32) * 255 // top).astype(np.uint8)  # 4 bytes a pixel, not 8
        return Image.fromarray(arr8).convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return Image.fromarray(((arr - lo) * scale).astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX, ...


def load(path: str | os.PathLike[str], size: int, *, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Read and decode one image file into a square RGB array (see :func:`decode`)."""
    content = read_file(path)
    return decode(content.data, size, name=os.fsdecode(path), max_pixels=max_pixels)


def is_image_name(path: str | os.PathLike[str]) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(os.fsdecode(path)).suffix.lower() in IMAGE_EXTENSIONS
