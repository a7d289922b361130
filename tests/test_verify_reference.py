"""The compiled verification (hashdup.dedup.verify, hashdup.index.matching) against the slow scikit-image reference
(tests/reference_verify.py) on the same stored features: step by step, then verdict by verdict on a fixed set of
pairs of real photos (edited copies, mirrored copies, different photos, neighbouring tiles of one photo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import ImageOps

from hashdup.dedup.verify import Verifier, _photometric_scores, block_agreement, ncc
from hashdup.index.matching import match_binary

from .reference_verify import ReferenceVerifier, band_pass
from .test_verify import EDITS, EXTRACTOR, PHOTOS, SKIMAGE, features, photo, save, tile

needs_data = pytest.mark.skipif(not SKIMAGE.is_dir(), reason="shared data not found")


def test_match_binary_is_skimage_match_descriptors():
    from skimage.feature import match_descriptors

    rng = np.random.default_rng(0)
    for t in range(60):
        a = rng.integers(0, 256, (int(rng.integers(1, 224)), 32), dtype=np.uint8)
        b = rng.integers(0, 256, (int(rng.integers(1, 224)), 32), dtype=np.uint8)
        k = min(len(a), len(b)) // 2
        b[:k] = a[:k] ^ (rng.random((k, 32)) < 0.05) * rng.integers(1, 256, (k, 32), dtype=np.uint8)
        b[k : k + 3] = b[0]  # ties
        for ratio, cross in ((0.85, True), (1.0, True), (0.7, False)):
            ia, ib = match_binary(a, b, max_ratio=ratio, cross_check=cross)
            m = match_descriptors(np.unpackbits(a, axis=1).astype(bool), np.unpackbits(b, axis=1).astype(bool),
                                  cross_check=cross, max_ratio=ratio)
            assert np.array_equal(m[:, 0], ia) and np.array_equal(m[:, 1], ib), (t, ratio, cross)
    ia, ib, d = match_binary(a, b, max_ratio=0.85, return_distance=True)
    assert np.array_equal(d, [int(np.unpackbits(a[x] ^ b[y]).sum()) for x, y in zip(ia, ib, strict=True)])
    assert [len(x) for x in match_binary(a[:0], b)] == [0, 0]
    with pytest.raises(ValueError, match="64-bit words"):
        match_binary(a[:, :30], b[:, :30])


def test_photometric_scores_are_ncc_and_block_agreement_over_the_overlap():
    rng = np.random.default_rng(1)
    for _ in range(40):
        h, w = (int(x) for x in rng.integers(20, 90, 2))
        a = rng.standard_normal((h, w)).astype(np.float32)
        b = (a * rng.uniform(0, 1) + rng.standard_normal((h, w)) * rng.uniform(0.1, 2)).astype(np.float32)
        valid = np.ones((h, w), bool)
        valid[: rng.integers(0, h // 2), :] = False
        valid[:, w - rng.integers(0, w // 3) :] = False
        block = int(rng.integers(4, 9))
        n, r, frac = _photometric_scores(a, np.where(valid, b, np.nan).astype(np.float32), block, 0.7)
        assert n == valid.sum()
        assert r == pytest.approx(ncc(a[valid], b[valid]), abs=1e-5)
        assert frac == pytest.approx(block_agreement(a, np.where(valid, b, 0).astype(np.float32), valid, block),
                                     abs=1e-12)


def _frame_and_thumb(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A photo's greyscale frame as the indexing run decodes it, and the contrast-stretched thumbnail that
    :meth:`LocalExtractor.describe` band-passes (uint8)."""
    import cv2

    from hashdup.descriptors.local import stretch
    from hashdup.io import images

    content = images.read_file(str(SKIMAGE / name))
    assert content is not None
    gray = images.decode(content.data, 128, name=name, frame=EXTRACTOR.frame).gray
    h, w = gray.shape
    s = min(1.0, float(np.sqrt(EXTRACTOR.thumb_pixels / (h * w))))
    thumb8 = np.rint(stretch(gray)[0] * 255).astype(np.uint8)
    return gray, cv2.resize(thumb8, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)


def test_photometric_scores_of_stored_thumbnails_are_those_of_the_float_kernel_bit_for_bit():
    """The screen's integer kernel, reading int8 thumbnails in place (plain or mirrored), gives exactly what the float
    kernel gives on the float32 bands: every sum of multiples of 1/32 is exact in float64."""
    from hashdup.index._match_kernels import _photometric_scores_i8
    from hashdup.io.featurefile import BAND_SCALE

    rng = np.random.default_rng(7)
    step = np.float32(1 / BAND_SCALE)
    for t in range(60):
        h, w = (int(x) for x in rng.integers(4, 110, 2))
        a = rng.integers(-127, 128, (h, w), dtype=np.int8)
        b = (np.clip(a * rng.uniform(-1, 1) + rng.normal(0, rng.uniform(1, 60), (h, w)), -127, 127)).astype(np.int8)
        if t % 3 == 0:
            b[: h // 2] = a[: h // 2]  # half the blocks agree
        flat = np.concatenate([rng.integers(-127, 128, 5, dtype=np.int8), a.ravel(), b.ravel()])
        block = int(rng.integers(4, 12))
        for mirrored in (False, True):
            B = b[:, ::-1] if mirrored else b
            want = _photometric_scores(a.astype(np.float32) * step, np.ascontiguousarray(B.astype(np.float32) * step),
                                       block, 0.7)
            got = _photometric_scores_i8(flat, 5, 5 + h * w, h, w, mirrored, block, 0.7, step)
            assert got == want, (t, mirrored, got, want)


@needs_data
def test_band_pass_is_the_gaussian_difference_of_scipy():
    from hashdup.descriptors.local import band_pass as fast

    _, thumb = _frame_and_thumb("coffee.png")
    ref, got = band_pass(thumb, EXTRACTOR.frame), fast(thumb, EXTRACTOR.frame)
    inner = (slice(8, -8), slice(8, -8))  # borders differ by the filters' edge handling
    assert np.abs(got[inner] - ref[inner]).max() < 0.05 * np.abs(ref[inner]).max()


@needs_data
@pytest.mark.parametrize("name", ["coffee.png", "camera.png", "chelsea.png"])
def test_stored_thumbnail_is_the_band_pass_quantised(name):
    """The features store the band-passed thumbnail in 1/BAND_SCALE steps: within half a step of the float band
    wherever it is not clipped, clipped in under 0.1 % of the pixels, and the float32 band it gives back
    correlates with the exact one at 0.999 or more."""
    from hashdup.descriptors.local import band_pass as fast
    from hashdup.io.featurefile import BAND_SCALE

    gray, thumb = _frame_and_thumb(name)
    stored = EXTRACTOR.describe(gray)
    exact = fast(thumb, EXTRACTOR.frame)
    assert stored.thumb.dtype == np.int8 and stored.thumb.shape == exact.shape
    inside = np.abs(exact) < 127 / BAND_SCALE
    assert np.abs(stored.band()[inside] - exact[inside]).max() <= 0.5 / BAND_SCALE + 1e-6
    assert (~inside).mean() < 1e-3
    assert ncc(stored.band(), exact) >= 0.999


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, str, bool]]:
    """(what, path_a, path_b, expected same) for a fixed set of real pairs."""
    if not SKIMAGE.is_dir():
        pytest.skip("shared data not found")
    base = tmp_path_factory.mktemp("pairs")
    out = []
    for name in PHOTOS:
        im = photo(name)
        original = save(im, base / f"{Path(name).stem}.png")
        for edit in sorted(EDITS):
            out.append((f"{name} {edit}", original, EDITS[edit](im, base / f"{Path(name).stem}_{edit}.png"), True))
        out.append((f"{name} mirrored", original, save(ImageOps.mirror(im), base / f"{Path(name).stem}_m.png"), True))
    others = [save(photo(n), base / f"other_{Path(n).stem}.png") for n in ("chelsea.png", "horse.png", "camera.png")]
    out += [(f"different {a} {b}", others[a], others[b], False) for a, b in ((0, 1), (0, 2), (1, 2))]
    for n, (first, second) in enumerate([((8, 2), (8, 3)), ((7, 1), (8, 1)), ((5, 0), (9, 5))]):
        out.append((f"tiles {first} {second}", tile("100000", *first, base / f"t{n}a.jpg"),
                    tile("100000", *second, base / f"t{n}b.jpg"), False))
    return out


def test_compiled_and_reference_verdicts_agree(pairs):
    reference = ReferenceVerifier(EXTRACTOR.frame)
    disagreements, wrong = [], []
    for what, a, b, expected in pairs:
        fa, fb = features(a), features(b)
        fast = Verifier([fa, fb], EXTRACTOR.frame).verify(0, 1)
        slow = reference.compare(fa, fb)
        if fast.same != slow.same:
            disagreements.append((what, fast, slow))
        if fast.same != expected:
            wrong.append((what, fast))
        if fast.same and slow.same and fast.inliers and slow.inliers:  # the same transform, found twice
            assert abs(fast.inliers - slow.inliers) <= max(3, 0.25 * slow.inliers), (what, fast, slow)
    assert disagreements == []
    assert wrong == []



def test_screen_decides_pairs_as_verify_does(pairs):
    """Verifier.screen, the batched compiled pass of dedup, gives verify's verdict on every pair it decides, each
    way round, and decides both acceptances (whole frames, plain and mirrored) and rejections by itself."""
    feats = [features(p) for _, a, b, _ in pairs for p in (a, b)]
    asked = [(2 * n, 2 * n + 1, way) for n in range(len(pairs)) for way in (None, False, True)]
    for threads in (1, 2):
        verifier = Verifier(feats, EXTRACTOR.frame, threads=threads)
        screened = verifier.screen(asked)
        decided = {"same": 0, "mirrored": 0, "different": 0}
        for (i, j, way), got in zip(asked, screened, strict=True):
            if got is None:
                continue
            full = verifier.verify(i, j, way)
            assert (got.same, got.same and got.mirrored) == (full.same, full.same and full.mirrored), \
                (pairs[i // 2][0], way, got, full)
            decided["different" if not got.same else "mirrored" if got.mirrored else "same"] += 1
        assert min(decided.values()) > 0, decided
        assert sum(v is None for v in screened) > 0  # pairs that need RANSAC are left to verify


def test_screen_reads_a_feature_file_in_place_with_the_same_verdicts(pairs, tmp_path):
    """dedup's verifier screens from the feature file's memory map; it decides every pair as from the records."""
    from hashdup.io.featurefile import FeatureFile

    feats = [features(p) for _, a, b, _ in pairs for p in (a, b)]
    FeatureFile.write(tmp_path / "f.hdf", feats, frame=EXTRACTOR.frame, max_keypoints=EXTRACTOR.n_keypoints,
                      thumb_pixels=EXTRACTOR.thumb_pixels)
    ff = FeatureFile.open(tmp_path / "f.hdf")
    asked = [(2 * n, 2 * n + 1, way) for n in range(len(pairs)) for way in (None, False, True)]
    from_list = Verifier(feats, EXTRACTOR.frame).screen(asked)
    from_file = Verifier(ff, EXTRACTOR.frame).screen(asked)
    assert from_file == from_list and any(v is not None for v in from_file)
    assert [Verifier(ff, EXTRACTOR.frame).verify(i, j, w) for i, j, w in asked[:9]] == \
        [Verifier(feats, EXTRACTOR.frame).verify(i, j, w) for i, j, w in asked[:9]]


def test_close_rows_bounds_the_close_matches():
    from hashdup.index._match_kernels import _close_rows

    rng = np.random.default_rng(3)
    for _ in range(40):
        a = rng.integers(0, 256, (int(rng.integers(1, 120)), 32), dtype=np.uint8)
        b = rng.integers(0, 256, (int(rng.integers(1, 120)), 32), dtype=np.uint8)
        k = int(rng.integers(0, min(len(a), len(b)) + 1))
        b[:k] = a[:k] ^ (rng.random((k, 32)) < 0.02) * rng.integers(1, 256, (k, 32), dtype=np.uint8)
        d = np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(axis=2)
        rows = int((d.min(axis=1) <= 48).sum())
        assert _close_rows(a.view(np.uint64), b.view(np.uint64), 48, 10**6) == rows
        assert _close_rows(a.view(np.uint64), b.view(np.uint64), 48, 2) == min(rows, 2)
        _, _, dist = match_binary(a, b, max_ratio=0.85, return_distance=True)
        assert int((dist <= 48).sum()) <= rows


@pytest.mark.parametrize("d", [1, 8, 37, 640])  # no whole group of 8 features, exactly one, a remainder, many
def test_pair_distances_are_numpy_norms(d):
    from hashdup.index.matching import pair_distance, pair_distances

    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((50, d)).astype(np.float32), rng.standard_normal((60, d)).astype(np.float32)
    i, j = rng.integers(0, 50, 300), rng.integers(0, 60, 300)
    want = np.linalg.norm(A[i].astype(np.float64) - B[j].astype(np.float64), axis=1)
    got = pair_distances(A, B, i, j)
    assert np.allclose(got, want, rtol=1e-12, atol=0)
    with pytest.raises(IndexError):
        pair_distances(A, B, np.array([50]), np.array([0]))
    one = [pair_distance(A, B, int(a), int(b)) for a, b in zip(i, j, strict=True)]  # the one-pair path, bit for bit
    assert one == got.tolist()
    for a, b in ((50, 0), (0, 60), (-1, 0)):
        with pytest.raises(IndexError):
            pair_distance(A, B, a, b)
