"""Distinct generated pictures for library-scale runs: every image its own random scene, seeded.

The shared photos give about 2,100 non-overlapping small tiles (``bench/tiles_set.py``); random crops of them
(``bench/incremental.py``) overlap, so at 100,000 images most crops lie inside others and are genuine
near-duplicates. A library of distinct photos needs distinct pictures, so these are drawn: a smooth random colour
field, a band of low-frequency shading, 8-30 random shapes (ellipses, rectangles, polygons, thick lines, arcs) in
random colours, the first ones softened in half the images, and a little sensor-like noise; JPEG quality 80-95.
Each image depends only on its seed, so any subset can be regenerated.

Usage: ``from shapes import generate_shapes`` (``bench/scale.py --kind shapes``).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

#: (width, height) frames drawn, landscape most often, as in a phone's camera roll.
FRAMES = ((4, 3), (4, 3), (4, 3), (3, 4), (16, 9), (1, 1))


def draw(seed: int, size: int = 256):
    """One picture of longest side ``size``: the scene of ``seed`` (numpy's PCG64)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    fw, fh = FRAMES[rng.integers(len(FRAMES))]
    w, h = (size, round(size * fh / fw)) if fw >= fh else (round(size * fw / fh), size)
    gx, gy = rng.integers(2, 6, size=2)
    field = rng.integers(0, 256, size=(gy, gx, 3), dtype=np.uint8)
    im = Image.fromarray(field, "RGB").resize((w, h), Image.BICUBIC)
    shade = rng.normal(0, 1, size=(rng.integers(4, 12), rng.integers(4, 12)))
    shade = np.asarray(Image.fromarray(((shade - shade.min()) / (np.ptp(shade) + 1e-9) * 255).astype(np.uint8))
                       .resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0 - 0.5
    px = np.asarray(im, dtype=np.float32) * (1 + rng.uniform(0.2, 0.8) * shade[..., None])
    im = Image.fromarray(np.clip(px, 0, 255).astype(np.uint8), "RGB")
    pen = ImageDraw.Draw(im)
    n_shapes = int(rng.integers(8, 31))
    soften = int(rng.integers(n_shapes)) if rng.random() < 0.5 else -1  # shapes drawn before it are softened
    for k in range(n_shapes):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(5))
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        rx, ry = rng.uniform(0.02, 0.35) * w, rng.uniform(0.02, 0.35) * h
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        if kind == 0:
            pen.ellipse(box, fill=colour)
        elif kind == 1:
            pen.rectangle(box, fill=colour)
        elif kind == 2:
            k = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radii = rng.uniform(0.4, 1.0, k)
            corners = [(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii, strict=True)]
            pen.polygon(corners, fill=colour)
        elif kind == 3:
            pen.line([(cx - rx, cy - ry), (cx + rx, cy + ry)], fill=colour, width=int(rng.integers(2, 12)))
        else:
            start = float(rng.uniform(0, 360))
            pen.arc(box, start, start + float(rng.uniform(60, 300)), fill=colour, width=int(rng.integers(2, 9)))
        if k == soften:
            im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 2.5))))
            pen = ImageDraw.Draw(im)
    px = np.asarray(im, dtype=np.float32) + rng.normal(0, rng.uniform(1, 4), size=(h, w, 1))
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8), "RGB")


def _make(task: tuple[str, int, int]) -> None:
    dest, size, seed = task
    draw(seed, size).save(dest, quality=int(np.random.default_rng(seed + 1).integers(80, 96)))


def generate_shapes(folder: Path, names: list[str], size: int, seed: int) -> float:
    """Write ``names`` (relative ``.jpg`` paths) under ``folder``, image ``k`` drawn from seed ``seed·10⁷ + k``;
    returns seconds."""
    t0 = time.perf_counter()
    for d in {(folder / n).parent for n in names}:
        d.mkdir(parents=True, exist_ok=True)
    tasks = [(str(folder / n), size, seed * 10_000_000 + k) for k, n in enumerate(names)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_make, tasks, chunksize=64):
            pass
    return time.perf_counter() - t0
