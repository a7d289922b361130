"""One end-to-end run at library scale: ``hashdup index`` then ``hashdup dedup`` on a generated folder.

The folder holds ``--n`` small JPEGs of longest side ``--size`` px, seeded: by default distinct generated
pictures (``--kind shapes``, :func:`shapes.generate_shapes`: every image its own random scene), or random crops of
the real photos of ../shared/data (``--kind crops``, :func:`incremental.generate`; at 100,000 crops of some sixty
photos most crops lie inside others, so most images are genuine near-duplicates of others), and one edited copy
(a re-encode at quality 60) of every ``--copy-every``-th of them, so that dedup has groups to find. Both commands
run as child processes, as a user runs them (default options, every core); for each the script reports the wall
time, the CPU time, the peak RSS of the largest process and of the whole process tree, and, from ``hashdup info``,
the index's bytes per image (all files, and the local-feature file alone); for each dedup, how many groups are
exactly an image and its copy.

Usage (from the repository root)::

    .venv/bin/python bench/scale.py                  # 100,000 images of 256 px (about 50 minutes on 2 cores)
    .venv/bin/python bench/scale.py --n 2000         # a quick look

The generated folder is kept in bench/out/scale-N-SIZE/ and reused. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from incremental import REPO, generate, run_hashdup
from shapes import generate_shapes


def add_copies(folder: Path, names: list[str], every: int) -> int:
    """Write a quality-60 re-encode of every ``every``-th image next to it; returns how many."""
    from PIL import Image

    n = 0
    for name in names[::every]:
        with Image.open(folder / name) as im:
            im.convert("RGB").save(folder / name.replace(".jpg", "_q60.jpg"), quality=60)
        n += 1
    return n


def score_groups(groups: list[dict], n_copies: int) -> dict:
    """How many groups ``dedup`` printed, and how many are exactly an image and its ``_q60`` copy (of
    ``n_copies``): with distinct pictures every other group is a false one."""
    exact = sum(1 for g in groups if len(g["paths"]) == 2
                and g["paths"][1] == g["paths"][0].replace(".jpg", "_q60.jpg"))
    return {"groups": len(groups), "copy_pairs_found": exact, "copies": n_copies}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--copy-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", choices=("shapes", "crops"), default="shapes",
                    help="Distinct generated pictures (default), or random crops of the shared photos.")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--reuse-index", action="store_true",
                    help="Keep the index of the last run and time only the dedup steps (stored decisions removed).")
    args = ap.parse_args()
    folder = args.out / f"scale-{args.kind}-{args.n}-{args.size}"
    photos, index = folder / "photos", folder / "index"
    stamp = folder / "built-with.json"
    want = {"n": args.n, "size": args.size, "seed": args.seed, "copy_every": args.copy_every, "kind": args.kind}
    names = [f"{i // 1000:03d}/{i:06d}.jpg" for i in range(args.n)]
    if not (stamp.exists() and json.loads(stamp.read_text()) == want):
        shutil.rmtree(folder, ignore_errors=True)
        print(f"scale: generating {args.n} images of {args.size} px in {photos}", file=sys.stderr)
        (generate_shapes if args.kind == "shapes" else generate)(photos, names, args.size, args.seed)
        add_copies(photos, names, args.copy_every)
        stamp.write_text(json.dumps(want))
    steps = [("index", ["index", str(photos), "--index", str(index), "-q"]),
             ("dedup", ["dedup", "--index", str(index), "-q"]),
             ("dedup_again", ["dedup", "--index", str(index), "-q"])]
    result: dict = {"images": args.n + len(names[:: args.copy_every]), "size": args.size, "kind": args.kind}
    if args.reuse_index:
        steps = steps[1:]
        for cache in ("verdicts.hdv", "links.hdl"):
            (index / cache).unlink(missing_ok=True)
    else:
        shutil.rmtree(index, ignore_errors=True)
    for step, cmd in steps:
        print(f"scale: hashdup {' '.join(cmd)}", file=sys.stderr)
        out = run_hashdup(cmd)
        if step != "index":
            out.update(score_groups(json.loads(out["stdout"]), len(names[:: args.copy_every])))
        out.pop("stdout")
        out.pop("stderr")
        result[step] = out
        print(f"scale: {step}: {out}", file=sys.stderr)
    info = json.loads(run_hashdup(["info", "--index", str(index)])["stdout"])
    n = info["indexed"]
    result["indexed"] = n
    result["bytes_per_image"] = round(info["bytes_on_disk"]["total"] / n, 1)
    result["feature_bytes_per_image"] = round(info["bytes_on_disk"]["features"] / n, 1)
    if "index" in result:
        result["seconds_total"] = round(result["index"]["seconds"] + result["dedup"]["seconds"], 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
