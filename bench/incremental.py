"""Incremental indexing of a large folder: first index, unchanged re-run, re-run after adding files; peak memory.

Generates a folder of small distinct JPEGs cut from the real photos of ../shared/data (random crops of 30-100 % of
the side at random places, longest side ``--size`` px, JPEG quality 70-95, seeded), then times ``hashdup index`` as
a child process (what a user runs, imports included):

1. the first index of the folder (empty index folder);
2. a re-run on the unchanged folder;
3. a re-run after ``--add`` new images were written.

For each run it reports the wall time, the summary line, and two memory figures: the peak RSS of the largest process
(``ru_maxrss`` from ``wait4``, which covers the child and the worker processes it reaped) and the peak of the summed
RSS of the whole process tree, sampled every 50 ms from /proc.

Usage (from the repository root)::

    .venv/bin/python bench/incremental.py                     # 10,000 images of 320 px, 100 added
    .venv/bin/python bench/incremental.py --n 500 --add 20    # a quick look

The generated folder is kept in bench/out/incremental/ and reused by later runs with the same --n, --size, --seed.
Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
SOURCES = ["skimage-data", "sklearn-bundled", "matplotlib-sample", "ukbench-holidays-simbench",
           "ukbench-imagededup/base"]
_cache: dict[str, object] = {}


def source_photos() -> list[Path]:
    out: list[Path] = []
    for sub in SOURCES:
        out += sorted(p for p in (SHARED / sub).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not out:
        sys.exit(f"no photos under {SHARED}")
    return out


def _load(path: Path):
    from PIL import Image

    key = str(path)
    if key not in _cache:
        im = Image.open(path).convert("RGB")
        im.thumbnail((1024, 1024))  # crops of a 1024 px copy are plenty for 320 px images, and much faster
        _cache[key] = im
    return _cache[key]


def _make(task: tuple[str, int, int, list[str]]) -> None:
    """Write one image: ``(path, size, seed, sources)``."""
    dest, size, seed, sources = task
    rng = random.Random(seed)
    im = _load(Path(rng.choice(sources)))
    w, h = im.size
    s = rng.uniform(0.3, 1.0)
    cw, ch = max(16, int(w * s)), max(16, int(h * s * rng.uniform(0.75, 1.33)))
    cw, ch = min(cw, w), min(ch, h)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = im.crop((x, y, x + cw, y + ch))
    scale = size / max(cw, ch)
    crop = crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))))
    crop.save(dest, quality=rng.randint(70, 95))


def generate(folder: Path, names: list[str], size: int, seed: int) -> float:
    """Write ``names`` (relative paths) under ``folder``; returns seconds."""
    t0 = time.perf_counter()
    sources = [str(p) for p in source_photos()]
    for d in {(folder / n).parent for n in names}:
        d.mkdir(parents=True, exist_ok=True)
    tasks = [(str(folder / n), size, seed * 1_000_003 + i, sources) for i, n in enumerate(names)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_make, tasks, chunksize=64):
            pass
    return time.perf_counter() - t0


def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of ``root`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier += kids
    return sum(rss.get(p, 0) for p in tree)


def run_index(photos: Path, index: Path, extra: list[str]) -> dict:
    """``hashdup index`` as a child: seconds, summary line, peak RSS of the largest process and of the tree."""
    out = run_hashdup(["index", str(photos), "--index", str(index), *extra])
    line = [ln for ln in out.pop("stderr").splitlines() if ln.startswith("hashdup: indexed")][-1]
    out.pop("stdout")
    return {"seconds": out.pop("seconds"), "summary": line, **out}


def run_hashdup(args: list[str]) -> dict:
    """``hashdup ARGS`` as a child: seconds, CPU seconds (the child and the workers it reaped), peak RSS of the
    largest process and of the whole tree, stdout and stderr."""
    cmd = [sys.executable, "-m", "hashdup", *args]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    captured: dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: captured.__setitem__(k, f.read()), daemon=True)
               for k, f in (("stdout", p.stdout), ("stderr", p.stderr))]
    for r in readers:
        r.start()
    peak_tree = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.is_set():
            peak_tree = max(peak_tree, _tree_rss(p.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    for r in readers:
        r.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{captured.get('stderr', '')}")
    return {"seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_largest_process_mib": round(usage.ru_maxrss / 1024, 1),
            "peak_rss_process_tree_mib": round(peak_tree / 2**20, 1), "stdout": captured.get("stdout", ""),
            "stderr": captured.get("stderr", "")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="images in the folder")
    ap.add_argument("--add", type=int, default=100, help="images added before the third run")
    ap.add_argument("--size", type=int, default=320, help="longest side of the generated images, px")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="hashdup index --workers (default: all cores)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "incremental")
    args = ap.parse_args()

    photos, index = args.out / f"photos-{args.n}-{args.size}-{args.seed}", args.out / "index"
    names = [f"{i // 1000:03d}/img{i:06d}.jpg" for i in range(args.n)]
    marker = photos / ".complete"
    gen_s = None
    if not marker.exists():
        shutil.rmtree(photos, ignore_errors=True)
        print(f"generating {args.n} images of {args.size} px in {photos} ...", file=sys.stderr)
        gen_s = round(generate(photos, names, args.size, args.seed), 1)
        marker.write_text("")
        time.sleep(2.1)  # as when photos were copied a moment before: none within the timestamp-doubt window
    shutil.rmtree(photos / "added", ignore_errors=True)
    shutil.rmtree(index, ignore_errors=True)
    extra = [] if args.workers is None else ["--workers", str(args.workers)]
    results: dict = {"n_images": args.n, "size_px": args.size, "generate_seconds": gen_s, "cpus": os.cpu_count(),
                     "workers": args.workers or "default"}
    for label, prepare in [("first_index", None), ("unchanged_rerun", None), ("after_adding", "add")]:
        if prepare == "add":
            generate(photos / "added", [f"new{i:05d}.jpg" for i in range(args.add)], args.size, args.seed + 1)
            time.sleep(2.1)
        print(f"{label} ...", file=sys.stderr)
        results[label] = run_index(photos, index, extra)
        print(f"  {results[label]['seconds']} s: {results[label]['summary']}", file=sys.stderr)
    shutil.rmtree(photos / "added", ignore_errors=True)
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
