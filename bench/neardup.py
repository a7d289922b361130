"""Near-duplicate benchmark on real photos: hashdup's defaults against imagededup and imagehash, in one run.

What it measures
    ``bench/neardup_set.py`` builds a labelled set from the photos in ``../shared/data`` (large photos cut into
    non-overlapping 400×300 tiles, each tile an original and the tiles of one photo hard negatives of each other;
    every original gets one edited copy of each of 12 kinds: jpeg, resize, crop, brightness, contrast, blur, text,
    gray, rotate, format, exif, mirror; strengths and the dev/heldout split are stated in that module's docstring).
    Each method's output becomes a set of predicted unordered pairs of files: every pair inside a group for
    hashdup (its groups are connected components), and the pairs each library reports for imagededup
    (``find_duplicates``) and imagehash (brute-force Hamming distance ≤ threshold). A pair is true when both files
    come from the same original (original-copy and copy-copy pairs). Reported per method and threshold:
    pairwise precision, recall and F1 over all pairs; per edit kind, the recall of the (original, copy of that
    kind) pairs; ``fp_same_source``, how many false pairs join two tiles (or copies of them) of one photo; and the
    seconds the method took (describing and searching; imagededup's threshold rows share one encoding).

Methods
    * ``hashdup``: the CLI as a user runs it, ``hashdup index SET --index TMP -q`` then ``hashdup dedup --index
      TMP``, with no options. ``--hashdup-args "INDEX OPTIONS | DEDUP OPTIONS"`` (repeatable) adds a row per
      variant, e.g. ``--hashdup-args "--bits 128 | --radius 6"`` or ``--hashdup-args "| --radius 5"``.
    * ``imagededup`` (PHash, DHash, WHash, AHash): ``encode_images`` once per method, then ``find_duplicates`` with
      that encoding map at ``max_distance_threshold`` 4, 6, 8, 10, 12; as many worker processes as CPUs (hashdup's
      scans use every core too). Its loader does not apply the EXIF orientation.
    * ``imagehash`` (phash, dhash, average_hash, whash, colorhash): each file opened with ``PIL.Image.open`` as in
      imagehash's README (no EXIF transpose), hashes at their default sizes (64 bits; colorhash 42), thresholds
      4-12. ``crop_resistant_hash`` is left out: its distance is not a Hamming distance and it is slow.

    The printed table shows hashdup, each baseline's best-F1 threshold in 4-12 and imagededup's default (PHash at
    10); ``--all-rows`` prints every threshold. The JSON at ``OUT/neardup-<split>.json`` holds every row.

Run from the repository root (needs ``pip install -e '.[bench]'``; 1.5-3.5 minutes a split on 2 busy cores)::

    .venv/bin/python bench/neardup.py [--split dev|heldout] [--originals N] [--seed 0] [--out bench/out]
                                      [--skip-baselines] [--hashdup-args "INDEX OPTS | DEDUP OPTS"] [--all-rows]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neardup_set import BUILDER_VERSION, KINDS, SHARED, build_set

REPO = Path(__file__).resolve().parent.parent
THRESHOLDS = (4, 6, 8, 10, 12)
SHORT = {"jpeg": "jpeg", "resize": "resiz", "crop": "crop", "brightness": "brigh", "contrast": "contr",
         "blur": "blur", "text": "text", "gray": "gray", "rotate": "rot", "format": "fmt", "exif": "exif",
         "mirror": "mirr"}
Pair = tuple[str, str]


# ---------------------------------------------------------------- scoring

def pairs_from_groups(groups: Iterable[Iterable[str]]) -> set[Pair]:
    """Every unordered pair of distinct files inside each group, as sorted tuples."""
    out: set[Pair] = set()
    for g in groups:
        members = sorted(set(g))
        out.update(itertools.combinations(members, 2))
    return out


def pairs_from_pairs(pairs: Iterable[tuple[str, str]]) -> set[Pair]:
    """The unordered pairs of a list of (a, b) pairs, as sorted tuples; self-pairs and repeats dropped."""
    return {(a, b) if a < b else (b, a) for a, b in pairs if a != b}


def score(predicted: set[Pair], files: dict[str, dict]) -> dict[str, Any]:
    """Pairwise precision, recall and F1 of ``predicted`` against the labels, and recall per edit kind.

    Parameters
    ----------
    predicted : set of (str, str)
        Predicted pairs of file names (keys of ``files``), each sorted.
    files : dict
        ``labels["files"]``: file name -> ``{"original", "kind", "source", ...}``.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (precision is 0 when nothing is predicted), ``tp``, ``n_predicted``,
        ``n_true``, ``fp_same_source`` and ``per_kind`` (kind -> recall of the (original, copy) pairs).

    Raises
    ------
    KeyError
        When a predicted pair names a file that has no label.
    """
    unknown = {p for pair in predicted for p in pair if p not in files}
    if unknown:
        raise KeyError(f"{len(unknown)} predicted files have no label, e.g. {sorted(unknown)[:3]}")
    members: dict[str, list[str]] = defaultdict(list)
    for name, lab in files.items():
        members[lab["original"]].append(name)
    n_true = sum(len(m) * (len(m) - 1) // 2 for m in members.values())
    tp = sum(files[a]["original"] == files[b]["original"] for a, b in predicted)
    fp_same_source = sum(files[a]["original"] != files[b]["original"] and files[a]["source"] == files[b]["source"]
                         for a, b in predicted)
    precision = tp / len(predicted) if predicted else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    first = {lab["original"]: name for name, lab in files.items() if lab["kind"] == "original"}
    found: dict[str, list[bool]] = defaultdict(list)
    for name, lab in files.items():
        if lab["kind"] != "original" and lab["original"] in first:
            a, b = sorted((first[lab["original"]], name))
            found[lab["kind"]].append((a, b) in predicted)
    per_kind = {k: float(np.mean(v)) for k, v in sorted(found.items())}
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "n_predicted": len(predicted),
            "n_true": n_true, "fp_same_source": fp_same_source, "per_kind": per_kind}


def keeper_accuracy(groups: Iterable[list[str]], files: dict[str, dict]) -> dict[str, Any]:
    """Of the groups that contain an original (``kind == "original"``), the fraction whose keeper (each group's
    first name) is that original, and what was kept instead (edit kind -> count)."""
    hits, total, instead = 0, 0, defaultdict(int)
    for g in groups:
        if not any(files[n]["kind"] == "original" for n in g):
            continue
        total += 1
        kind = files[g[0]]["kind"]
        hits += kind == "original"
        if kind != "original":
            instead[kind] += 1
    return {"keeper_original": hits / total if total else float("nan"), "groups_with_original": total,
            "kept_instead": dict(sorted(instead.items()))}


def _names(paths: Iterable[str], set_dir: Path, cwd: Path) -> list[str]:
    """File names relative to ``set_dir`` of paths that are relative to ``cwd`` or absolute."""
    root = os.path.realpath(set_dir)
    return [os.path.relpath(os.path.realpath(os.path.join(cwd, p)), root) for p in paths]


# ---------------------------------------------------------------- methods

def hashdup_exe() -> list[str]:
    """The ``hashdup`` console script next to this interpreter, else the one on PATH, else ``python -m hashdup``."""
    here = Path(sys.executable).parent / "hashdup"
    if here.exists():
        return [str(here)]
    found = shutil.which("hashdup")
    return [found] if found else [sys.executable, "-m", "hashdup"]


def run_hashdup(set_dir: Path, work: Path, index_args: list[str], dedup_args: list[str],
                index_dir: Path | None = None) -> tuple[list[list[str]], float, float, Path]:
    """Run ``hashdup index`` (unless ``index_dir`` already holds one) and ``hashdup dedup`` as subprocesses.

    Returns
    -------
    (groups, index_s, dedup_s, index_dir)
        Groups as lists of file names under ``set_dir``, the keeper first, the seconds each command took, and the
        index used.
    """
    exe = hashdup_exe()
    index_s = 0.0
    if index_dir is None:
        index_dir = Path(tempfile.mkdtemp(prefix="idx-", dir=work)) / "index"
        t = time.perf_counter()
        subprocess.run([*exe, "index", str(set_dir), "--index", str(index_dir), "-q", *index_args], cwd=work,
                       check=True)
        index_s = time.perf_counter() - t
    t = time.perf_counter()
    res = subprocess.run([*exe, "dedup", "--index", str(index_dir), *dedup_args], cwd=work, check=True,
                         capture_output=True, text=True)
    dedup_s = time.perf_counter() - t
    groups = [_names([g["keep"]] + [p for p in g["paths"] if p != g["keep"]], set_dir, work)
              for g in json.loads(res.stdout)]
    return groups, index_s, dedup_s, index_dir


def run_imagededup(set_dir: Path, thresholds: Iterable[int] = THRESHOLDS) -> list[dict[str, Any]]:
    """``[{"method", "threshold", "pairs", "seconds"}]`` for PHash, DHash, WHash and AHash of imagededup."""
    import logging
    import warnings

    from imagededup.methods import AHash, DHash, PHash, WHash

    for name in list(logging.root.manager.loggerDict):   # each imagededup module logs INFO lines to stderr
        if name.startswith("imagededup"):
            logging.getLogger(name).setLevel(logging.ERROR)
    workers = os.cpu_count() or 1
    rows = []
    for cls in (PHash, DHash, WHash, AHash):
        method = cls(verbose=False)
        t = time.perf_counter()
        encodings = method.encode_images(image_dir=str(set_dir), num_enc_workers=workers)
        encode_s = time.perf_counter() - t
        for thr in thresholds:
            t = time.perf_counter()
            with warnings.catch_warnings():   # "num_enc_workers has no effect", said whenever encodings are given
                warnings.simplefilter("ignore", RuntimeWarning)
                dups = method.find_duplicates(encoding_map=encodings, max_distance_threshold=thr,
                                              num_dist_workers=workers)
            pairs = pairs_from_pairs((a, b) for a, others in dups.items() for b in others)
            rows.append({"method": f"imagededup {cls.__name__}", "threshold": thr, "pairs": pairs,
                         "seconds": encode_s + time.perf_counter() - t})
    return rows


def run_imagehash(set_dir: Path, names: list[str], thresholds: Iterable[int] = THRESHOLDS) -> list[dict[str, Any]]:
    """``[{"method", "threshold", "pairs", "seconds"}]`` for imagehash's Hamming hashes, brute force."""
    import imagehash
    from PIL import Image

    funcs = {"phash": imagehash.phash, "dhash": imagehash.dhash, "average_hash": imagehash.average_hash,
             "whash": imagehash.whash, "colorhash": imagehash.colorhash}
    bits: dict[str, list[np.ndarray]] = {k: [] for k in funcs}
    seconds = dict.fromkeys(funcs, 0.0)
    for name in names:
        t = time.perf_counter()
        with Image.open(set_dir / name) as im:
            im.load()
            load_s = time.perf_counter() - t
            for key, fn in funcs.items():
                t = time.perf_counter()
                bits[key].append(np.asarray(fn(im).hash, dtype=bool).ravel())
                seconds[key] += load_s + time.perf_counter() - t
    rows = []
    for key in funcs:
        t = time.perf_counter()
        B = np.stack(bits[key]).astype(np.float32)
        D = B @ (1 - B).T + (1 - B) @ B.T          # Hamming distances, exact in float32 for <= 2^24 bits
        iu, ju = np.triu_indices(len(names), k=1)
        d = D[iu, ju]
        search_s = time.perf_counter() - t
        for thr in thresholds:
            t = time.perf_counter()
            hit = np.flatnonzero(d <= thr)
            pairs = pairs_from_pairs((names[iu[h]], names[ju[h]]) for h in hit)
            rows.append({"method": f"imagehash {key}", "threshold": thr, "pairs": pairs,
                         "seconds": seconds[key] + search_s + time.perf_counter() - t})
    return rows


# ---------------------------------------------------------------- the run

def prepare_set(out: Path, split: str, seed: int, originals: int | None) -> tuple[Path, dict]:
    """Build the set under ``out/neardup-<split>-set``, or reuse it when it was built with the same parameters."""
    set_dir = out / f"neardup-{split}-set"
    want = {"builder_version": BUILDER_VERSION, "split": split, "seed": seed, "n": originals}
    stamp = set_dir / "built-with.json"
    if stamp.exists() and json.loads(stamp.read_text()) == want and (set_dir / "images" / "labels.json").exists():
        return set_dir / "images", json.loads((set_dir / "images" / "labels.json").read_text())
    if set_dir.exists():
        shutil.rmtree(set_dir)
    labels = build_set(set_dir / "images", split=split, seed=seed, originals=originals, shared=SHARED)
    stamp.write_text(json.dumps(want))
    return set_dir / "images", labels


def _row(method: str, threshold: Any, pairs: set[Pair], seconds: float, files: dict) -> dict[str, Any]:
    return {"method": method, "threshold": threshold, "seconds": round(seconds, 2), **score(pairs, files)}


def table(rows: list[dict[str, Any]]) -> str:
    """An aligned text table: method, threshold, P, R, F1, seconds, per-kind recall."""
    kinds = [k for k in KINDS if any(k in r["per_kind"] for r in rows)]
    wide = max([len("method")] + [len(r["method"]) for r in rows])
    head = (f"{'method':<{wide}} {'thr':>4} {'P':>5} {'R':>5} {'F1':>5} {'fpSS':>5} {'sec':>6} "
            + " ".join(f"{SHORT[k]:>5}" for k in kinds))
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<{wide}} {r['threshold']!s:>4} {r['precision']:5.3f} {r['recall']:5.3f} "
                     f"{r['f1']:5.3f} {r['fp_same_source']:5d} {r['seconds']:6.1f} "
                     + " ".join(f"{r['per_kind'].get(k, float('nan')):5.2f}" for k in kinds))
    return "\n".join(lines)


def shown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """hashdup rows, the best-F1 row of each baseline method, and imagededup's default (PHash at 10)."""
    out = [r for r in rows if r["method"].startswith("hashdup")]
    methods = list(dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("hashdup")))
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        best = max(mine, key=lambda r: (r["f1"], -r["threshold"]))
        out.append({**best, "method": f"{m} (best)"})
    out += [{**r, "method": f"{r['method']} (default)"} for r in rows
            if r["method"] == "imagededup PHash" and r["threshold"] == 10]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=["dev", "heldout"], default="dev")
    ap.add_argument("--originals", type=int, default=None, help="Keep this many originals (seeded choice).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--skip-baselines", action="store_true", help="Run hashdup only.")
    ap.add_argument("--hashdup-args", action="append", default=[], metavar='"INDEX OPTS | DEDUP OPTS"',
                    help="An extra hashdup variant (repeatable); the part after | goes to dedup.")
    ap.add_argument("--all-rows", action="store_true", help="Print every baseline threshold, not only the best.")
    args = ap.parse_args(argv)
    if args.originals is not None and args.originals < 1:
        ap.error("--originals must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    set_dir, labels = prepare_set(args.out, args.split, args.seed, args.originals)
    files = labels["files"]
    names = sorted(files)
    print(f"neardup: {args.split} set: {len(labels['originals'])} originals from {len(labels['sources'])} photos, "
          f"{len(files)} files, {score(set(), files)['n_true']} true pairs, in {set_dir} "
          f"({time.perf_counter() - t:.1f} s)", file=sys.stderr)

    rows = []
    variants = [("", "")] + [tuple(([*v.split("|", 1), ""])[:2]) for v in args.hashdup_args]
    built: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="neardup-") as tmp:
        for index_opts, dedup_opts in variants:
            key = " ".join(shlex.split(index_opts))
            try:
                groups, index_s, dedup_s, idx = run_hashdup(set_dir, Path(tmp), shlex.split(index_opts),
                                                            shlex.split(dedup_opts), built.get(key))
            except subprocess.CalledProcessError as e:
                sys.exit(f"neardup: {' '.join(e.cmd)} failed with status {e.returncode}\n{e.stderr or ''}")
            built[key] = idx
            label = "hashdup" + (f" [{index_opts.strip()} | {dedup_opts.strip()}]" if index_opts or dedup_opts
                                 else " defaults")
            rows.append({**_row(label, "-", pairs_from_groups(groups), index_s + dedup_s, files),
                         **keeper_accuracy(groups, files)})
            print(f"neardup: {label}: index {index_s:.1f} s, dedup {dedup_s:.1f} s", file=sys.stderr)
    if not args.skip_baselines:
        for runner in (lambda: run_imagededup(set_dir), lambda: run_imagehash(set_dir, names)):
            t = time.perf_counter()
            found = runner()
            rows += [_row(r["method"], r["threshold"], r["pairs"], r["seconds"], files) for r in found]
            print(f"neardup: {found[0]['method'].split()[0]}: {time.perf_counter() - t:.1f} s", file=sys.stderr)

    result = {"split": args.split, "seed": args.seed, "originals": len(labels["originals"]),
              "sources": labels["sources"], "files": len(files), "true_pairs": score(set(), files)["n_true"],
              "rows": rows}
    path = args.out / f"neardup-{args.split}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows if args.all_rows else shown(rows)))
    for r in rows:
        if "keeper_original" in r:
            print(f"{r['method']}: the keeper is the original in {r['keeper_original']:.3f} of the "
                  f"{r['groups_with_original']} groups that contain it; kept instead: {r['kept_instead'] or 'none'}")
    print(f"neardup: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
