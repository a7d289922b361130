"""Regenerate the golden descriptor values of tests/test_descriptors.py.

Run only when a descriptor's definition changes on purpose, and say why in the commit:

    .venv/bin/python tests/data/make_golden.py

tiny.png is a 40×30 crop of sample_data/photos/chelsea.jpg; golden.npz holds its descriptors under the
parameters named in GOLDEN_CASES.
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN_CASES = {
    "gist_default": ("gist", {}),
    "gist_small": ("gist", {"image_size": 32, "orientations": [4, 4], "blocks": 2, "boundary": 8}),
    "color_hsv": ("color", {}),
    "color_lab_grid": ("color", {"space": "lab", "grid": 2, "image_size": 32}),
    "gist_color": ("gist+color", {}),
}


def compute(name: str, params: dict) -> np.ndarray:
    from hashdup.descriptors import make_descriptor
    from hashdup.io import images

    desc = make_descriptor(name, **params)
    return desc.describe(images.load(HERE / "tiny.png", desc.image_size).pixels)[0]


def main() -> None:
    tiny = HERE / "tiny.png"
    if not tiny.exists():
        from PIL import Image

        src = Image.open(HERE.parent.parent / "sample_data" / "photos" / "chelsea.jpg").convert("RGB")
        src.crop((200, 60, 360, 180)).resize((40, 30), Image.Resampling.LANCZOS).save(tiny, optimize=True)
    np.savez(HERE / "golden.npz", **{case: compute(*spec) for case, spec in GOLDEN_CASES.items()})


if __name__ == "__main__":
    main()
