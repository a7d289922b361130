"""Build a large labelled set of small distinct photos: non-overlapping tiles of the shared photos, few edited copies.

Where ``bench/neardup_set.py`` makes a small set dense in duplicates (12 copies of every original), this one is the
opposite case of a real library: thousands of distinct images and one edited copy for every tenth. It serves the
end-to-end timing of ``bench/dedup_e2e.py``, where the number of files, not the number of copies, sets the cost.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from neardup_set import EXT, KINDS, MIN_TILE_STD, SHARED, edit, load_rgb, source_photos, write_original

TILES_VERSION = 1
TILE = (128, 96)   # (width, height) in pixels; 200×150 gives only 881 non-flat tiles of the shared photos, 128×96 2,124
LUMA = np.array([0.299, 0.587, 0.114])


def tiles(rgb: np.ndarray, stem: str, tile: tuple[int, int] = TILE,
          min_std: float = MIN_TILE_STD) -> list[tuple[str, np.ndarray]]:
    """``[(id, pixels)]``: the non-overlapping ``tile`` (width, height) tiles of a photo, grid centred, flat ones
    dropped.

    A tile is dropped when the standard deviation of its luma is under ``min_std`` grey levels (sky, black borders):
    such tiles are near-duplicates of each other and would be false negatives of the labels. Unlike
    :func:`neardup_set.cut`, every photo is tiled whatever its size, and the tile is not turned for portrait photos.
    """
    tw, th = tile
    h, w = rgb.shape[:2]
    out = []
    for y in range((h % th) // 2, h - th + 1, th):
        for x in range((w % tw) // 2, w - tw + 1, tw):
            px = rgb[y : y + th, x : x + tw]
            if (px @ LUMA).std() >= min_std:
                out.append((f"{stem}-y{y:04d}x{x:04d}", px))
    return out


def build_tiles(out_dir: str | Path, n_originals: int = 2000, copy_every: int = 10, seed: int = 0,
                tile: tuple[int, int] = TILE, shared: str | Path = SHARED) -> dict[str, Any]:
    """Write ``n_originals`` distinct tiles and one edited copy of every ``copy_every``-th into ``out_dir``.

    The tiles are cut from every real photo of ``neardup_set.source_photos`` (both of its splits: skimage-data,
    sklearn-bundled, matplotlib-sample, ukbench-holidays-simbench, ukbench-imagededup/base; licences in the README of
    each folder of ``shared``: public domain and CC0 (scikit-image: NASA, Wikimedia, CC0 Textures and others; the
    US Navy photo of matplotlib), CC-BY 2.0 (scikit-learn's china and flower, Flickr), and UKBench (Nistér &
    Stewénius, CVPR 2006; imagededup's test data is Apache-2.0) and INRIA Holidays (Jégou, Douze & Schmid, ECCV
    2008) for research use). Tiles do not overlap and near-flat ones are dropped (see :func:`tiles`), as are tiles
    whose pixels repeat another's. ``n_originals`` of them are drawn at random (seeded), kept in source order, and
    written as JPEG quality 90-95; after every ``copy_every``-th original comes one copy of it, made by
    :func:`neardup_set.edit` (strengths as stated in that module), the kinds taken in the order of
    :data:`neardup_set.KINDS` from a seeded starting point.

    Parameters
    ----------
    out_dir : path
        Folder for the images and ``labels.json``; created, and must be empty if it exists.
    n_originals : int
        Number of distinct tiles; at most the number of non-flat tiles (2,124 at 128×96).
    copy_every : int
        One original in this many gets an edited copy (``n_originals // copy_every`` copies).
    seed : int
        Seeds the choice of tiles, the JPEG qualities, the kinds and the edits: the same seed writes the same files.
    tile : (int, int)
        Tile width and height, pixels.
    shared : path
        The shared data folder.

    Returns
    -------
    dict
        The content of ``labels.json``, in the layout of ``neardup_set.build_set``: ``files`` maps each file name to
        ``{"original", "source", "kind", "strength", "params"}``; also ``seed``, ``tile``, ``copy_every``,
        ``kinds``, ``originals`` (ids) and ``sources``.

    Raises
    ------
    ValueError
        When ``n_originals`` or ``copy_every`` is under 1, or there are fewer tiles than ``n_originals``.
    FileExistsError
        When ``out_dir`` is not empty.
    """
    if n_originals < 1 or copy_every < 1:
        raise ValueError(f"n_originals={n_originals}, copy_every={copy_every}: expected both at least 1")
    shared, out_dir = Path(shared), Path(out_dir)
    pool, seen = [], set()
    for path in source_photos(shared):
        rel = path.relative_to(shared).as_posix()
        for oid, px in tiles(load_rgb(path), path.stem, tile):
            digest = hashlib.sha1(np.ascontiguousarray(px).tobytes()).digest()
            if digest not in seen:
                seen.add(digest)
                pool.append((f"{path.parent.name}-{oid}", px, rel))
    if len(pool) < n_originals:
        raise ValueError(f"n_originals={n_originals}: only {len(pool)} non-flat {tile[0]}×{tile[1]} tiles in {shared}")
    rng = np.random.default_rng(seed)
    pool = [pool[i] for i in sorted(rng.permutation(len(pool))[:n_originals])]
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    first_kind = int(rng.integers(len(KINDS)))
    files: dict[str, dict] = {}
    for i, (oid, px, rel) in enumerate(pool):
        name, files[name], base = write_original(out_dir, oid, px, rel, rng)
        if (i + 1) % copy_every:
            continue
        kind = KINDS[(first_kind + i // copy_every) % len(KINDS)]
        img, fmt, save, strength, params = edit(base, kind, rng)
        name = f"{oid}_{kind}.{EXT[fmt]}"
        img.save(out_dir / name, fmt, **save)
        files[name] = {"original": oid, "source": rel, "kind": kind, "strength": strength, "params": params}
    labels = {"builder_version": TILES_VERSION, "seed": seed, "tile": list(tile), "copy_every": copy_every,
              "kinds": list(KINDS), "sources": sorted({rel for _, _, rel in pool}),
              "originals": [oid for oid, _, _ in pool], "files": files}
    (out_dir / "labels.json").write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n")
    return labels
