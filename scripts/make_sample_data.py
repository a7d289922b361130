"""Generate the bundled demo/test photo set ``sample_data/`` for hashdup.

Reads source photos from ``../shared/data`` (relative to the repo root) and
deterministically writes:

  sample_data/photos/  distinct originals (longer side 640 px, JPEG q=90, no EXIF)
  sample_data/copies/  edited copies forming known duplicate groups
  sample_data/bad/     deliberately broken files
  sample_data/README.md  inventory, provenance/licences and ground truth

Uses only Pillow, numpy and the stdlib. Fixed parameters, no timestamps and no source
metadata, so two runs give byte-identical files.  Usage: python scripts/make_sample_data.py
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
SK, SKL = "skimage-data", "sklearn-bundled"
UKB, HOL = "ukbench-holidays-simbench/ukbench", "ukbench-holidays-simbench/holidays"
SK_DS = "scikit-image 0.26.0 `skimage.data` (licence per its docstrings)"
SKL_DS = "scikit-learn 1.9.1 `load_sample_images`"
UKB_DS = "UKBench (Nistér & Stewénius, CVPR 2006), via sim-bench samples"
HOL_DS = "INRIA Holidays (Jégou, Douze & Schmid, ECCV 2008), via sim-bench samples"
FLICKR = "CC-BY 2.0, Flickr user {} (see sklearn IMAGES-LICENSE.txt)"
RESEARCH = "research use; cite the paper"
ORIG_SIDE, LARGE_SIDE, LARGE_Q, SMALL_SIDE = 640, 1600, 85, 800

# name -> (source path under shared/data, dataset, licence)
SOURCES = {
    "astronaut": (f"{SK}/astronaut.png", SK_DS, "public domain (NASA)"),
    "chelsea": (f"{SK}/chelsea.png", SK_DS, "CC0 (Stéfan van der Walt)"),
    "coffee": (f"{SK}/coffee.png", SK_DS, "CC0 (Rachel Michetti)"),
    "camera": (f"{SK}/camera.png", SK_DS, "CC0 (Lav Varshney); grayscale"),
    "rocket": (f"{SK}/rocket.jpg", SK_DS, "public domain (SpaceX)"),
    "hubble_deep_field": (f"{SK}/hubble_deep_field.jpg", SK_DS, "public domain (NASA)"),
    "retina": (f"{SK}/retina.jpg", SK_DS, "CC0 (Wikimedia)"),
    "motorcycle_left": (f"{SK}/motorcycle_left.png", SK_DS + ", Middlebury 2014 stereo",
                        "cite Scharstein et al., GCPR 2014"),
    "china": (f"{SKL}/china.jpg", SKL_DS, FLICKR.format("danielbuechele")),
    "flower": (f"{SKL}/flower.jpg", SKL_DS, FLICKR.format("vultilion")),
    "grace_hopper": ("matplotlib-sample/grace_hopper.jpg", "matplotlib 3.11.2 sample_data",
                     "public domain (US Navy photograph)"),
    "ukbench00000": (f"{UKB}/ukbench00000.jpg", UKB_DS, RESEARCH),
    "ukbench00004": (f"{UKB}/ukbench00004.jpg", UKB_DS, RESEARCH),
    "holidays_100000": (f"{HOL}/100000.jpg", HOL_DS, RESEARCH),
}


def fit(im: Image.Image, side: int) -> Image.Image:
    """Resize (LANCZOS) so the longer side equals ``side``."""
    scale = side / max(im.size)
    return im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)


def save_jpeg(im: Image.Image, path: Path, quality: int, **extra) -> None:
    im.save(path, "JPEG", quality=quality, optimize=True, **extra)


Notes = dict[str, tuple[str, "str | None"]]  # relative path -> (description, SOURCES key)


def make_photos(shared: Path, out: Path) -> Notes:
    """Write the originals; return their notes."""
    notes = {}
    for name, (rel, _, _) in SOURCES.items():
        with Image.open(shared / rel) as src:
            im = ImageOps.exif_transpose(src).convert("L" if src.mode == "L" else "RGB")
        large = name == "holidays_100000"
        im = fit(im, LARGE_SIDE if large else ORIG_SIDE)
        save_jpeg(im, out / "photos" / f"{name}.jpg", LARGE_Q if large else 90)
        kind = "large original" if large else "original"
        notes[f"photos/{name}.jpg"] = (f"{kind}, {im.width}x{im.height} {im.mode}", name)
    return notes


def check_exif_rotation(path: Path, original: Image.Image) -> float:
    """Assert an EXIF-honouring viewer shows ``path`` like ``original``; return mean abs diff."""
    with Image.open(path) as rotated:
        shown = ImageOps.exif_transpose(rotated).convert("RGB")
    assert shown.size == original.size, (shown.size, original.size)
    diff = float(np.abs(np.asarray(shown, np.int16) - np.asarray(original, np.int16)).mean())
    assert diff < 8, f"EXIF-rotated copy differs too much: {diff:.2f}"
    return diff


def make_copies(out: Path) -> tuple[Notes, float]:
    """Write edited copies derived from photos/; return notes and the EXIF check diff."""
    photos, copies = out / "photos", out / "copies"
    ims = {}
    for n in ("chelsea", "astronaut", "coffee", "china", "flower", "holidays_100000"):
        with Image.open(photos / f"{n}.jpg") as im:
            ims[n] = im.convert("RGB")
    ast, cof, china = ims["astronaut"], ims["coffee"], ims["china"]
    dx, dy = round(cof.width * 0.05), round(cof.height * 0.05)
    save_jpeg(ims["chelsea"], copies / "chelsea_q30.jpg", 30)
    save_jpeg(ast.resize((ast.width // 2, ast.height // 2), Image.LANCZOS),
              copies / "astronaut_half.jpg", 90)
    save_jpeg(cof.crop((dx, dy, cof.width - dx, cof.height - dy)), copies / "coffee_crop.jpg", 90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation 6: a viewer rotates 90 deg clockwise to display
    save_jpeg(china.transpose(Image.ROTATE_90), copies / "china_exif_rotated.jpg", 90,
              exif=exif.tobytes())
    diff = check_exif_rotation(copies / "china_exif_rotated.jpg", china)
    shutil.copyfile(photos / "grace_hopper.jpg", copies / "grace_hopper_copy.jpg")
    ims["flower"].save(copies / "flower.png", "PNG", optimize=True)
    save_jpeg(fit(ims["holidays_100000"], SMALL_SIDE), copies / "holidays_100000_small.jpg", 75)
    notes = {
        "chelsea_q30.jpg": ("chelsea re-encoded as JPEG q=30", "chelsea"),
        "astronaut_half.jpg": ("astronaut resized to 50 % (LANCZOS), q=90", "astronaut"),
        "coffee_crop.jpg": ("coffee cropped to central 90 % (5 % off each side), q=90", "coffee"),
        "china_exif_rotated.jpg": ("china pixels rotated 90° CCW, EXIF Orientation=6 "
                                   "(displays upright)", "china"),
        "grace_hopper_copy.jpg": ("byte-identical copy of grace_hopper.jpg", "grace_hopper"),
        "flower.png": ("flower.jpg decoded and saved as PNG (same pixels)", "flower"),
        "holidays_100000_small.jpg": ("holidays_100000 resized to longer side 800, q=75",
                                      "holidays_100000"),
    }
    return {f"copies/{k}": v for k, v in notes.items()}, diff


def make_bad(out: Path) -> Notes:
    """Write deliberately broken files."""
    data = (out / "photos" / "rocket.jpg").read_bytes()
    (out / "bad" / "truncated.jpg").write_bytes(data[: len(data) * 40 // 100])
    (out / "bad" / "notes.jpg").write_bytes(b"this is not an image\n")
    return {"bad/truncated.jpg": ("first 40 % of the bytes of photos/rocket.jpg (truncated JPEG)",
                                  "rocket"),
            "bad/notes.jpg": ("UTF-8 text file with a .jpg name", None)}


def write_readme(out: Path, notes: Notes) -> None:
    rows = []
    for rel, (what, key) in notes.items():
        src, ds, lic = SOURCES[key] if key else ("", "— (text written by the script)", "—")
        rows.append(f"| `{rel}` | {what} | {f'`{src}`' if src else '—'} | {ds} | {lic} |")
    groups = "\n".join(f"- {{`photos/{key}.jpg`, `{rel}`}}"
                        for rel, (_, key) in notes.items() if rel.startswith("copies/"))
    text = f"""# hashdup sample data

Small demo/test photo set for hashdup. Generated; do not edit by hand. Regenerate with:

    python scripts/make_sample_data.py

(sources: `../shared/data` relative to the repo root; override with `--shared PATH`).
Originals are resized (LANCZOS) to a longer side of {ORIG_SIDE} px, JPEG q=90, no EXIF;
`holidays_100000.jpg` is large ({LARGE_SIDE} px, q={LARGE_Q}) to exercise reduced-size
JPEG decoding.

## Files

| path | what it is | source in `../shared/data` | dataset | licence |
|---|---|---|---|---|
{chr(10).join(rows)}

## Ground-truth duplicate groups

{groups}

Every other pair of files in `photos/` and `copies/` is a non-duplicate
(`ukbench00000` and `ukbench00004` show different objects).

## Broken files

The files in `bad/` are deliberately broken (a truncated JPEG and a text file
named `.jpg`); tools must report or skip them without crashing.
"""
    (out / "README.md").write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO / ".." / "shared" / "data",
                    help="folder holding the source datasets (default: ../shared/data)")
    ap.add_argument("--out", type=Path, default=REPO / "sample_data",
                    help="output folder (default: sample_data/ in the repo)")
    args = ap.parse_args()
    out: Path = args.out
    for sub in ("photos", "copies", "bad"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    notes = make_photos(args.shared.resolve(), out)
    copy_notes, diff = make_copies(out)
    notes.update(copy_notes)
    notes.update(make_bad(out))
    write_readme(out, notes)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(notes)} files + README.md to {out} ({total} bytes); "
          f"EXIF-rotation check passed (mean abs diff {diff:.2f})")


if __name__ == "__main__":
    main()
