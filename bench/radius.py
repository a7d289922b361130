"""Which Hamming radius should ``hashdup dedup`` use by default? Measured on real photos.

Builds a labelled near-duplicate set from the photos in shared/data (whole photos up to 700 px; larger ones cut
into non-overlapping 320×320 tiles, nearly flat tiles dropped), writes each original (JPEG q=90) with five
edited copies (``jpeg`` q=20-50, ``resize`` ×0.3-0.7, ``crop`` 3-12 % per side, ``exif_rotate`` pixels turned
90°/270° plus the EXIF Orientation tag 6/8 that turns them back, ``identical`` byte copy), indexes the folder with
``hashdup.pipeline.build_index`` (GIST + LSH) for each code length, and for every radius r in 0..0.4·bits prints

* pairwise precision / recall / F1 on the pairs within r (byte-identical pairs always count as found);
* the same on the groups that ``hashdup.pipeline.dedup`` forms (connected components: every pair inside a group
  counts as predicted), which is what a user sees;
* recall of (original, copy) pairs per edit kind;

plus distance percentiles of positive pairs per kind, of the nearest negative per image, and the radius that
maximises group F1 with group precision ≥ 0.98. A pair is positive iff both files come from the same original;
tiles of one photo, UKBench views of one object and Holidays shots of one scene are different images.

Run from the repository root (about 1 minute on 2 cores; ``--whole``, every photo untiled, 15 s)::

    .venv/bin/python bench/radius.py [--bits 32,64,128] [--seed 0] [--whole] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from hashdup import bits
from hashdup.dedup.groups import connected_groups
from hashdup.pipeline import Index, build_index

REPO = Path(__file__).resolve().parent.parent
TILE = 320            # tile side, pixels
MAX_WHOLE = 700       # photos whose longer side exceeds this are tiled
MIN_TILE_STD = 8.0    # tiles whose luma std (grey levels) is below this (white sky, flat grey) are dropped
KINDS = ("jpeg", "resize", "crop", "exif_rotate", "identical")
TARGET_PRECISION = 0.98


def source_photos(shared: Path) -> list[Path]:
    """The real photos used (lfw_subset.npy, MNIST, digits and imagededup's transformed/ copies are left out)."""
    globs = ["skimage-data/*.png", "skimage-data/*.jpg", "sklearn-bundled/*.jpg", "matplotlib-sample/*.jpg",
             "ukbench-holidays-simbench/ukbench/*.jpg", "ukbench-holidays-simbench/holidays/*.jpg",
             "ukbench-imagededup/base/*.jpg"]
    found = sorted(p for g in globs for p in shared.glob(g))
    if not found:
        sys.exit(f"no photos under {shared}")
    return found


def load_rgb(path: Path) -> np.ndarray:
    """Upright 8-bit RGB pixels; transparency composited on white (as hashdup's reader does)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
        return np.asarray(im.convert("RGB"))


def originals(shared: Path, whole: bool = False) -> tuple[list[tuple[str, np.ndarray]], int]:
    """(name, pixels) of every original, and the number of flat tiles dropped; ``whole``: never tile."""
    out, dropped = [], 0
    for path in source_photos(shared):
        rgb = load_rgb(path)
        h, w = rgb.shape[:2]
        if whole or max(h, w) <= MAX_WHOLE:
            out.append((path.stem, rgb))
            continue
        for y in range(0, h - TILE + 1, TILE):
            for x in range(0, w - TILE + 1, TILE):
                tile = rgb[y : y + TILE, x : x + TILE]
                if (tile @ np.array([0.299, 0.587, 0.114])).std() < MIN_TILE_STD:
                    dropped += 1
                else:
                    out.append((f"{path.stem}-y{y}x{x}", tile))
    return out, dropped


def save(pixels: np.ndarray, path: Path, quality: int = 90, **kw) -> None:
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, "JPEG", quality=quality, **kw)


def write_set(photos: list[tuple[str, np.ndarray]], folder: Path, rng: np.random.Generator) -> None:
    """Write ``o####_orig.jpg`` and one ``o####_<kind>.jpg`` per edit kind for each original."""
    for n, (_, px) in enumerate(photos):
        stem = folder / f"o{n:04d}"
        h, w = px.shape[:2]
        save(px, Path(f"{stem}_orig.jpg"))
        save(px, Path(f"{stem}_jpeg.jpg"), quality=int(rng.integers(20, 51)))
        s = rng.uniform(0.3, 0.7)
        small = Image.fromarray(px).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
        save(np.asarray(small), Path(f"{stem}_resize.jpg"))
        top, bottom, left, right = rng.uniform(0.03, 0.12, size=4)
        save(px[round(top * h) : h - round(bottom * h), round(left * w) : w - round(right * w)],
             Path(f"{stem}_crop.jpg"))
        k = int(rng.choice([1, 3]))  # np.rot90: k=1 is 90° counter-clockwise; tag 6 turns it 90° clockwise back
        exif = Image.Exif()
        exif[0x0112] = 6 if k == 1 else 8
        save(np.rot90(px, k), Path(f"{stem}_exif_rotate.jpg"), exif=exif.tobytes())
        with Image.open(f"{stem}_exif_rotate.jpg") as im:
            upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.int16)
        if upright.shape != px.shape or np.abs(upright - px).mean() > 4:
            raise RuntimeError(f"{stem}_exif_rotate.jpg is not upright after exif_transpose")
        shutil.copyfile(f"{stem}_orig.jpg", f"{stem}_identical.jpg")


def pair_counts(pairs_orig: np.ndarray, d: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) pair counts for each radius, given each pair's distance and whether it is positive."""
    tp = np.array([(pairs_orig & (d <= r)).sum() for r in radii])
    pred = np.array([(d <= r).sum() for r in radii])
    return tp, pred


def group_counts(n: int, orig: np.ndarray, i, j, d, same_i, same_j, radii) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) pair counts inside the connected components that ``dedup`` forms at each radius."""
    tp, pred = [], []
    for r in radii:
        keep = d <= r
        groups = connected_groups(n, np.concatenate([i[keep], same_i]), np.concatenate([j[keep], same_j]))
        sizes = np.array([g.size for g in groups])
        same = sum(int((c * (c - 1) // 2).sum()) for c in (np.bincount(orig[g]) for g in groups))
        pred.append(int((sizes * (sizes - 1) // 2).sum()))
        tp.append(same)
    return np.array(tp), np.array(pred)


def prf(tp: np.ndarray, pred: np.ndarray, positives: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = np.where(pred > 0, tp / np.maximum(pred, 1), 1.0)
    recall = tp / positives
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return precision, recall, f1


def evaluate(folder: Path, n_bits: int, seed: int, work: Path) -> int:
    """Index ``folder`` with ``n_bits``-bit codes, print the tables, and return the recommended radius."""
    t0 = time.perf_counter()
    index_dir = work / f"index-{n_bits}"
    build_index([folder], index_dir, n_bits=n_bits, seed=seed)
    idx = Index(index_dir)
    try:
        names = [Path(rec.path).stem for rec in idx.stored.catalogue.records()]
        orig = np.array([int(s[1:5]) for s in names])
        kind = np.array([s[6:] for s in names])
        n, r_max = len(names), round(0.4 * n_bits)
        i, j, d = idx.search.self_join(r_max)
        same_i, same_j = (np.asarray(a, dtype=np.int64) for a in idx.stored.catalogue.identical_pairs())
        words = bits.as_words(idx.stored.codes.codes)
    finally:
        idx.close()
    secs = time.perf_counter() - t0
    radii = np.arange(r_max + 1)
    positives = int(sum(c * (c - 1) // 2 for c in np.bincount(orig)))

    # pairs within r_max, byte-identical pairs forced to distance -1 (found at every radius)
    key = np.concatenate([i * n + j, np.minimum(same_i, same_j) * n + np.maximum(same_i, same_j)])
    dist = np.concatenate([d, np.full(same_i.size, -1, np.int32)])
    order = np.lexsort((dist, key))
    key, dist = key[order], dist[order]
    first = np.r_[True, key[1:] != key[:-1]]
    key, dist = key[first], dist[first]
    is_pos = orig[key // n] == orig[key % n]
    p_prec, p_rec, p_f1 = prf(*pair_counts(is_pos, dist, radii), positives)
    g_prec, g_rec, g_f1 = prf(*group_counts(n, orig, i, j, d, same_i, same_j, radii), positives)

    # (original, copy) distances per kind, exact (not limited to r_max)
    of = {(o, k): idx_ for idx_, (o, k) in enumerate(zip(orig.tolist(), kind.tolist(), strict=True))}
    kind_d = {}
    for k in KINDS:
        a = np.array([of[o, "orig"] for o in np.unique(orig)])
        b = np.array([of[o, k] for o in np.unique(orig)])
        kind_d[k] = np.bitwise_count(words[a] ^ words[b]).sum(axis=1)
    nearest_neg = np.full(n, r_max + 1)
    neg = orig[i] != orig[j]
    np.minimum.at(nearest_neg, i[neg], d[neg])
    np.minimum.at(nearest_neg, j[neg], d[neg])

    print(f"\n## {n_bits} bits: {n} files, {positives} positive pairs of {n * (n - 1) // 2}, "
          f"indexed in {secs:.0f} s, radius 0..{r_max}")
    print("positive (original, copy) distances  p50  p90  p99  max")
    for k in KINDS:
        q = np.percentile(kind_d[k], [50, 90, 99, 100])
        print(f"  {k:<12} {q[0]:>21.0f} {q[1]:>4.0f} {q[2]:>4.0f} {q[3]:>4.0f}")
    p1, p5 = np.percentile(nearest_neg, [1, 5])
    print(f"nearest negative per image: min {nearest_neg.min()}, p1 {p1:.0f}, p5 {p5:.0f}, "
          f"p50 {np.percentile(nearest_neg, 50):.0f} (a value of {r_max + 1} means beyond the join radius)")
    head = "  r | pair P  R     F1    | group P  R     F1    | " + " ".join(f"{k[:6]:>6}" for k in KINDS[:-1])
    print(head + "\n" + "-" * len(head))
    for r in radii:
        kr = " ".join(f"{(kind_d[k] <= r).mean():6.3f}" for k in KINDS[:-1])
        print(f"{r:3d} | {p_prec[r]:.3f} {p_rec[r]:.3f} {p_f1[r]:.3f} | {g_prec[r]:.3f} {g_rec[r]:.3f} {g_f1[r]:.3f} "
              f"| {kr}")
    ok = g_prec >= TARGET_PRECISION
    best = int(np.flatnonzero(ok)[np.argmax(g_f1[ok])]) if ok.any() else int(np.argmax(g_f1))
    note = "" if ok.any() else f" (no radius reaches group precision {TARGET_PRECISION})"
    print(f"best: r={best} ({best}/{n_bits} = {best / n_bits:.3f} of the bits): group P {g_prec[best]:.3f} "
          f"R {g_rec[best]:.3f} F1 {g_f1[best]:.3f}; pair P {p_prec[best]:.3f} R {p_rec[best]:.3f}{note}")
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="shared/data folder")
    ap.add_argument("--bits", default="32,64,128", help="comma-separated code lengths")
    ap.add_argument("--seed", type=int, default=0, help="seed of the edits and of the encoder")
    ap.add_argument("--whole", action="store_true", help="use every photo whole (no tiles): a check of the tiling")
    ap.add_argument("--out", type=Path, help="folder for the image set and indexes (kept); default a temp dir")
    args = ap.parse_args(argv)
    n_bits_list = [int(b) for b in args.bits.split(",")]
    work = args.out or Path(tempfile.mkdtemp(prefix="hashdup-radius-"))
    try:
        folder = work / "images"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        t0 = time.perf_counter()
        photos, dropped = originals(args.shared, args.whole)
        write_set(photos, folder, np.random.default_rng(args.seed))
        n_src = len(source_photos(args.shared))
        print(f"# hashdup radius benchmark, seed {args.seed}: {n_src} source photos -> {len(photos)} originals "
              f"({dropped} flat tiles dropped) x {1 + len(KINDS)} files = {len(photos) * (1 + len(KINDS))} files; "
              f"written in {time.perf_counter() - t0:.0f} s")
        best = {b: evaluate(folder, b, args.seed, work) for b in n_bits_list}
        print(f"\nrecommended radius (max group F1 with group precision >= {TARGET_PRECISION}): "
              + ", ".join(f"{b} bits -> {r} ({r / b:.3f})" for b, r in best.items()))
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
