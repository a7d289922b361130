"""Descriptors: golden values, what the GIST filter bank promises, invariances on real photos."""

import io

import numpy as np
import pytest
from PIL import Image

from hashdup import bits
from hashdup.descriptors import DESCRIPTORS, ColorHistogram, Gist, GistColor, make_descriptor
from hashdup.encoders import LSH
from hashdup.io import images

from .conftest import DATA, rgb_noise
from .data.make_golden import GOLDEN_CASES, compute


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_values(case):
    expected = np.load(DATA / "golden.npz")[case]
    got = compute(*GOLDEN_CASES[case])
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(DESCRIPTORS))
def test_shape_dtype_determinism_and_batching(name):
    desc = make_descriptor(name)
    S = desc.image_size
    batch = np.stack([rgb_noise(S, S, seed=s) for s in range(3)])
    X = desc.describe(batch)
    assert X.shape == (3, desc.n_features) and X.dtype == np.float32 and np.isfinite(X).all()
    assert X.tobytes() == desc.describe(batch).tobytes()
    for i in range(3):  # exactly the same bits alone as in a batch: a query must match its indexed self
        assert desc.describe(batch[i]).tobytes() == X[i : i + 1].tobytes()
    assert make_descriptor(name, **desc.get_params()).get_params() == desc.get_params()


def test_gist_default_is_512_values():
    assert Gist().n_features == 512 and Gist(image_size=256).n_features == 512


def test_descriptors_reject_wrong_input():
    with pytest.raises(ValueError, match=r"\(n, 128, 128, 3\)"):
        Gist().describe(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        Gist().describe(np.zeros((1, 128, 128, 3), np.float32))
    with pytest.raises(ValueError, match="multiple"):
        Gist(image_size=100)
    with pytest.raises(ValueError, match="unknown descriptor"):
        make_descriptor("sift")


def grating(size, cycles_per_pixel, angle):
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = 2 * np.pi * cycles_per_pixel * (x * np.cos(angle) + y * np.sin(angle))
    g = (127.5 + 100 * np.cos(phase)).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


@pytest.mark.parametrize("scale", range(4))
@pytest.mark.parametrize("orientation", range(8))
def test_gist_filter_tuned_to_grating(scale, orientation):
    """A sinusoidal grating excites the filter whose centre frequency (0.3 / 1.85^s cycles per pixel) and
    orientation (π o / 8) match it: the bank of Oliva & Torralba tiles the spectrum by scale and orientation."""
    g = Gist()
    freq = 0.3 / 1.85**scale
    angle = -np.pi * orientation / 8  # LMgist filter o peaks at frequency angle -π o / K
    energy = g.describe(grating(128, freq, angle))[0].reshape(4, 8, 16).mean(axis=2)
    s, o = np.unravel_index(np.argmax(energy), energy.shape)
    assert (s, o) == (scale, orientation)


def test_gist_ignores_global_brightness_and_contrast(photo_paths):
    px = images.load(photo_paths[0], 128).pixels.astype(np.float64)
    dimmer = np.clip(px * 0.6 + 20, 0, 255).astype(np.uint8)
    a, b = Gist().describe(np.stack([px.astype(np.uint8), dimmer]))
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.05


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_edits_stay_within_a_few_bits_and_photos_stay_apart(photo_paths):
    """On real photos with 64-bit LSH codes: JPEG q=50 and a 50 % resize move a code by a few bits, while distinct
    photos are far apart (expected distance 64 θ/π for descriptors at angle θ)."""
    g = Gist()
    originals, recompressed, halved = [], [], []
    for p in photo_paths:
        im = Image.open(p)
        im.load()
        originals.append(images.load(p, 128).pixels)
        recompressed.append(images.decode(_jpeg(im, 50), 128).pixels)
        small = im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
        halved.append(images.decode(_jpeg(small, 90), 128).pixels)
    X = g.describe(np.stack(originals))
    enc = LSH(n_bits=64, random_state=0).fit(X)
    C = enc.encode(X)
    d_jpeg = np.diag(bits.hamming(C, enc.encode(g.describe(np.stack(recompressed)))))
    d_half = np.diag(bits.hamming(C, enc.encode(g.describe(np.stack(halved)))))
    D = bits.hamming(C, C)
    apart = D[~np.eye(len(C), dtype=bool)]
    assert d_jpeg.max() <= 6 and d_half.max() <= 6
    assert apart.min() >= 14 and np.median(apart) >= 25


def test_color_histogram_bins():
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    h = ColorHistogram().describe(red)[0]
    assert h.sum() == pytest.approx(1.0) and h.max() == pytest.approx(1.0)
    assert np.argmax(h) == 0 * 16 + 3 * 4 + 3  # hue bin 0, saturation and value in their top bins
    half = red.copy()
    half[:, 32:] = [0, 0, 255]
    cells = ColorHistogram(grid=2).describe(half)[0].reshape(4, -1)
    np.testing.assert_allclose(cells.sum(axis=1), 0.25)
    assert np.argmax(cells[0]) == np.argmax(cells[2]) != np.argmax(cells[1]) == np.argmax(cells[3])
    lab = ColorHistogram(space="lab").describe(red)[0]
    assert lab.sum() == pytest.approx(1.0) and lab.max() == pytest.approx(1.0)


def test_gist_color_weighting():
    imgs = np.stack([rgb_noise(128, 128, seed=s) for s in (1, 2)])
    gc = GistColor(color_weight=0.25)
    X = gc.describe(imgs).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    g, c = X[:, :512], X[:, 512:]
    np.testing.assert_allclose(np.linalg.norm(g, axis=1) ** 2, 0.75, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1) ** 2, 0.25, rtol=1e-5)
    with pytest.raises(ValueError, match="color_weight"):
        GistColor(color_weight=1.5)
