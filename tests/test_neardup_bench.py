"""bench/neardup_set.py (the labelled set builder) and the scoring of bench/neardup.py, on real photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import neardup  # noqa: E402 - bench/ is put on sys.path just above
import neardup_set  # noqa: E402 - likewise

SOURCES = ["chelsea.png", "coffee.png", "rocket.jpg"]
pytestmark = pytest.mark.skipif(not (neardup_set.SHARED / "skimage-data").is_dir(),
                                reason=f"shared data not found at {neardup_set.SHARED}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("neardup") / "set"
    return out, neardup_set.build_set(out, seed=0, sources=SOURCES)


def _rgb(path: Path, transpose: bool = True) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray((ImageOps.exif_transpose(im) if transpose else im).convert("RGB"), dtype=np.int16)


def _by(labels: dict, oid: str, kind: str) -> str:
    (name,) = [n for n, lab in labels["files"].items() if lab["original"] == oid and lab["kind"] == kind]
    return name


def test_labels_cover_every_file_and_every_kind(tiny: tuple[Path, dict]) -> None:
    out, labels = tiny
    on_disk = {p.name for p in out.iterdir()} - {"labels.json"}
    assert set(labels["files"]) == on_disk
    assert json.loads((out / "labels.json").read_text()) == json.loads(json.dumps(labels))
    assert labels["originals"] == ["chelsea", "coffee", "rocket"]
    for oid in labels["originals"]:
        kinds = sorted(lab["kind"] for lab in labels["files"].values() if lab["original"] == oid)
        assert kinds == sorted([*neardup_set.KINDS, "original"])
    assert len(on_disk) == 3 * 13


def test_strengths_lie_in_the_stated_ranges(tiny: tuple[Path, dict]) -> None:
    out, labels = tiny
    for name, lab in labels["files"].items():
        s, p, kind = lab["strength"], lab["params"], lab["kind"]
        with Image.open(out / name) as im:
            size, mode, fmt = im.size, im.mode, im.format
        if kind == "original":
            assert fmt == "JPEG" and 90 <= p["quality"] <= 95
        elif kind == "jpeg":
            assert fmt == "JPEG" and 30 <= s <= 70
        elif kind == "resize":
            assert 0.3 <= s <= 0.7 and list(size) == list(p["size"])
        elif kind == "crop":
            assert 0.7 <= p["keep_width"] <= 0.9 and 0.7 <= p["keep_height"] <= 0.9
            l, t, r, b = p["box"]
            assert size == (r - l, b - t)
        elif kind in ("brightness", "contrast"):
            assert 0.6 <= s <= 0.8 or 1.2 <= s <= 1.5
        elif kind == "blur":
            assert 1 <= s <= 3
        elif kind == "rotate":
            assert 2 <= abs(s) <= 4 and list(size) == p["size"]
        elif kind == "gray":
            assert mode == "L"
        elif kind == "format":
            assert fmt == p["format"].upper() and name.endswith("." + p["format"])
        elif kind == "text":
            assert 0.05 <= s <= 0.12 and p["text"]


def test_the_same_seed_writes_the_same_files(tmp_path: Path, tiny: tuple[Path, dict]) -> None:
    out, labels = tiny
    again = neardup_set.build_set(tmp_path / "a", seed=0, sources=SOURCES[:1])
    other = neardup_set.build_set(tmp_path / "b", seed=1, sources=SOURCES[:1])
    for name in again["files"]:
        assert (tmp_path / "a" / name).read_bytes() == (out / name).read_bytes()
    assert again["files"] == {n: lab for n, lab in labels["files"].items() if lab["original"] == "chelsea"}
    assert other["files"]["chelsea_jpeg.jpg"]["strength"] != again["files"]["chelsea_jpeg.jpg"]["strength"]


def test_a_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(FileExistsError):
        neardup_set.build_set(tmp_path, sources=SOURCES[:1])


def test_exif_copy_is_turned_and_its_orientation_tag_turns_it_back(tiny: tuple[Path, dict]) -> None:
    out, labels = tiny
    for oid in labels["originals"]:
        name = _by(labels, oid, "exif")
        orig = _rgb(out / _by(labels, oid, "original"))
        with Image.open(out / name) as im:
            tag = im.getexif().get(0x0112)
        assert tag == labels["files"][name]["params"]["orientation"] and tag in (3, 6, 8)
        raw = _rgb(out / name, transpose=False)
        if tag == 3:
            assert raw.shape == orig.shape and np.abs(raw - orig).mean() > 10   # stored upside down
        else:
            assert raw.shape[:2] == orig.shape[1::-1]                            # stored on its side
        upright = _rgb(out / name)
        assert upright.shape == orig.shape
        assert np.abs(upright - orig).mean() < 3


def test_mirror_copy_is_the_flipped_original(tiny: tuple[Path, dict]) -> None:
    out, labels = tiny
    for oid in labels["originals"]:
        orig = _rgb(out / _by(labels, oid, "original"))
        mirror = _rgb(out / _by(labels, oid, "mirror"))
        assert np.abs(mirror - orig[:, ::-1]).mean() < 3
        assert np.abs(mirror - orig).mean() > 10


def test_rotate_copy_has_no_border(tiny: tuple[Path, dict]) -> None:
    out, labels = tiny
    for oid in labels["originals"]:
        rot = _rgb(out / _by(labels, oid, "rotate"))
        corners = rot[[0, 0, -1, -1], [0, -1, 0, -1]]
        orig = _rgb(out / _by(labels, oid, "original"))
        assert (corners.sum(axis=1) > 0).all(), "a black rotation border survived the crop"
        assert rot.shape[0] >= 0.8 * orig.shape[0] and rot.shape[1] >= 0.8 * orig.shape[1]


def test_splits_share_no_photo() -> None:
    splits = neardup_set.split_sources()
    dev = {rel for rel, _ in splits["dev"]}
    held = {rel for rel, _ in splits["heldout"]}
    every = {p.relative_to(neardup_set.SHARED).as_posix() for p in neardup_set.source_photos()}
    assert dev and held and not dev & held and dev | held == every
    ids = [oid for s in splits.values() for _, origs in s for oid, _ in origs]
    assert len(ids) == len(set(ids))
    for s in splits.values():
        for _, origs in s:
            for _, px in origs:
                assert 300 <= max(px.shape[:2]) <= neardup_set.TILE_ABOVE


# ---------------------------------------------------------------- scoring, by hand

TOY = {"a0": ("A", "original", "s1"), "a1": ("A", "jpeg", "s1"), "a2": ("A", "crop", "s1"),
       "b0": ("B", "original", "s1"), "b1": ("B", "jpeg", "s1"), "c0": ("C", "original", "s2")}
TOY_FILES = {n: {"original": o, "kind": k, "source": s} for n, (o, k, s) in TOY.items()}


def test_pairs_from_groups_and_pairs() -> None:
    assert neardup.pairs_from_groups([["b", "a", "c"], ["d"]]) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert neardup.pairs_from_pairs([("b", "a"), ("a", "b"), ("a", "a")]) == {("a", "b")}


def test_perfect_groups_score_one() -> None:
    s = neardup.score(neardup.pairs_from_groups([["a0", "a1", "a2"], ["b0", "b1"]]), TOY_FILES)
    assert (s["precision"], s["recall"], s["f1"], s["n_true"], s["tp"]) == (1.0, 1.0, 1.0, 4, 4)
    assert s["per_kind"] == {"crop": 1.0, "jpeg": 1.0}


def test_one_wrong_merge_lowers_precision_by_the_computed_amount() -> None:
    # c0 joins A's group: 6 pairs predicted there plus 1 in B's, 4 of them true
    s = neardup.score(neardup.pairs_from_groups([["a0", "a1", "a2", "c0"], ["b0", "b1"]]), TOY_FILES)
    assert s["precision"] == pytest.approx(4 / 7) and s["recall"] == 1.0
    assert s["f1"] == pytest.approx(2 * (4 / 7) / (4 / 7 + 1))
    assert s["fp_same_source"] == 0
    # merging the two originals of source s1 instead: 10 pairs, 4 true, 6 false ones inside one source
    s = neardup.score(neardup.pairs_from_groups([["a0", "a1", "a2", "b0", "b1"]]), TOY_FILES)
    assert (s["tp"], s["n_predicted"], s["fp_same_source"]) == (4, 10, 6)


def test_a_missed_copy_lowers_recall_and_its_kind() -> None:
    s = neardup.score(neardup.pairs_from_pairs([("a1", "a0"), ("b0", "b1")]), TOY_FILES)
    assert (s["precision"], s["recall"]) == (1.0, 0.5)
    assert s["per_kind"] == {"crop": 0.0, "jpeg": 1.0}
    assert neardup.score(set(), TOY_FILES)["f1"] == 0.0


def test_an_unlabelled_file_is_an_error() -> None:
    with pytest.raises(KeyError, match="no label"):
        neardup.score({("a0", "zz")}, TOY_FILES)


def test_hashdup_cli_output_maps_back_to_labelled_names(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    out, labels = tiny
    groups, index_s, dedup_s, index_dir = neardup.run_hashdup(out, tmp_path, [], ["--radius", "1024"])
    assert index_s > 0 and dedup_s > 0 and index_dir.is_dir()
    # the paths hashdup prints (relative to the working folder tmp_path) become the set's own file names
    assert groups and all(len(g) >= 2 for g in groups)
    assert {n for g in groups for n in g} <= set(labels["files"])
    s = neardup.score(neardup.pairs_from_groups(groups), labels["files"])
    assert s["n_predicted"] == sum(len(g) * (len(g) - 1) // 2 for g in groups)
    assert s["tp"] > 0


def test_keeper_accuracy_counts_groups_with_their_original_first() -> None:
    acc = neardup.keeper_accuracy([["a0", "a1", "a2"], ["b1", "b0"], ["a1", "a2"]], TOY_FILES)
    assert acc == {"keeper_original": 0.5, "groups_with_original": 2, "kept_instead": {"jpeg": 1}}
    assert neardup.keeper_accuracy([["a1", "a2"]], TOY_FILES)["groups_with_original"] == 0


def test_run_hashdup_lists_each_keeper_first(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = tiny
    groups, _, _, index_dir = neardup.run_hashdup(out, tmp_path, [], [])
    res = subprocess.run([*neardup.hashdup_exe(), "dedup", "--index", str(index_dir)], cwd=tmp_path, check=True,
                         capture_output=True, text=True)
    keepers = {Path(g["keep"]).name for g in json.loads(res.stdout)}
    assert groups and {g[0] for g in groups} == keepers
