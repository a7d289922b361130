"""How faithful a file's encoding is, from its header alone: a JPEG's quality read from its quantisation table
(the "original" keeper of :mod:`hashdup.dedup.keepers` prefers the best-encoded copy)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from hashdup.io.images import OPEN_FORMATS

#: The IJG (libjpeg) luminance quantisation table at quality 50, in zig-zag order as PIL reports tables; JPEG
#: writers scale it by the quality setting (Annex K of ITU-T T.81).
_IJG_LUMINANCE = (16, 11, 12, 14, 12, 10, 16, 14, 13, 14, 18, 17, 16, 19, 24, 40, 26, 24, 22, 22, 24, 49, 35, 37,
                  29, 40, 58, 51, 61, 60, 57, 51, 56, 55, 64, 72, 92, 78, 64, 68, 87, 69, 55, 56, 80, 109, 81, 87,
                  95, 98, 103, 104, 103, 62, 77, 113, 121, 112, 100, 120, 92, 101, 103, 99)


def encoding_fidelity(path: str | os.PathLike[str]) -> float:
    """How much of the picture a file's encoding keeps, from its header alone (nothing is decoded): the quality
    (1–100) of a JPEG estimated from its luminance quantisation table against the IJG table, 100 for a lossless
    format (PNG, GIF, BMP, TIFF), 0 when unknown (another format, an unreadable file).
    """
    try:
        with Image.open(path, formats=OPEN_FORMATS) as img:
            if img.format in ("PNG", "GIF", "BMP", "DIB", "TIFF"):
                return 100.0
            tables = getattr(img, "quantization", None) if img.format == "JPEG" else None
            if not tables or 0 not in tables or len(tables[0]) != 64:
                return 0.0
            scale = 100.0 * float(np.mean(tables[0])) / float(np.mean(_IJG_LUMINANCE))
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0.0
    return float(np.clip((200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale, 1.0, 100.0))
