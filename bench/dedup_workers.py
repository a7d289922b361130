"""Dedup with pixel verification on 1 and N worker processes: wall time, speed-up, and the same groups.

Two folders are built once under ``bench/out/dedup-workers/`` with ``bench/neardup_set.py`` from the real photos of
``../shared/data``:

* ``distinct/``: every original of both splits (about 200 pictures, tiles of large photos among them), no edited
  copies: a library without duplicates, where each image's nearest candidates are verified and none match;
* ``copies/``: 30 originals of the dev split with one edited copy of each of the 12 kinds (390 files): a library
  full of duplicates, where joins made inside a window cost a few extra verifications.

Each folder is indexed once (``hashdup index``, default options); then ``hashdup dedup --workers N -q`` runs in a
fresh process for each N, the reference first. The script prints the wall time of each run, the speed-up against
one worker measured in the same run, and whether the JSON output is byte-identical to one worker's (it must be).

Run from the repository root (about 8 minutes on 2 cores)::

    .venv/bin/python bench/dedup_workers.py [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neardup_set import KINDS, build_set  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out" / "dedup-workers"
EXE = Path(sys.executable).with_name("hashdup")


def build(name: str) -> Path:
    """The folder ``name`` ("distinct" or "copies"), built once and reused."""
    folder = OUT / name
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    if name == "copies":
        build_set(folder / "images", "dev", originals=30, kinds=KINDS)
    else:
        (folder / "images").mkdir(parents=True)
        for split in ("dev", "heldout"):
            part = OUT / f"{name}-{split}"
            shutil.rmtree(part, ignore_errors=True)
            build_set(part, split, kinds=())
            for f in part.iterdir():
                if f.name != "labels.json":
                    f.rename(folder / "images" / f"{split}-{f.name}")
            shutil.rmtree(part)
    (folder / "done").touch()
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated, the reference first")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ("distinct", "copies"):
        folder = build(name)
        index = OUT / f"{name}.index"
        shutil.rmtree(index, ignore_errors=True)
        subprocess.run([str(EXE), "index", str(folder / "images"), "--index", str(index), "-q"], check=True)
        n_files = sum(1 for f in (folder / "images").iterdir() if f.name != "labels.json")
        outputs = {}
        for w in counts:
            t = time.perf_counter()
            out = subprocess.run([str(EXE), "dedup", "--index", str(index), "--workers", str(w), "-q"], check=True,
                                 capture_output=True).stdout
            dt = time.perf_counter() - t
            outputs[w] = out
            rows.append({"folder": name, "files": n_files, "workers": w, "seconds": dt,
                         "groups": len(json.loads(out)), "same_as_reference": out == outputs[counts[0]]})
            print(f"# {name} workers={w}: {dt:.1f} s", file=sys.stderr, flush=True)
    meta = {"cpus": os.cpu_count(), "load_after": os.getloadavg()}
    (OUT / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"{os.cpu_count()} CPUs; load average after {meta['load_after'][0]:.1f}")
    print(f"{'folder':9} {'files':>5} {'workers':>7} {'seconds':>8} {'speed-up':>8} {'groups':>6}  same groups")
    for r in rows:
        ref = next(x for x in rows if x["folder"] == r["folder"] and x["workers"] == counts[0])
        print(f"{r['folder']:9} {r['files']:>5} {r['workers']:>7} {r['seconds']:>8.1f} "
              f"{ref['seconds'] / r['seconds']:>7.2f}x {r['groups']:>6}  {r['same_as_reference']}")


if __name__ == "__main__":
    main()
