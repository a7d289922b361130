"""End-to-end duplicate finding: hashdup's CLI against imagededup's PHash on the same folder, wall time and accuracy.

What it measures
    What a user waits for, from a folder of images to its duplicates, each tool started in fresh processes so that
    interpreter start-up and imports count alike. Per method: the wall seconds of indexing (describing) and of
    finding the duplicates, their sum, the CPU seconds of the processes (``getrusage(RUSAGE_CHILDREN)`` deltas; this
    script makes itself a child subreaper on Linux, so the CPU of the fork server that runs hashdup's decoding
    workers is collected too), and the pairwise precision, recall and F1 of the predicted pairs against the labels
    (``score`` of ``bench/neardup.py``: a pair is true when both files come from the same original).

Methods
    * ``hashdup``: ``hashdup index SET --index TMP -q`` then ``hashdup dedup --index TMP`` (JSON groups on stdout;
      every pair inside a group is predicted), no options. ``--hashdup-args "INDEX OPTS | DEDUP OPTS"``
      (repeatable) adds a row per variant; variants with the same index options share one index run (their rows
      repeat its figures), each dedup running on a fresh copy of it, so that none finds the verdicts another stored.
    * ``imagededup PHash``: one subprocess runs ``PHash().encode_images(image_dir=SET)`` then
      ``find_duplicates(encoding_map=..., max_distance_threshold=10)`` (imagededup's defaults: as many worker
      processes as CPUs). Its index and dedup columns are the encode and find seconds the child measured; its total
      is the wall time of the whole subprocess, imports included; its CPU columns are likewise the child's own.

Sets (``--set``, repeatable; heldout and tiles by default)
    * ``heldout``: ``bench/neardup_set.py``'s held-out split, 116 originals with 12 edited copies each (1,508
      files), dense in duplicates.
    * ``tiles``: ``bench/tiles_set.py``, ``--n-originals`` distinct 128×96 tiles of the shared photos (2,000 by
      default) and one edited copy of every tenth (2,200 files), sparse in duplicates like a real library.
    * ``distinct``: the same tiles without their copies (2,000 files, no duplicates at all): what dedup costs per
      image when there is nothing to find (``dedup_cpu_ms_per_image``).

    Each is built once under ``--out`` and reused while their parameters are unchanged. The table goes to stdout
    with the ratio ``hashdup / imagededup wall`` of totals, ``nproc`` and the load average before and after;
    ``OUT/dedup_e2e-<set>.json`` holds every figure.

Run from the repository root (needs ``pip install -e '.[bench]'``)::

    .venv/bin/python bench/dedup_e2e.py [--set heldout|tiles] [--n-originals 2000] [--seed 0] [--out bench/out]
                                        [--hashdup-args "INDEX OPTS | DEDUP OPTS"] [--skip-imagededup]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neardup import (
    REPO,
    hashdup_exe,
    pairs_from_groups,
    pairs_from_pairs,
    prepare_set,
    run_hashdup,
    score,
)
from tiles_set import TILE, TILES_VERSION, build_tiles

T = TypeVar("T")
IMAGEDEDUP_CHILD = """
import json, resource, sys, time
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
t0, c0 = time.perf_counter(), cpu()
from imagededup.methods import PHash
p = PHash()
t1, c1 = time.perf_counter(), cpu()
enc = p.encode_images(image_dir=sys.argv[1])
t2, c2 = time.perf_counter(), cpu()
dups = p.find_duplicates(encoding_map=enc, max_distance_threshold=10)
t3, c3 = time.perf_counter(), cpu()
json.dump({"import_s": t1 - t0, "encode_s": t2 - t1, "find_s": t3 - t2, "encode_cpu_s": c2 - c1,
           "find_cpu_s": c3 - c2, "duplicates": dups}, sys.stdout)
"""


def _become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``), so their CPU reaches ``RUSAGE_CHILDREN``."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _reap(patience: float = 10.0) -> None:
    """Wait for adopted orphans (a fork server, a resource tracker) to exit, at most ``patience`` seconds."""
    end = time.monotonic() + patience
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """``(fn(), wall seconds, CPU seconds of the child processes it ran)``."""
    r0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    _reap()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def prepare_tiles(out: Path, n_originals: int, seed: int, copies: bool = True) -> tuple[Path, dict]:
    """Build the tiles set under ``out/tiles-set`` (``out/distinct-set`` without ``copies``), or reuse it when it was
    built with the same parameters."""
    set_dir = out / ("tiles-set" if copies else "distinct-set")
    copy_every = 10 if copies else n_originals + 1
    want = {"builder_version": TILES_VERSION, "n_originals": n_originals, "seed": seed, "tile": list(TILE),
            "copy_every": copy_every}
    stamp = set_dir / "built-with.json"
    if stamp.exists() and json.loads(stamp.read_text()) == want and (set_dir / "images" / "labels.json").exists():
        return set_dir / "images", json.loads((set_dir / "images" / "labels.json").read_text())
    if set_dir.exists():
        shutil.rmtree(set_dir)
    labels = build_tiles(set_dir / "images", n_originals=n_originals, copy_every=copy_every, seed=seed)
    stamp.write_text(json.dumps(want))
    return set_dir / "images", labels


def hashdup_index(set_dir: Path, work: Path, index_args: list[str]) -> Path:
    """Run ``hashdup index`` into a new folder under ``work``, as ``run_hashdup`` does; return the index path."""
    index_dir = Path(tempfile.mkdtemp(prefix="idx-", dir=work)) / "index"
    subprocess.run([*hashdup_exe(), "index", str(set_dir), "--index", str(index_dir), "-q", *index_args], cwd=work,
                   check=True)
    return index_dir


def run_imagededup(set_dir: Path) -> dict[str, Any]:
    """imagededup's PHash at its defaults in a fresh interpreter: the child's own timings and the found pairs."""
    res = subprocess.run([sys.executable, "-c", IMAGEDEDUP_CHILD, str(set_dir)], capture_output=True, text=True,
                         check=True)
    out = json.loads(res.stdout)
    out["pairs"] = pairs_from_pairs((a, b) for a, others in out.pop("duplicates").items() for b in others)
    return out


def _row(method: str, index: tuple[float, float], dedup: tuple[float, float], total_s: float, total_cpu_s: float,
         pairs: set, files: dict, **extra: Any) -> dict[str, Any]:
    (index_s, index_cpu), (dedup_s, dedup_cpu) = index, dedup
    acc = score(pairs, files)
    del acc["per_kind"]
    return {"method": method, "index_s": index_s, "dedup_s": dedup_s, "total_s": total_s, "index_cpu_s": index_cpu,
            "dedup_cpu_s": dedup_cpu, "total_cpu_s": total_cpu_s,
            "dedup_cpu_ms_per_image": 1000 * dedup_cpu / len(files), **acc, **extra}


def table(rows: list[dict[str, Any]]) -> str:
    """An aligned text table: method, wall seconds (index, dedup, total), P, R, F1, dedup CPU ms per image."""
    wide = max([len("method")] + [len(r["method"]) for r in rows])
    head = (f"{'method':<{wide}} {'index s':>8} {'dedup s':>8} {'total s':>8} {'P':>6} {'R':>6} {'F1':>6} "
            f"{'dedup CPU ms/img':>17}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<{wide}} {r['index_s']:8.2f} {r['dedup_s']:8.2f} {r['total_s']:8.2f} "
                     f"{r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} {r['dedup_cpu_ms_per_image']:17.2f}")
    return "\n".join(lines)


def run_set(name: str, set_dir: Path, labels: dict, args: argparse.Namespace) -> dict[str, Any]:
    """Every method on one set; returns the JSON record (machine, set, rows, ratios)."""
    files = labels["files"]
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    variants = [("", "")] + [tuple(([*v.split("|", 1), ""])[:2]) for v in args.hashdup_args]
    built: dict[str, tuple[Path, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dedup-e2e-") as tmp:
        work = Path(tmp)
        for index_opts, dedup_opts in variants:
            key = " ".join(shlex.split(index_opts))
            try:
                if key not in built:
                    built[key] = timed(partial(hashdup_index, set_dir, work, shlex.split(index_opts)))
                pristine, index_s, index_cpu = built[key]
                idx = Path(tempfile.mkdtemp(prefix="run-", dir=work)) / "index"
                shutil.copytree(pristine, idx)   # dedup stores its verdicts in the index: each run starts without
                (groups, _, _, _), dedup_s, dedup_cpu = timed(
                    partial(run_hashdup, set_dir, work, [], shlex.split(dedup_opts), index_dir=idx))
            except subprocess.CalledProcessError as e:
                sys.exit(f"dedup_e2e: {' '.join(map(str, e.cmd))} failed with status {e.returncode}\n{e.stderr or ''}")
            label = "hashdup" + (f" [{index_opts.strip()} | {dedup_opts.strip()}]" if index_opts or dedup_opts
                                 else " defaults")
            rows.append(_row(label, (index_s, index_cpu), (dedup_s, dedup_cpu), index_s + dedup_s,
                             index_cpu + dedup_cpu, pairs_from_groups(groups), files, n_groups=len(groups)))
            print(f"dedup_e2e: {name}: {label}: index {index_s:.1f} s, dedup {dedup_s:.1f} s", file=sys.stderr)
    if not args.skip_imagededup:
        try:
            child, wall, cpu = timed(partial(run_imagededup, set_dir))
        except subprocess.CalledProcessError as e:
            sys.exit(f"dedup_e2e: imagededup failed with status {e.returncode}\n{e.stderr}")
        rows.append(_row("imagededup PHash (thr 10)", (child["encode_s"], child["encode_cpu_s"]),
                         (child["find_s"], child["find_cpu_s"]), wall, cpu, child["pairs"], files,
                         import_s=child["import_s"]))
        print(f"dedup_e2e: {name}: imagededup PHash: {wall:.1f} s, of which import {child['import_s']:.1f} s",
              file=sys.stderr)
    ref = next((r for r in rows if r["method"].startswith("imagededup")), None)
    ratios = {r["method"]: r["total_s"] / ref["total_s"] for r in rows if ref and r is not ref}
    return {"set": name, "set_dir": str(set_dir), "files": len(files), "originals": len(labels["originals"]),
            "true_pairs": score(set(), files)["n_true"], "seed": args.seed,
            "nproc": len(os.sched_getaffinity(0)), "load_before": load_before, "load_after": os.getloadavg(),
            "rows": rows, "wall_ratio_to_imagededup": ratios}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", action="append", choices=["heldout", "tiles", "distinct"], dest="sets",
                    help="Set to run (repeatable); heldout and tiles by default.")
    ap.add_argument("--n-originals", type=int, default=2000, help="Distinct tiles in the tiles set.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--hashdup-args", action="append", default=[], metavar='"INDEX OPTS | DEDUP OPTS"',
                    help="An extra hashdup variant (repeatable); the part after | goes to dedup.")
    ap.add_argument("--skip-imagededup", action="store_true", help="Run hashdup only.")
    args = ap.parse_args(argv)
    if args.n_originals < 1:
        ap.error("--n-originals must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    _become_subreaper()
    for name in dict.fromkeys(args.sets or ["heldout", "tiles"]):
        t = time.perf_counter()
        if name == "heldout":
            set_dir, labels = prepare_set(args.out, "heldout", args.seed, None)
        else:
            set_dir, labels = prepare_tiles(args.out, args.n_originals, args.seed, copies=name == "tiles")
        print(f"dedup_e2e: {name} set: {len(labels['files'])} files in {set_dir} ({time.perf_counter() - t:.1f} s)",
              file=sys.stderr)
        rec = run_set(name, set_dir, labels, args)
        print(f"== {name}: {rec['files']} files, {rec['originals']} originals, {rec['true_pairs']} true pairs; "
              f"nproc {rec['nproc']}, load average before {' '.join(f'{x:.2f}' for x in rec['load_before'])}, "
              f"after {' '.join(f'{x:.2f}' for x in rec['load_after'])}")
        print(table(rec["rows"]))
        for method, ratio in rec["wall_ratio_to_imagededup"].items():
            print(f"{method} / imagededup wall = {ratio:.2f}x")
        for r in rec["rows"]:
            if "import_s" in r:
                print(f"{r['method']}: total includes {r['import_s']:.1f} s of Python start-up and imports")
        path = args.out / f"dedup_e2e-{name}.json"
        path.write_text(json.dumps(rec, indent=1) + "\n")
        print(f"dedup_e2e: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
