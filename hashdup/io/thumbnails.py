"""Small upright pictures of image files: JPEG thumbnails for the HTML report (the only decoding ``hashdup report``
does; verification compares the local features stored at index time).

A thumbnail fits the image in a box with its aspect ratio kept (where :func:`hashdup.io.images.decode` squares it for a
descriptor), after the checks decoding makes: the file is read by :func:`~hashdup.io.images.read_file`, decompression
bombs are refused by the same rules, only the first frame is used, EXIF orientation is applied, any mode is converted
to RGB (transparency on white), and large JPEGs are decoded at a reduced size through the DCT.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable

from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from hashdup.errors import ImageError
from hashdup.io.images import (
    MAX_PIXELS,
    _apply_orientation,
    _exif_orientation,
    _open_checked,
    _to_rgb,
    read_file,
    sniff_format,
)


# --- thumbnails, for the HTML report ----------------------------------------------------------------------------------
def thumbnail(path: str | os.PathLike[str], max_side: int = 240, *, quality: int = 80, max_pixels: int = MAX_PIXELS,
              on_problem: Callable[[str, str], None] | None = None) -> bytes | None:
    """A small upright JPEG of an image file, or None when the file cannot be read.

    Parameters
    ----------
    path : path-like
    max_side : int
        Longest side of the thumbnail, in pixels; smaller images are not enlarged.
    quality : int
        JPEG quality (1–95).
    max_pixels : int
        Decompression-bomb limit, as in :func:`hashdup.io.images.decode`.
    on_problem : callable, optional
        Called as ``on_problem(path, reason)`` with a one-line reason when None is returned.

    Returns
    -------
    bytes or None
        JPEG data, EXIF orientation applied, any mode converted to RGB (transparency on white); large JPEGs are
        decoded at reduced size through the DCT. Only one image is held in memory at a time.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be ≥ 1, got {max_side}")
    name = os.fsdecode(path)
    data = b""
    try:
        data = read_file(path).data
        if not data:
            raise ImageError(name, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = _thumbnail_image(data, max_side, name, max_pixels)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
        return buf.getvalue()
    except ImageError as e:
        reason = e.reason
    except Image.DecompressionBombError as e:
        reason = f"decompression bomb refused: {e}"
    except UnidentifiedImageError:
        kind = sniff_format(data[:16])
        reason = f"corrupt {kind} file" if kind else "not an image (unknown format)"
    except Exception as e:  # Pillow's plugins raise many kinds of errors on malformed input; a report must go on
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            detail = msg.replace("image file is truncated", "").strip(" ()")
            reason = f"truncated image ({detail})" if detail else "truncated image"
        else:
            reason = f"corrupt image ({msg})"
    if on_problem is not None:
        on_problem(name, reason)
    return None


def _thumbnail_image(data: bytes, max_side: int, name: str, max_pixels: int) -> Image.Image:
    img = _open_checked(data, name, max_pixels)  # the same bomb rules as decode; first frame only
    if isinstance(img, JpegImagePlugin.JpegImageFile):  # no smaller than the box: at most 1/8 through the DCT
        img.draft(img.mode, (max_side, max_side))
    img.load()
    orientation = _exif_orientation(img)
    img = _to_rgb(img)
    if orientation not in (None, 1):
        img = _apply_orientation(img, orientation)
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img
