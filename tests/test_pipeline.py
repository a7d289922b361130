"""End to end through the library: index, query, dedup, info; the index folder's atomicity and validation."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashdup import pipeline
from hashdup.errors import HashdupError, IndexFileError, NoIndexError
from hashdup.indexing import build as build_module
from hashdup.io import store
from hashdup.supervision import Supervision

TRUE_GROUPS = [
    ["copies/astronaut_half.jpg", "photos/astronaut.jpg"],
    ["copies/chelsea_q30.jpg", "photos/chelsea.jpg"],
    ["copies/china_exif_rotated.jpg", "photos/china.jpg"],
    ["copies/coffee_crop.jpg", "photos/coffee.jpg"],
    ["copies/flower.png", "photos/flower.jpg"],
    ["copies/grace_hopper_copy.jpg", "photos/grace_hopper.jpg"],
    ["copies/holidays_100000_small.jpg", "photos/holidays_100000.jpg"],
]


def rel(paths, base):
    return [Path(p).relative_to(base).as_posix() for p in paths]


def test_summary_counts(tmp_path, sample_dir):
    problems = []
    s = pipeline.build_index([sample_dir], tmp_path / "idx", on_problem=lambda p, r: problems.append((p, r)))
    assert (s.files, s.indexed, s.exact_duplicates, s.ignored) == (23, 21, 1, 1)
    reasons = {Path(p).name: r for p, r in problems}
    assert reasons.keys() == {"truncated.jpg", "notes.jpg"}
    assert "truncated" in reasons["truncated.jpg"] and "not an image" in reasons["notes.jpg"]
    assert s.skipped == problems


def test_dedup_finds_the_planted_groups(built_index):
    images, index_dir = built_index
    idx = pipeline.Index(index_dir)
    groups = pipeline.dedup(idx)
    # by default (candidates from the codes, verified by descriptors and pixels) every planted copy is found, the
    # 10 % crop included, and nothing else
    assert [rel(g["paths"], images) for g in groups] == TRUE_GROUPS
    assert [g["group"] for g in groups] == list(range(1, 8))
    assert all(g["keep"].startswith(str(images)) or g["keep"] in g["paths"] for g in groups)
    # code distance alone at the default radius (3 of 64 bits) misses the crop: GIST sees the whole frame
    crop = ["copies/coffee_crop.jpg", "photos/coffee.jpg"]
    codes_only = pipeline.dedup(idx, verify=False, linkage="single")
    assert [rel(g["paths"], images) for g in codes_only] == [g for g in TRUE_GROUPS if g != crop]
    assert all(0 <= g["max_distance"] <= pipeline.default_radius(64) == 3 for g in codes_only)
    # a wider radius links the crop there too
    assert [rel(g["paths"], images) for g in pipeline.dedup(idx, 8, verify=False)] == TRUE_GROUPS
    # radius 0 without verification still groups the byte-identical pair
    assert ["copies/grace_hopper_copy.jpg", "photos/grace_hopper.jpg"] in [
        rel(g["paths"], images) for g in pipeline.dedup(idx, 0, verify=False)]


def test_query_returns_the_copy_first_and_not_itself(built_index):
    images, index_dir = built_index
    idx = pipeline.Index(index_dir)
    rows, failed = pipeline.query(idx, [str(images / "photos" / "chelsea.jpg")], k=5)
    assert failed == 0 and len(rows) == 5
    assert rel([r["path"] for r in rows], images)[0] == "copies/chelsea_q30.jpg"
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert [(r["distance"], r["path"]) for r in rows] == sorted((r["distance"], r["path"]) for r in rows)
    assert "photos/chelsea.jpg" not in rel([r["path"] for r in rows], images)


def test_query_through_a_symlinked_root_is_still_itself(tmp_path):
    imgs = _small_set(tmp_path / "imgs", 3)
    os.symlink(imgs, tmp_path / "link")
    pipeline.build_index([tmp_path / "link"], tmp_path / "idx")
    idx = pipeline.Index(tmp_path / "idx")
    rows, _ = pipeline.query(idx, [str(imgs / "0.jpg")], k=5)
    assert sorted(Path(r["path"]).name for r in rows) == ["1.jpg", "2.jpg"]  # not 0.jpg itself


def test_query_with_an_image_outside_the_index(built_index, tmp_path):
    images, index_dir = built_index
    src = Image.open(images / "photos" / "coffee.jpg")
    src.resize((src.width * 2 // 5, src.height * 2 // 5)).save(tmp_path / "coffee_small.webp", quality=70)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    idx = pipeline.Index(index_dir)
    problems = []
    rows, failed = pipeline.query(idx, [str(tmp_path / "coffee_small.webp"), str(tmp_path / "broken.jpg")], k=2,
                                  on_problem=lambda p, r: problems.append(p))
    assert failed == 1 and problems == [str(tmp_path / "broken.jpg")]
    assert rel([r["path"] for r in rows], images)[0] == "photos/coffee.jpg"
    assert set(rel([r["path"] for r in rows], images)) == {"photos/coffee.jpg", "copies/coffee_crop.jpg"}
    rows, _ = pipeline.query(idx, [str(tmp_path / "coffee_small.webp")], k=None, radius=8)
    assert {"photos/coffee.jpg"} <= set(rel([r["path"] for r in rows], images))
    assert all(r["distance"] <= 8 for r in rows)


def test_stored_state_is_consistent(built_index):
    _, index_dir = built_index
    idx = pipeline.Index(index_dir)
    X = idx.stored.descriptors
    assert X.dtype == np.float16 and X.shape == (21, 640)  # gist+color: 512 GIST values + 128 colour bins
    np.testing.assert_array_equal(idx.encoder.encode(X.astype(np.float32)), idx.stored.codes.codes)
    # each indexed file, described and encoded alone as a query would be, gets exactly its stored code
    from hashdup.io import images

    cat = idx.stored.catalogue
    for rec in cat.records():
        px = images.load(cat.abspath(rec), idx.descriptor.image_size).pixels
        code = idx.encoder.encode(pipeline.describe_images(idx.descriptor, [px]))
        np.testing.assert_array_equal(code[0], idx.stored.codes.codes[rec.id])
    info = pipeline.info(idx)
    assert (info["files"], info["indexed"], info["errors"], info["exact_duplicates"]) == (23, 21, 2, 1)
    assert sorted(Path(s["path"]).name for s in info["skipped"]) == ["notes.jpg", "truncated.jpg"]
    assert info["bytes_on_disk"]["total"] == sum(
        p.stat().st_size for p in Path(index_dir).iterdir())


def _small_set(folder, n=3):
    """The first n distinct photos of sample_data, as 0.jpg, 1.jpg, ..."""
    folder.mkdir()
    photos = sorted((Path(__file__).parent.parent / "sample_data" / "photos").glob("*.jpg"))
    for i, src in enumerate(photos[:n]):
        shutil.copy(src, folder / f"{i}.jpg")
    return folder


def test_rebuild_replaces_generation_and_cleans_up(tmp_path):
    imgs = _small_set(tmp_path / "imgs")
    pipeline.build_index([imgs], tmp_path / "idx", n_bits=32)
    pipeline.build_index([imgs], tmp_path / "idx")
    pipeline.build_index([imgs], tmp_path / "idx", n_bits=128)
    names = sorted(os.listdir(tmp_path / "idx"))
    # the previous generation stays until the next commit, for readers that opened it just before (io/store.py)
    assert names == [f"{kind}-00000{g}.{ext}" for kind, ext in sorted(store.KINDS.items()) for g in (2, 3)] + [
        "index.json", "writer.lock"]
    assert pipeline.Index(tmp_path / "idx").n_bits == 128


def test_a_run_killed_before_commit_leaves_the_old_index(tmp_path, monkeypatch):
    imgs = _small_set(tmp_path / "imgs")
    pipeline.build_index([imgs], tmp_path / "idx")
    before = (tmp_path / "idx" / "index.json").read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build_index([imgs], tmp_path / "idx", n_bits=32)
    monkeypatch.undo()
    assert (tmp_path / "idx" / "index.json").read_bytes() == before
    assert pipeline.Index(tmp_path / "idx").n_bits == 64  # the old generation still opens and answers
    pipeline.build_index([imgs], tmp_path / "idx", n_bits=16)
    # orphans of the killed run are gone (overwritten or deleted); generation 1, which the replaced manifest named,
    # stays until the next commit for readers that opened it
    assert sorted(os.listdir(tmp_path / "idx")) == [f"{kind}-00000{g}.{ext}" for kind, ext in
                                                    sorted(store.KINDS.items()) for g in (1, 2)] + [
        "index.json", "writer.lock"]


def test_failed_run_keeps_previous_index(tmp_path):
    imgs = _small_set(tmp_path / "imgs")
    pipeline.build_index([imgs], tmp_path / "idx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HashdupError, match="no images could be indexed"):
        pipeline.build_index([tmp_path / "empty"], tmp_path / "idx", replace=True)
    with pytest.raises(HashdupError, match=r"median.*at least"):
        pipeline.build_index([imgs], tmp_path / "idx", encoder="median")
    assert len(pipeline.Index(tmp_path / "idx")) == 3


def test_broken_symlink_and_non_image_files(tmp_path):
    imgs = _small_set(tmp_path / "imgs", 2)
    os.symlink(tmp_path / "nowhere.jpg", imgs / "dangling.jpg")
    (imgs / "notes.txt").write_text("ignored: not an image and not named like one")
    (imgs / "empty.png").write_bytes(b"")
    problems = {}
    s = pipeline.build_index([imgs], tmp_path / "idx", on_problem=lambda p, r: problems.__setitem__(Path(p).name, r))
    assert problems == {"dangling.jpg": "broken symbolic link", "empty.png": "empty file (0 bytes)"}
    assert (s.indexed, s.ignored) == (2, 1)


@pytest.mark.parametrize("descriptor, encoder", [("color", "lsh"), ("gist+color", "lsh"), ("gist", "median"),
                                                 ("gist", "itq"), ("color", "spectral")])
def test_other_descriptors_and_encoders(tmp_path, descriptor, encoder):
    imgs = _small_set(tmp_path / "imgs", 12)
    pipeline.build_index([imgs], tmp_path / "idx", descriptor=descriptor, encoder=encoder, n_bits=8 if encoder ==
                         "median" else 48)
    idx = pipeline.Index(tmp_path / "idx")
    rows, _ = pipeline.query(idx, [str(imgs / "0.jpg")], k=None, radius=0)
    assert rows == []  # the query itself is left out, and nothing else is identical
    assert idx.stored.manifest["descriptor"]["name"] == descriptor


# --- validation on open ------------------------------------------------------------------------------------------
@pytest.fixture
def small_index(tmp_path):
    imgs = _small_set(tmp_path / "imgs")
    pipeline.build_index([imgs], tmp_path / "idx")
    return tmp_path / "idx"


def _file(index_dir, kind):
    return index_dir / json.loads((index_dir / "index.json").read_text())["files"][kind]["name"]


@pytest.mark.parametrize("kind", ["codes", "catalogue", "encoder"])
def test_flipped_byte_is_detected(small_index, kind):
    p = _file(small_index, kind)
    data = bytearray(p.read_bytes())
    data[-20] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(IndexFileError) as e:
        pipeline.Index(small_index)
    assert p.name in str(e.value)


def test_descriptor_corruption_is_detected_on_access(small_index):
    p = _file(small_index, "descriptors")
    data = bytearray(p.read_bytes())
    data[-2] ^= 0x01
    p.write_bytes(bytes(data))
    idx = pipeline.Index(small_index)
    with pytest.raises(IndexFileError, match="descriptors"):
        _ = idx.stored.descriptors


@pytest.mark.parametrize("change, message", [
    (lambda m: m["files"]["codes"].update(bytes=1), "bytes"),
    (lambda m: m["encoder"].update(fingerprint="00" * 16), "fingerprint"),
    (lambda m: m.update(version=99), "version"),
    (lambda m: m["files"].pop("catalogue"), "catalogue"),
])
def test_manifest_inconsistencies(small_index, change, message):
    m = json.loads((small_index / "index.json").read_text())
    change(m)
    (small_index / "index.json").write_text(json.dumps(m))
    with pytest.raises(IndexFileError, match=f"manifest checksum|{message}"):  # edits are caught early
        pipeline.Index(small_index)
    m["checksum"] = store._manifest_checksum(m)  # a consistent-looking but wrong manifest meets the deeper checks
    (small_index / "index.json").write_text(json.dumps(m))
    with pytest.raises(IndexFileError, match=message):
        pipeline.Index(small_index)


@pytest.mark.parametrize("change", [
    lambda m: m.update(files=[]),
    lambda m: m["descriptor"].update(n_features="512"),
    lambda m: m["descriptor"].update(params={"image_size": 100}),
    lambda m: m["descriptor"].update(name="color", params={}),
])
def test_malformed_manifest_is_a_clear_error(small_index, change):
    m = json.loads((small_index / "index.json").read_text())
    change(m)
    m["checksum"] = store._manifest_checksum(m)
    (small_index / "index.json").write_text(json.dumps(m))
    with pytest.raises(IndexFileError):
        pipeline.Index(small_index)


def test_two_writers_are_refused(small_index, tmp_path):
    imgs = tmp_path / "imgs"
    with store.writer_lock(small_index), pytest.raises(HashdupError, match="another hashdup run is writing"):
        pipeline.build_index([imgs], small_index, n_bits=32)
    assert pipeline.Index(small_index).n_bits == 64
    pipeline.build_index([imgs], small_index, n_bits=32)  # the lock is free again
    assert pipeline.Index(small_index).n_bits == 32


def test_missing_files(small_index, tmp_path):
    with pytest.raises(NoIndexError, match="run `hashdup index"):
        pipeline.Index(tmp_path / "nothing")
    _file(small_index, "encoder").unlink()
    with pytest.raises(IndexFileError, match="missing"):
        pipeline.Index(small_index)


def test_new_generation_after_unreadable_manifest(small_index):
    (small_index / "index.json").write_text("{not json")
    assert store.new_generation(small_index).number == 2


def test_file_vanishing_during_the_run_is_skipped(tmp_path, monkeypatch):
    imgs = _small_set(tmp_path / "imgs", 3)
    real_walk = build_module.walk

    def walk_then_delete(*a, **k):
        res = real_walk(*a, **k)
        (imgs / "1.jpg").unlink()
        return res

    monkeypatch.setattr(build_module, "walk", walk_then_delete)
    problems = []
    s = pipeline.build_index([imgs], tmp_path / "idx", on_problem=lambda p, r: problems.append((Path(p).name, r)))
    assert s.indexed == 2 and problems == [("1.jpg", "cannot read file: No such file or directory")]


@pytest.mark.parametrize("encoder", ["itq", "spectral", "itml", "rbm"])
def test_learned_encoders_find_the_planted_groups(built_index, tmp_path, encoder):
    """Indexed with each learned encoder (itml and rbm from self-supervised edits), sample_data's dedup finds the
    same groups as with LSH: every planted copy, and nothing else."""
    images, _ = built_index
    pipeline.build_index([images], tmp_path / "idx", encoder=encoder, supervision=Supervision(n_edits=80))
    groups = pipeline.dedup(pipeline.Index(tmp_path / "idx"))
    assert [rel(g["paths"], images) for g in groups] == TRUE_GROUPS


def test_approximate_queries_use_the_bucket_tables(built_index, tmp_path):
    images, index_dir = built_index
    idx = pipeline.Index(index_dir)
    q = [str(images / "photos" / "chelsea.jpg"), str(images / "copies" / "astronaut_half.jpg")]
    exact, _ = pipeline.query(idx, q, k=3)
    approx, _ = pipeline.query(idx, q, k=3, approx=True, probes=3)
    # the nearest (a planted copy at distance 0) is always found; every row is an exact distance
    for query in q:
        assert next(r for r in approx if r["query"] == query) == next(r for r in exact if r["query"] == query)
    near, _ = pipeline.query(idx, q[:1], k=None, radius=3, approx=True)
    assert [rel([r["path"]], images)[0] for r in near] == ["copies/chelsea_q30.jpg"]


def test_corrupt_bucket_tables_are_refused_on_use(small_index):
    p = _file(small_index, "buckets")
    data = bytearray(p.read_bytes())
    data[-3] ^= 0x10
    p.write_bytes(bytes(data))
    idx = pipeline.Index(small_index)  # exact search still works
    assert len(pipeline.dedup(idx, 0)) == 0
    with pytest.raises(IndexFileError, match="buckets"):
        pipeline.query(idx, [str(p.parent.parent / "imgs" / "0.jpg")], k=1, approx=True)
