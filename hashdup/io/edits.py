"""Synthetic edits, for self-supervised metric learning and benchmarks: changes that keep an image "the same picture".

:func:`decode_edited` decodes an image as :func:`hashdup.io.images.decode` does (same checks, same errors), with one
random edit of a kind in :data:`EDIT_KINDS` (JPEG recompression, resize, crop, brightness, contrast, blur, small
rotation, text overlay, mirror image, greyscale) applied to the upright RGB image before the final resize.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from hashdup.io.images import MAX_PIXELS, DecodedImage, decode

#: The kinds of edit :func:`decode_edited` applies: changes that keep an image "the same picture".
EDIT_KINDS = ("jpeg", "resize", "crop", "brightness", "contrast", "blur", "rotate", "text", "mirror", "gray")


def _edit(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One edit of ``kind`` with a strength drawn from ``rng``."""
    w, h = img.size
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(15, 61)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "resize":
        f = rng.uniform(0.3, 0.8)
        return img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.LANCZOS)
    if kind == "crop":
        l, t, r, b = rng.uniform(0.02, 0.12, size=4)
        return img.crop((round(w * l), round(h * t), round(w * (1 - r)), round(h * (1 - b))))
    if kind == "brightness":
        return ImageEnhance.Brightness(img).enhance(rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.15, 1.4)]))
    if kind == "contrast":
        return ImageEnhance.Contrast(img).enhance(rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.15, 1.5)]))
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.5, 2.0) * max(w, h) / 512))
    if kind == "rotate":  # a few degrees, then the central part without the filled corners
        angle = rng.uniform(2, 5) * rng.choice([-1, 1])
        rot = img.rotate(angle, resample=Image.Resampling.BILINEAR)
        m = np.sin(np.radians(abs(angle)))
        return rot.crop((round(w * m), round(h * m), round(w * (1 - m)), round(h * (1 - m))))
    if kind == "text":
        out = img.copy()
        draw = ImageDraw.Draw(out)
        x, y = rng.uniform(0.05, 0.6) * w, rng.uniform(0.05, 0.85) * h
        shade = int(rng.choice([0, 255]))
        draw.text((x, y), "© hashdup " + str(int(rng.integers(1000, 9999))), fill=(shade, shade, shade),
                  font_size=max(10, h // 12))
        return out
    if kind == "mirror":
        return ImageOps.mirror(img)
    if kind == "gray":
        return img.convert("L").convert("RGB")
    raise ValueError(f"unknown edit kind {kind!r}; choose from {', '.join(EDIT_KINDS)}")


def decode_edited(data: bytes, size: int, kind: str, rng: np.random.Generator, *, name: str = "<bytes>",
                  max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode an image, apply a random edit of ``kind`` (see :data:`EDIT_KINDS`) and resize to a square.

    The edit is applied at a working resolution of at least 4 × ``size`` (JPEG files are DCT-decoded no smaller),
    with strengths drawn from ``rng``: JPEG quality 15–60, resize ×0.3–0.8, crop 2–12 % per side, brightness or
    contrast ×0.6–0.85 or ×1.15–1.4 (1.5), Gaussian blur of 0.5–2 px per 512 px, rotation by 2–5° (corners cropped),
    a text overlay, a mirror image, or greyscale.
    """
    if kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; choose from {', '.join(EDIT_KINDS)}")
    return decode(data, size, name=name, max_pixels=max_pixels, edit=lambda img: _edit(img, kind, rng))
