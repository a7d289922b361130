"""Build a labelled near-duplicate set from the real photos in shared/data: originals plus one edited copy per kind.

Originals
    Every real photo under ``shared/data`` (``skimage-data``, ``sklearn-bundled``, ``matplotlib-sample``,
    ``ukbench-holidays-simbench/{ukbench,holidays}``, ``ukbench-imagededup/base``). Left out: MNIST, the sklearn
    digits and ``lfw_subset.npy`` (8-28 px arrays, not photos) and ``ukbench-imagededup/transformed`` (edited copies
    of ``base/ukbench00120.jpg``, which would be unlabelled duplicates). Photos whose longer side exceeds 1000 px (the
    three 8 MP Holidays photos, retina) are cut into non-overlapping 400×300 tiles (300×400 for portrait photos), the
    grid centred; tiles whose luma standard deviation is under 8 grey levels (sky, black border) are dropped. Each
    tile is an original, and tiles of one photo are hard negatives of each other, as are UKBench views of one object,
    the two Holidays shots of one scene and the motorcycle stereo pair. Originals are written as JPEG, quality 90-95.
Split
    The source photos, not the tiles, are split, in the order of the SHA-1 of their path under shared/data: each
    tiled photo (largest first) goes to the split that has fewer originals so far (ties to ``dev``), the whole
    photos go to ``dev`` and ``heldout`` alternately. The split does not depend on the seed, so ``heldout`` never
    shares a photo with ``dev``, the set used to tune hashdup. About 85 and 115 originals.
Edits
    Every original gets one copy of every kind in :data:`KINDS` (13 files per original), made from the decoded
    original JPEG, each with its own strength drawn uniformly from the range stated, written as JPEG quality 90
    unless the kind says otherwise:

    ========== ===========================================================================================
    jpeg       recompressed at quality 30-70
    resize     scaled by 0.3-0.7 (Lanczos)
    crop       keeps 70-90 % of the width and, independently, of the height, at a random offset
    brightness multiplied by 0.6-0.8 or 1.2-1.5 (``ImageEnhance.Brightness``; darker or brighter at even odds)
    contrast   factor 0.6-0.8 or 1.2-1.5 (``ImageEnhance.Contrast``)
    blur       Gaussian blur, standard deviation 1-3 px
    text       1-3 words of white text with a black outline, 5-12 % of the image height, at a random place
    gray       converted to greyscale (one channel)
    rotate     turned 2-4° either way (bicubic), then cropped to the largest upright rectangle with no border
    format     saved as PNG or as WebP (lossy, quality 75-95) at even odds
    exif       pixels turned by 90, 180 or 270° counter-clockwise and saved with the EXIF Orientation tag (6, 3, 8)
               that turns them back, so that a viewer shows the photo upright
    mirror     flipped left-right
    ========== ===========================================================================================

Each original draws its edits from its own generator, seeded by ``(seed, SHA-1 of its id)``, so ``--originals``
changes which originals are kept but not their edits. ``labels.json`` maps every file name to its original's id,
its source photo, its kind (``"original"`` or an edit kind), its strength (a number, or null for gray, format and
mirror) and the edit's parameters.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
KINDS = ("jpeg", "resize", "crop", "brightness", "contrast", "blur", "text", "gray", "rotate", "format", "exif",
         "mirror")
SOURCE_GLOBS = ("skimage-data/*.png", "skimage-data/*.jpg", "sklearn-bundled/*.jpg", "matplotlib-sample/*.jpg",
                "ukbench-holidays-simbench/ukbench/*.jpg", "ukbench-holidays-simbench/holidays/*.jpg",
                "ukbench-imagededup/base/*.jpg")
TILE_ABOVE = 1000     # photos whose longer side exceeds this (pixels) are tiled
TILE = (400, 300)     # tile (width, height) of a landscape photo; transposed for a portrait one
MIN_TILE_STD = 8.0    # tiles whose luma standard deviation (grey levels) is below this are dropped
WORDS = ("SAMPLE", "© 2024", "holiday", "PROOF", "www.example.com", "DRAFT", "copy", "Summer", "stock photo", "42")
ORIENTATION = {1: 6, 2: 3, 3: 8}   # np.rot90 count k (counter-clockwise) -> EXIF Orientation tag that undoes it
BUILDER_VERSION = 1


def source_photos(shared: Path = SHARED) -> list[Path]:
    """The real photos under ``shared``, sorted.

    Raises
    ------
    FileNotFoundError
        When there is none.
    """
    found = sorted(p for g in SOURCE_GLOBS for p in shared.glob(g))
    if not found:
        raise FileNotFoundError(f"no photos under {shared}")
    return found


def load_rgb(path: Path) -> np.ndarray:
    """Upright 8-bit RGB pixels, shape (h, w, 3); transparency composited on white."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P", "PA"):
            im = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
        return np.asarray(im.convert("RGB"))


def cut(rgb: np.ndarray, stem: str) -> list[tuple[str, np.ndarray]]:
    """``[(id, pixels)]``: the photo whole, or its non-flat tiles when its longer side exceeds :data:`TILE_ABOVE`."""
    h, w = rgb.shape[:2]
    if max(h, w) <= TILE_ABOVE:
        return [(stem, rgb)]
    tw, th = TILE if w >= h else TILE[::-1]
    y0, x0 = (h % th) // 2, (w % tw) // 2
    out = []
    for y in range(y0, h - th + 1, th):
        for x in range(x0, w - tw + 1, tw):
            tile = rgb[y : y + th, x : x + tw]
            if (tile @ np.array([0.299, 0.587, 0.114])).std() >= MIN_TILE_STD:
                out.append((f"{stem}-y{y:04d}x{x:04d}", tile))
    return out


def split_sources(shared: Path = SHARED) -> dict[str, list[tuple[str, list[tuple[str, np.ndarray]]]]]:
    """``{"dev": [(source, originals)], "heldout": [...]}``, balanced by number of originals (see module doc)."""
    items = []
    for path in source_photos(shared):
        rel = path.relative_to(shared).as_posix()
        items.append((rel, cut(load_rgb(path), path.stem)))
    items.sort(key=lambda it: (-len(it[1]), hashlib.sha1(it[0].encode()).hexdigest()))
    splits: dict[str, list] = {"dev": [], "heldout": []}
    count = {"dev": 0, "heldout": 0}
    whole = 0
    for rel, origs in items:
        if len(origs) > 1 or max(origs[0][1].shape[:2]) > TILE_ABOVE:   # a tiled photo: to the smaller split
            name = "dev" if count["dev"] <= count["heldout"] else "heldout"
        else:                                                        # whole photos: alternately
            name, whole = ("dev", "heldout")[whole % 2], whole + 1
        splits[name].append((rel, origs))
        count[name] += len(origs)
    return splits


def _rng_for(seed: int, oid: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha1(oid.encode()).hexdigest()[:12], 16)])


def _two_sided(rng: np.random.Generator) -> float:
    """A factor from 0.6-0.8 or 1.2-1.5, at even odds."""
    return float(rng.uniform(0.6, 0.8) if rng.random() < 0.5 else rng.uniform(1.2, 1.5))


def inscribed_size(w: int, h: int, degrees: float) -> tuple[int, int]:
    """(width, height) of the largest upright rectangle inside a ``w`` × ``h`` image turned by ``degrees``."""
    a = math.radians(abs(degrees))
    sin_a, cos_a = math.sin(a), math.cos(a)
    long_side, short_side = max(w, h), min(w, h)
    if short_side <= 2 * sin_a * cos_a * long_side:
        x = 0.5 * short_side
        wr, hr = (x / sin_a, x / cos_a) if w >= h else (x / cos_a, x / sin_a)
    else:
        cos_2a = cos_a * cos_a - sin_a * sin_a
        wr, hr = (w * cos_a - h * sin_a) / cos_2a, (h * cos_a - w * sin_a) / cos_2a
    return int(wr) - 2, int(hr) - 2   # two pixels off each side: no interpolated border survives


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def edit(im: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str, dict, float | None, dict]:
    """Apply one edit kind to an RGB image.

    Returns
    -------
    (image, format, save_kwargs, strength, params)
        The edited image, the PIL format to save it in, the keyword arguments of ``Image.save``, the strength
        (a number, or None for kinds without one) and every drawn parameter.
    """
    w, h = im.size
    fmt, save = "JPEG", {"quality": 90}
    if kind == "jpeg":
        q = int(rng.integers(30, 71))
        return im, fmt, {"quality": q}, q, {"quality": q}
    if kind == "resize":
        s = float(rng.uniform(0.3, 0.7))
        size = (max(1, round(w * s)), max(1, round(h * s)))
        return im.resize(size, Image.Resampling.LANCZOS), fmt, save, s, {"scale": s, "size": size}
    if kind == "crop":
        kw, kh = rng.uniform(0.7, 0.9, size=2)
        cw, ch = round(w * kw), round(h * kh)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        params = {"keep_width": float(kw), "keep_height": float(kh), "box": [left, top, left + cw, top + ch]}
        return im.crop((left, top, left + cw, top + ch)), fmt, save, float(kw * kh), params
    if kind in ("brightness", "contrast"):
        f = _two_sided(rng)
        enhancer = ImageEnhance.Brightness(im) if kind == "brightness" else ImageEnhance.Contrast(im)
        return enhancer.enhance(f), fmt, save, f, {"factor": f}
    if kind == "blur":
        sigma = float(rng.uniform(1.0, 3.0))
        return im.filter(ImageFilter.GaussianBlur(sigma)), fmt, save, sigma, {"sigma": sigma}
    if kind == "text":
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False).tolist())
        frac = float(rng.uniform(0.05, 0.12))
        font = _font(max(8, round(frac * h)))
        stroke = max(1, round(frac * h / 12))
        out = im.copy()
        draw = ImageDraw.Draw(out)
        l, t, r, b = draw.textbbox((0, 0), words, font=font, stroke_width=stroke)
        while r - l > w and font.size > 8:       # keep the text inside the image
            font = _font(font.size - 2)
            l, t, r, b = draw.textbbox((0, 0), words, font=font, stroke_width=stroke)
        x = int(rng.integers(0, max(1, w - (r - l)))) - l
        y = int(rng.integers(0, max(1, h - (b - t)))) - t
        draw.text((x, y), words, font=font, fill=(255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0))
        area = (r - l) * (b - t) / (w * h)
        return out, fmt, save, frac, {"text": words, "height_fraction": frac, "xy": [x, y], "area": area}
    if kind == "gray":
        return im.convert("L"), fmt, save, None, {}
    if kind == "rotate":
        deg = float(rng.uniform(2.0, 4.0)) * (1 if rng.random() < 0.5 else -1)
        turned = im.rotate(deg, resample=Image.Resampling.BICUBIC, expand=True)
        cw, ch = inscribed_size(w, h, deg)
        left, top = (turned.width - cw) // 2, (turned.height - ch) // 2
        return turned.crop((left, top, left + cw, top + ch)), fmt, save, deg, {"degrees": deg, "size": [cw, ch]}
    if kind == "format":
        if rng.random() < 0.5:
            return im, "PNG", {}, None, {"format": "png"}
        q = int(rng.integers(75, 96))
        return im, "WEBP", {"quality": q}, None, {"format": "webp", "quality": q}
    if kind == "exif":
        k = int(rng.integers(1, 4))
        exif = Image.Exif()
        exif[0x0112] = ORIENTATION[k]
        turned = Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(im), k)))
        return turned, fmt, {"quality": 90, "exif": exif.tobytes()}, 90 * k, {"degrees_ccw": 90 * k,
                                                                             "orientation": ORIENTATION[k]}
    if kind == "mirror":
        return ImageOps.mirror(im), fmt, save, None, {}
    raise ValueError(f"kind={kind!r}: expected one of {KINDS}")


EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def write_original(out_dir: Path, oid: str, px: np.ndarray, rel: str, rng: np.random.Generator
                   ) -> tuple[str, dict, Image.Image]:
    """Write ``oid``'s pixels as ``<oid>_original.jpg`` (JPEG quality 90–95, drawn from ``rng``); returns the file
    name, its label record and the image as decoded from those bytes (what the edits start from)."""
    q = int(rng.integers(90, 96))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(px)).save(buf, "JPEG", quality=q)
    name = f"{oid}_original.jpg"
    (out_dir / name).write_bytes(buf.getvalue())
    record = {"original": oid, "source": rel, "kind": "original", "strength": None,
              "params": {"quality": q, "size": [px.shape[1], px.shape[0]]}}
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return name, record, im.convert("RGB")


def build_set(out_dir: str | Path, split: Literal["dev", "heldout"] = "dev", seed: int = 0,
              originals: int | None = None, kinds: tuple[str, ...] = KINDS, shared: str | Path = SHARED,
              sources: list[str] | None = None) -> dict[str, Any]:
    """Write a labelled near-duplicate set into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Folder for the images and ``labels.json``; created, and must be empty if it exists.
    split : {"dev", "heldout"}
        Which half of the source photos to use (see the module docstring).
    seed : int
        Seeds the edits and the choice of originals; the same seed writes the same files.
    originals : int, optional
        Keep this many originals of the split (a seeded random choice); all of them by default.
    kinds : tuple of str
        Edit kinds to make, one copy of each per original.
    shared : path
        The shared data folder.
    sources : list of str, optional
        Use only these source photos (paths under ``shared``, or file names), whatever their split.

    Returns
    -------
    dict
        The content of ``labels.json``: ``files`` maps each file name to ``{"original", "source", "kind",
        "strength", "params"}``; also ``split``, ``seed``, ``kinds``, ``originals`` (ids) and ``sources``.
    """
    if split not in ("dev", "heldout"):
        raise ValueError(f"split={split!r}: expected 'dev' or 'heldout'")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"kinds {bad}: expected some of {KINDS}")
    shared, out_dir = Path(shared), Path(out_dir)
    if sources is None:
        chosen = split_sources(shared)[split]
    else:
        paths = [p for p in source_photos(shared) if p.relative_to(shared).as_posix() in sources or p.name in sources]
        chosen = [(p.relative_to(shared).as_posix(), cut(load_rgb(p), p.stem)) for p in paths]
    pool = [(oid, px, rel) for rel, origs in chosen for oid, px in origs]
    if originals is not None:
        if originals < 1:
            raise ValueError(f"originals={originals}: expected at least 1")
        keep = np.random.default_rng(seed).permutation(len(pool))[:originals]
        pool = [pool[i] for i in sorted(keep)]
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    for oid, px, rel in pool:
        rng = _rng_for(seed, oid)
        name, files[name], base = write_original(out_dir, oid, px, rel, rng)
        for kind in kinds:
            img, fmt, save, strength, params = edit(base, kind, rng)
            name = f"{oid}_{kind}.{EXT[fmt]}"
            img.save(out_dir / name, fmt, **save)
            files[name] = {"original": oid, "source": rel, "kind": kind, "strength": strength, "params": params}
    labels = {"builder_version": BUILDER_VERSION, "split": split, "seed": seed, "kinds": list(kinds),
              "sources": sorted({rel for _, _, rel in pool}), "originals": [oid for oid, _, _ in pool],
              "files": files}
    (out_dir / "labels.json").write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n")
    return labels
