"""Extraction speed: hashdup's extraction (default descriptor, gist+color) against imagededup's PHash encoding, same
files, same workers.

Two folders of real photos are built once under ``bench/out/extract/`` (and reused) from ``../shared/data``:

* ``web/``: small photos, 0.1-0.8 MP JPEGs: every real photo there (UKBench, INRIA Holidays, imagededup's
  UKBench sample, scikit-image, scikit-learn, matplotlib) re-encoded with a random long side of 320-1024 px
  (never enlarged), JPEG quality 70-95, a third of them mirrored;
* ``camera/``: camera-size photos, 6-8 MP JPEGs: the three INRIA Holidays photos (3264 × 2448, 8 MP), cropped by
  0-8 % per side, JPEG quality 80-95, half of them mirrored.

For each folder and each number of worker processes N (1 and 2 by default) it times, in the same run:

* ``hashdup extract``: :func:`hashdup.extract.extract` with the index's default descriptor, gist+color (read, hash,
  decode, describe; the process pool's start-up included);
* ``hashdup index``: the whole command (``hashdup index DIR --workers N``) in a fresh process, into a new index:
  walk, extract, fit LSH, encode, write;
* ``imagededup``: ``PHash().encode_images(DIR, num_enc_workers=N)`` (imagededup 0.3: full-size decode, Lanczos
  resize to 32 × 32, DCT; its own multiprocessing pool, also at N = 1).

Every timing is the best of ``--repeats`` runs (the machine may be shared: the load average is printed), and the
table gives images per second and the ratio hashdup extract / imagededup. Wall-clock rates depend on what else
runs on the machine, so it also prints the CPU time per image of each tool in one process (``time.process_time``,
best of 2 on 100 files), with hashdup's split into read + hash, decode and describe, and the CPU time of the
Fourier transforms alone of one 128-pixel GIST (:func:`fft_floor_ms`: what any implementation of this descriptor
built on those transforms spends at least). Results go to stdout and to
``bench/out/extract/results.json``.

Run from the repository root (``pip install -e '.[bench]'`` installs imagededup; about 5 minutes on 2 cores)::

    .venv/bin/python bench/extract.py [--web 800] [--camera 200] [--workers 1,2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out" / "extract"
WEB_SOURCES = ["skimage-data/*.png", "skimage-data/*.jpg", "sklearn-bundled/*.jpg", "matplotlib-sample/*.jpg",
               "ukbench-holidays-simbench/ukbench/*.jpg", "ukbench-holidays-simbench/holidays/*.jpg",
               "ukbench-imagededup/base/*.jpg", "ukbench-imagededup/transformed/*.jpg"]
CAMERA_SOURCES = ["ukbench-holidays-simbench/holidays/*.jpg"]


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, im).convert("RGB")
        return im.convert("RGB")


def build_folder(kind: str, n: int, shared: Path, seed: int) -> Path:
    """Write (or reuse) ``n`` JPEG variants of the real photos for ``kind`` ("web" or "camera")."""
    folder = OUT / f"{kind}-{n}-{seed}"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    globs = WEB_SOURCES if kind == "web" else CAMERA_SOURCES
    sources = sorted(p for g in globs for p in shared.glob(g))
    if not sources:
        sys.exit(f"no photos under {shared}")
    rng = np.random.default_rng(seed)
    cache: dict[Path, Image.Image] = {}
    for i in range(n):
        src = sources[i % len(sources)]
        if src not in cache:
            cache[src] = load_rgb(src)
        im = cache[src]
        w, h = im.size
        if kind == "web":
            side = min(int(rng.choice([320, 480, 640, 800, 1024])), max(w, h))
            f = side / max(w, h)
            out = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)
            quality, mirror = int(rng.integers(70, 96)), rng.random() < 1 / 3
        else:
            l, t, r, b = rng.uniform(0, 0.08, size=4)
            out = im.crop((round(w * l), round(h * t), round(w * (1 - r)), round(h * (1 - b))))
            quality, mirror = int(rng.integers(80, 96)), rng.random() < 0.5
        if mirror:
            out = ImageOps.mirror(out)
        out.save(tmp / f"{i:05d}_{src.stem}.jpg", "JPEG", quality=quality)
    tmp.rename(folder)
    return folder


def describe_folder(folder: Path) -> dict:
    files = sorted(folder.glob("*.jpg"))
    mp = []
    for p in files:
        with Image.open(p) as im:
            mp.append(im.size[0] * im.size[1] / 1e6)
    sizes = [p.stat().st_size for p in files]
    return {"files": len(files), "megapixels_median": float(np.median(mp)), "megapixels_range": [min(mp), max(mp)],
            "bytes_median": int(np.median(sizes)), "bytes_total": int(sum(sizes))}


#: The descriptor measured: the index's default unless --descriptor says otherwise.
DESCRIPTOR = "gist+color"


def time_extract(paths: list[str], workers: int) -> float:
    from hashdup.descriptors import make_descriptor
    from hashdup.extract import extract

    t = time.perf_counter()
    n = sum(1 for r in extract(paths, make_descriptor(DESCRIPTOR), workers=workers) if r.descriptor is not None)
    dt = time.perf_counter() - t
    if n != len(paths):
        sys.exit(f"hashdup described {n} of {len(paths)} files")
    return dt


def time_index(folder: Path, workers: int) -> float:
    exe = Path(sys.executable).with_name("hashdup")
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        t = time.perf_counter()
        subprocess.run([str(exe), "index", str(folder), "--index", str(Path(tmp) / "idx"), "--workers", str(workers),
                        "--descriptor", DESCRIPTOR, "-q"], check=True)
        return time.perf_counter() - t


def time_imagededup(folder: Path, workers: int, n: int) -> float:
    from imagededup.methods import PHash

    t = time.perf_counter()
    hashes = PHash(verbose=False).encode_images(image_dir=str(folder), num_enc_workers=workers)
    dt = time.perf_counter() - t
    if len(hashes) != n:
        sys.exit(f"imagededup encoded {len(hashes)} of {n} files")
    return dt


def fft_floor_ms(repeats: int = 5, n: int = 200) -> float:
    """CPU milliseconds per image of the Fourier transforms alone of a default 128-pixel GIST (``hashdup.descriptors
    .Gist``): the whitening's two real forward/inverse pairs on the padded 138 × 138 image, the forward transform of
    the 192 × 192 padded image, and each filter group's band-limited inverse transforms, with the same shapes and
    dtypes as :meth:`Gist.describe`, on random arrays; best of ``repeats`` × ``n``. A lower bound on what any
    implementation built on these transforms spends per image."""
    import scipy.fft

    from hashdup.descriptors import Gist

    g = Gist()
    rng = np.random.default_rng(0)
    S, b = g.image_size, g.boundary
    n_pad = S + 2 * b
    small = rng.normal(size=(S + 10, S + 10)).astype(np.float32)
    padded = rng.normal(size=(n_pad, n_pad)).astype(np.float32)
    bands = [rng.normal(size=(len(grp.ids), grp.windows.shape[1], n_pad)).astype(np.complex64)
             for grp in g._bank_groups]

    def one() -> None:
        for _ in range(2):
            scipy.fft.irfft2(scipy.fft.rfft2(small), s=small.shape)
        scipy.fft.fft2(padded)
        for band in bands:
            lines = scipy.fft.ifft(band, axis=2)[:, :, b : b + S]
            scipy.fft.ifft(lines, n=n_pad, axis=1)

    for _ in range(10):
        one()
    best = np.inf
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(n):
            one()
        best = min(best, (time.process_time() - t) * 1000 / n)
    return float(best)


def stages(paths: list[str]) -> dict:
    """CPU milliseconds per image spent by this one process (``time.process_time``: not the time spent waiting for
    a core, so less sensitive to the machine's load) in each stage of hashdup's extraction, and in imagededup's
    ``PHash().encode_image``, on the same (up to) 100 files."""
    from imagededup.methods import PHash

    from hashdup.descriptors import make_descriptor
    from hashdup.io import images

    paths = paths[:100]
    g = make_descriptor(DESCRIPTOR)
    g.describe(np.zeros((1, 128, 128, 3), np.uint8))  # filter bank built outside the timing
    phash = PHash(verbose=False)
    best = {"read_hash_ms": np.inf, "decode_ms": np.inf, "describe_ms": np.inf, "imagededup_ms": np.inf}
    for _ in range(2):
        t0 = time.process_time()
        datas = [images.read_file(p).data for p in paths]
        for d in datas:
            hashlib.blake2b(d, digest_size=16).digest()
        t1 = time.process_time()
        pixels = np.stack([images.decode(d, 128).pixels for d in datas])
        t2 = time.process_time()
        g.describe(pixels)
        t3 = time.process_time()
        for p in paths:
            phash.encode_image(image_file=p)
        t4 = time.process_time()
        for key, dt in zip(best, np.diff([t0, t1, t2, t3, t4]), strict=True):
            best[key] = min(best[key], dt * 1000 / len(paths))
    best["hashdup_ms"] = best["read_hash_ms"] + best["decode_ms"] + best["describe_ms"]
    best["ratio"] = best["imagededup_ms"] / best["hashdup_ms"]
    return best


def main() -> None:
    global DESCRIPTOR
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--web", type=int, default=800, help="files in the small-photo folder")
    ap.add_argument("--camera", type=int, default=200, help="files in the camera-size folder")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--descriptor", default=DESCRIPTOR, choices=["gist+color", "gist", "color"],
                    help="descriptor of hashdup's extraction [default: the index's default, gist+color]")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()
    DESCRIPTOR = args.descriptor
    logging.disable(logging.WARNING)  # imagededup logs every folder it encodes
    worker_counts = [int(w) for w in args.workers.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    folders = {kind: build_folder(kind, n, args.shared, args.seed)
               for kind, n in (("web", args.web), ("camera", args.camera)) if n > 0}
    load_before = os.getloadavg()
    floor = fft_floor_ms()
    results = []
    for kind, folder in folders.items():
        info = describe_folder(folder)
        paths = [str(p) for p in sorted(folder.glob("*.jpg"))]
        info["stages_one_process"] = stages(paths)
        for workers in worker_counts:
            best = {"extract": np.inf, "index": np.inf, "imagededup": np.inf}
            for _ in range(args.repeats):  # interleaved, so that a burst of load hits every contender alike
                best["imagededup"] = min(best["imagededup"], time_imagededup(folder, workers, len(paths)))
                best["extract"] = min(best["extract"], time_extract(paths, workers))
                best["index"] = min(best["index"], time_index(folder, workers))
            rate = {k: len(paths) / v for k, v in best.items()}
            results.append({"folder": kind, **info, "workers": workers, "seconds": best, "images_per_s": rate,
                            "ratio_extract_vs_imagededup": rate["extract"] / rate["imagededup"]})
            print(f"# {kind} N={workers} done", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    meta = {"cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after,
            "python": sys.version.split()[0], "repeats": args.repeats, "gist_fft_floor_ms": floor}
    (OUT / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"load average (1, 5, 15 min) before {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f}, "
          f"after {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f}; {os.cpu_count()} CPUs; "
          f"best of {args.repeats}")
    for r in results:
        if r["workers"] == worker_counts[0]:
            s = r["stages_one_process"]
            print(f"{r['folder']}: {r['files']} JPEGs, {r['megapixels_median']:.2f} MP median "
                  f"({r['megapixels_range'][0]:.2f}-{r['megapixels_range'][1]:.2f}), "
                  f"{r['bytes_median'] / 1024:.0f} KiB median; CPU ms per image in one process: hashdup "
                  f"{s['hashdup_ms']:.1f} (read+hash {s['read_hash_ms']:.1f}, decode {s['decode_ms']:.1f}, "
                  f"{DESCRIPTOR} "
                  f"{s['describe_ms']:.1f}), imagededup PHash {s['imagededup_ms']:.1f}: ratio {s['ratio']:.2f}x")
    print(f"FFT calls alone of one 128-pixel GIST: {floor:.1f} ms of CPU per image")
    print(f"{'folder':8} {'N':>2} {'hashdup extract':>16} {'hashdup index':>14} {'imagededup PHash':>17} "
          f"{'extract/imagededup':>19}   (images/s)")
    for r in results:
        q = r["images_per_s"]
        print(f"{r['folder']:8} {r['workers']:>2} {q['extract']:>16.1f} {q['index']:>14.1f} {q['imagededup']:>17.1f} "
              f"{r['ratio_extract_vs_imagededup']:>18.2f}x")


if __name__ == "__main__":
    main()
