"""The feature file (hashdup.io.featurefile) and the verdict file (hashdup.io.verdicts): round trips, documented
layouts, and refusal of every kind of damage before anything is memory-mapped."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashdup.descriptors.local import LocalExtractor
from hashdup.errors import IndexFileError
from hashdup.io import header, images
from hashdup.io.featurefile import HEADER_SIZE, MAGIC, VERSION, FeatureFile, FeatureTable, LocalFeatures
from hashdup.io.verdicts import FILENAME, VerdictStore, way_code

LIMITS = {"frame": 192, "max_keypoints": 20, "thumb_pixels": 300}


def record(rng: np.random.Generator, k: int | None = None, frame: int = 192) -> LocalFeatures:
    """A random record that fits :data:`LIMITS`."""
    k = int(rng.integers(0, 21)) if k is None else k
    fh = int(rng.integers(1, frame + 1))
    th, tw = int(rng.integers(1, 16)), int(rng.integers(1, 19))
    return LocalFeatures((fh, frame), rng.integers(0, 65536, (k, 2), dtype=np.uint16),
                         rng.integers(0, 256, (k, 32), dtype=np.uint8),
                         rng.integers(-127, 128, (th, tw), dtype=np.int8))


def same(a: LocalFeatures, b: LocalFeatures) -> bool:
    return (tuple(a.frame_shape) == tuple(b.frame_shape) and np.array_equal(a.keypoints, b.keypoints)
            and np.array_equal(a.descriptors, b.descriptors) and np.array_equal(a.thumb, b.thumb))


@given(st.integers(0, 30), st.integers(0, 2**31))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_round_trip(tmp_path, n, seed):
    rng = np.random.default_rng(seed)
    recs = [record(rng) for _ in range(n)]
    path = tmp_path / "f.hdf"
    FeatureFile.write(path, recs, **LIMITS)
    ff = FeatureFile.open(path)
    assert (len(ff), ff.frame, ff.max_keypoints, ff.thumb_pixels) == (n, 192, 20, 300)
    assert all(same(ff[i], r) for i, r in enumerate(recs))
    assert path.stat().st_size % 8 == 0  # sections 8-byte aligned after the 72-byte header
    if n:
        assert not ff[0].thumb.flags.writeable and not ff[n - 1].descriptors.flags.writeable
    with pytest.raises(IndexError):
        ff[n]
    for r in recs:  # the journal's serialisation
        assert same(LocalFeatures.from_bytes(r.to_bytes()), r)


@given(st.integers(0, 12), st.integers(0, 2**31))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_table_of_a_file_is_the_table_of_its_records(tmp_path, n, seed):
    """FeatureFile.table (views of the memory map) holds what FeatureTable.of copies from the records: each image's
    descriptors as uint64 words, its int8 thumbnail, and its shapes."""
    rng = np.random.default_rng(seed)
    recs = [record(rng) for _ in range(n)]
    path = tmp_path / "t.hdf"
    FeatureFile.write(path, recs, **LIMITS)
    ff = FeatureFile.open(path)
    got, want = ff.table(), FeatureTable.of(recs)
    for name in ("words", "kp_offsets", "thumbs", "thumb_offsets", "shapes"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
        assert getattr(got, name).dtype == getattr(want, name).dtype, name
    for i, r in enumerate(recs):
        k0, k1 = got.kp_offsets[i], got.kp_offsets[i + 1]
        assert np.array_equal(got.words[k0:k1].view(np.uint8), r.descriptors)
        t0 = got.thumb_offsets[i]
        assert np.array_equal(got.thumbs[t0 : t0 + r.thumb.size].reshape(r.thumb.shape), r.thumb)
    assert not got.words.flags.writeable and not got.thumbs.flags.writeable  # the map, not a copy


def test_header_layout_is_documented(tmp_path):
    rng = np.random.default_rng(0)
    recs = [record(rng, 3), record(rng, 0)]
    path = tmp_path / "f.hdf"
    FeatureFile.write(path, recs, **LIMITS)
    head = path.read_bytes()[:HEADER_SIZE]
    fields = struct.unpack_from("<8sHHQQQIIIII", head)
    thumbs = sum(r.thumb.size for r in recs)
    assert VERSION == 2 and fields == (MAGIC, VERSION, 72, 2, 3, thumbs, 192, 20, 300, 0, 0)
    ff = FeatureFile.open(path)
    assert ff.bytes_per_image == path.stat().st_size / 2


def test_records_that_do_not_fit_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    ok = record(rng, 2, frame=192)
    uint8_thumb = LocalFeatures(ok.frame_shape, ok.keypoints, ok.descriptors, ok.thumb.view(np.uint8))  # v1 thumbnail
    for bad in (record(rng, 21), record(rng, 2, frame=100), uint8_thumb):
        with pytest.raises(ValueError, match="does not fit"):
            FeatureFile.write(tmp_path / "f.hdf", [bad], **LIMITS)
    assert not (tmp_path / "f.hdf").exists()  # nothing half-written
    with pytest.raises(ValueError, match="record"):
        LocalFeatures.from_bytes(record(rng, 2).to_bytes()[:-1])
    with pytest.raises(ValueError, match="record"):
        LocalFeatures.from_bytes(b"XXXX" + record(rng, 2).to_bytes()[4:])


def _written(tmp_path, n=5, seed=2):
    rng = np.random.default_rng(seed)
    path = tmp_path / "f.hdf"
    FeatureFile.write(path, [record(rng) for _ in range(n)], **LIMITS)
    return path


@pytest.mark.parametrize("where", ["magic", "version", "frame", "body", "last byte"])
def test_a_flipped_byte_is_refused(tmp_path, where):
    path = _written(tmp_path)
    data = bytearray(path.read_bytes())
    pos = {"magic": 0, "version": 8, "frame": 36, "body": HEADER_SIZE + 3, "last byte": len(data) - 1}[where]
    data[pos] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError):
        FeatureFile.open(path)


def test_truncated_and_extended_files_are_refused(tmp_path):
    path = _written(tmp_path)
    data = path.read_bytes()
    for bad in (data[:10], data[: HEADER_SIZE + 5], data[:-8], data + b"\0" * 8):
        path.write_bytes(bad)
        with pytest.raises(IndexFileError):
            FeatureFile.open(path, verify=False)  # refused on its sizes alone, before any checksum or map


def test_offsets_that_disagree_are_refused_even_with_a_valid_checksum(tmp_path):
    """A writer bug (not damage): the checksum matches, but the sections contradict each other."""
    path = _written(tmp_path, n=3)
    data = bytearray(path.read_bytes())
    kp_offsets = HEADER_SIZE + 3 * 8  # after the shapes section (3 × 4 uint16)
    struct.pack_into("<Q", data, kp_offsets + 8, 10**6)  # image 0 claims a million keypoints
    fmt = header.HeaderFormat(MAGIC, VERSION, "QQQIIIII", kind="feature file", format_name="feature file format")
    body = header.body_hash()
    body.update(bytes(data[HEADER_SIZE:]))
    data[:HEADER_SIZE] = fmt.pack(struct.unpack_from("<QQQIIIII", data, 12), body.digest())
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=r"kp_offsets|keypoints"):
        FeatureFile.open(path)


def test_extractor_records_fit_their_budget_on_a_real_photo(sample_dir):
    ex = LocalExtractor()
    data = (sample_dir / "photos" / "chelsea.jpg").read_bytes()
    r = ex.describe(images.decode(data, 32, frame=ex.frame).gray)
    assert 100 <= len(r.keypoints) <= ex.n_keypoints and r.thumb.size <= ex.thumb_pixels
    assert r.nbytes <= ex.max_record_bytes <= 16 * 1024  # the budget: at most 16 KB per image
    assert max(r.frame_shape) == ex.frame and r.points().max() < ex.frame
    with pytest.raises(ValueError, match="longest side"):
        ex.describe(np.zeros((10, 10), dtype=np.uint8))
    flat = ex.describe(np.full((144, 192), 128, dtype=np.uint8))  # nothing to find on a flat image
    assert len(flat.keypoints) == 0 and flat.thumb.size > 0


# --- the verdict file ---------------------------------------------------------------------------------------------
H = [bytes([i]) * 16 for i in range(5)]


def test_verdicts_round_trip_and_are_pruned_to_present_files(tmp_path):
    store = VerdictStore(tmp_path, {"a": 1})
    assert len(store) == 0 and not store.save(H)  # nothing new: nothing written
    store.put(H[0], H[1], way_code(None), (True, False, "", 40, 0.9, 1.0))
    store.put(H[1], H[2], way_code(True), (False, True, "pixels differ", 12, 0.2, 0.95))
    store.put(H[3], H[4], way_code(False), (False, False, "too few matches", 3, 0.0, 0.0))
    assert store.save(H[:3]) and (tmp_path / FILENAME).exists()
    again = VerdictStore(tmp_path, {"a": 1})
    assert len(again) == 2 and again.loaded == 2
    assert again.get(H[0], H[1], 0) == (True, False, "", 40, pytest.approx(0.9), 1.0)
    assert again.get(H[1], H[2], 2)[:3] == (False, True, "pixels differ")
    assert again.get(H[1], H[2], 1) is None and again.get(H[3], H[4], 1) is None  # other way; pruned


def test_verdict_rows_are_written_as_a_row_at_a_time_writes_them(tmp_path):
    """save() fills the file column by column and merges the new verdicts with the stored ones; the rows equal those
    of a row-by-row oracle sorted by key, a verdict put again replaces the stored one, and every verdict reads
    back (looked up by binary search in the stored rows)."""
    from hashdup.io.verdicts import _HEADER, REASONS, ROW, fingerprint

    rng = np.random.default_rng(5)
    hashes = [bytes(rng.integers(0, 256, 16, dtype=np.uint8)) for _ in range(40)]
    hashes[1] = hashes[0][:8] + bytes(8)  # two hashes with the same first 8 bytes
    hashes[3] = hashes[2][:12] + bytes(4)  # and two with the same first 12
    known = {}
    for round_ in range(3):  # the second and third rounds add to, and replace some of, what the first stored
        store = VerdictStore(tmp_path, {"a": 1})
        assert len(store) == len(known)
        for _ in range(300):
            a, b = (hashes[int(x)] for x in rng.choice(40, 2, replace=False))
            value = (bool(rng.integers(2)), bool(rng.integers(2)), REASONS[int(rng.integers(len(REASONS)))],
                     int(rng.integers(0, 500)), float(np.float32(rng.random())), float(np.float32(rng.random())))
            key = (a, b, int(rng.integers(0, 3)))
            store.put(*key, value)
            known[key] = value
        assert store.save(hashes), round_
        assert len(VerdictStore(tmp_path, {"a": 1})) == len(known)
    want = np.zeros(len(known), dtype=ROW)
    for n, k in enumerate(sorted(known)):
        same, mirrored, reason, inliers, r_ncc, overlap = known[k]
        want[n] = (np.frombuffer(k[0], np.uint8), np.frombuffer(k[1], np.uint8), k[2], same, mirrored,
                   REASONS.index(reason), inliers, r_ncc, overlap)
    assert (tmp_path / FILENAME).read_bytes()[-want.nbytes :] == want.tobytes()
    again = VerdictStore(tmp_path, {"a": 1})
    assert all(again.get(*k) == v for k, v in known.items())
    assert again.get(hashes[0], hashes[0], 0) is None and again.get(b"short", hashes[0], 0) is None
    absent = [(a, b, w) for a in hashes for b in hashes for w in range(3) if (a, b, w) not in known]
    assert absent and all(again.get(*k) is None for k in absent)  # every key the binary searches must not find
    shuffled = tmp_path / "shuffled"  # a file whose rows are out of order (not written by save) is sorted on open
    shuffled.mkdir()
    with _HEADER.create(shuffled / FILENAME) as out:  # checksummed like save() writes, the rows reversed
        out.write(want[::-1].tobytes())
        out.write_header(len(want), fingerprint({"a": 1}))
    assert all(VerdictStore(shuffled, {"a": 1}).get(*k) == v for k, v in known.items())
    twice = tmp_path / "twice"  # a file holding a key twice (not written by save): the later row is the verdict
    twice.mkdir()
    older = want[:1].copy()
    older["inliers"] += 1
    with _HEADER.create(twice / FILENAME) as out:
        out.write(np.concatenate([older, want[::-1]]).tobytes())
        out.write_header(len(want) + 1, fingerprint({"a": 1}))
    store = VerdictStore(twice, {"a": 1})
    first = min(known)
    assert len(store) == len(known) and store.get(*first) == known[first]
    newer = (*known[first][:3], 999, *known[first][4:])
    store.put(*first, newer)  # a put that replaces a stored verdict is saved, and read back
    assert store.save(hashes)
    again = VerdictStore(twice, {"a": 1})
    assert len(again) == len(known) and again.get(*first) == newer


def test_verdicts_of_other_settings_or_damaged_are_ignored(tmp_path):
    store = VerdictStore(tmp_path, {"a": 1})
    store.put(H[0], H[1], 0, (True, False, "", 40, 0.9, 1.0))
    store.save(H)
    assert len(VerdictStore(tmp_path, {"a": 2})) == 0
    data = bytearray((tmp_path / FILENAME).read_bytes())
    data[-5] ^= 1
    (tmp_path / FILENAME).write_bytes(bytes(data))
    assert len(VerdictStore(tmp_path, {"a": 1})) == 0  # a cache: damage means verifying again, not an error
    (tmp_path / FILENAME).write_bytes(b"garbage")
    assert len(VerdictStore(tmp_path, {"a": 1})) == 0


def test_links_are_kept_for_one_generation_and_one_set_of_settings(tmp_path):
    from hashdup.io.verdicts import LinkStore

    i, j = np.array([0, 3, 5], dtype=np.int64), np.array([1, 4, 9], dtype=np.int64)
    assert LinkStore(tmp_path, "gen-a", {"r": 10}).load() is None
    assert LinkStore(tmp_path, "gen-a", {"r": 10}).save(i, j)
    got = LinkStore(tmp_path, "gen-a", {"r": 10}).load()
    assert got is not None and np.array_equal(got[0], i) and np.array_equal(got[1], j)
    assert LinkStore(tmp_path, "gen-b", {"r": 10}).load() is None  # a new index generation
    assert LinkStore(tmp_path, "gen-a", {"r": 11}).load() is None  # another radius
    path = tmp_path / "links.hdl"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert LinkStore(tmp_path, "gen-a", {"r": 10}).load() is None  # damaged: decided again


def test_a_repeated_texture_keeps_at_most_n_keypoints():
    """OpenCV's ORB keeps every keypoint tied at its cut-off: a tiled 8-pixel patch gave 388 for 224; the extractor
    keeps the strongest, so the feature file's limits hold."""
    ex = LocalExtractor()
    patch = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    r = ex.describe(np.tile(patch, (18, 24))[:144, :192])
    assert len(r.keypoints) == ex.n_keypoints == len(r.descriptors)


def test_a_cache_that_cannot_be_written_does_not_fail_the_run(tmp_path, monkeypatch):
    from hashdup.io import header as hdr
    from hashdup.io.verdicts import LinkStore

    store = VerdictStore(tmp_path, {"a": 1})
    store.put(H[0], H[1], 0, (True, False, "", 40, 0.9, 1.0))

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hdr.HeaderWriter, "write", full)
    assert not store.save(H) and not (tmp_path / FILENAME).exists()
    assert not LinkStore(tmp_path, "g", {}).save(np.array([0]), np.array([1]))
