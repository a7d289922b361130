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


def exact_hsv_bins(rgb, bins):
    """The HSV bins of (n, 3) pixels in rational arithmetic (fractions.Fraction), from the hexcone formulas."""
    from fractions import Fraction
    from math import floor

    out = []
    for r, g, b in rgb.astype(int).tolist():
        hi, lo = max(r, g, b), min(r, g, b)
        d = hi - lo
        if d == 0:
            h, s = Fraction(0), Fraction(0)
        else:
            h6 = 4 + Fraction(r - g, d) if b == hi else 2 + Fraction(b - r, d) if g == hi else Fraction(g - b, d)
            h, s = (h6 / 6) % 1, Fraction(d, hi)
        ch = [min(floor(k * x), k - 1) for k, x in zip(bins, (h, s, Fraction(hi, 255)), strict=True)]
        out.append((ch[0] * bins[1] + ch[1]) * bins[2] + ch[2])
    return np.array(out)


def hsv_pixels(n, seed):
    """Random pixels plus the cases the formulas branch on: greys, ties for the maximum, bin edges."""
    rng = np.random.default_rng(seed)
    special = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (200, 50, 50), (50, 200, 200), (200, 200, 50),
               (50, 50, 200), (255, 0, 0), (255, 0, 1), (255, 1, 0), (11, 11, 44), (64, 16, 16), (255, 255, 0),
               (0, 255, 255), (255, 0, 255), (191, 191, 191), (192, 0, 0), (1, 0, 0), (2, 1, 0)]
    ties = rng.integers(1, 64, size=(n // 4, 1)) * np.array([[4, 1, 1]])  # S = 3/4 exactly, on a bin edge
    return np.concatenate([np.array(special), rng.integers(0, 256, size=(n, 3)), rng.permuted(ties, axis=1)]
                          ).astype(np.uint8)


@pytest.mark.parametrize("bins", [(8, 4, 4), (6, 3, 5), (7, 2, 9), (1, 1, 1)])
def test_hsv_bins_equal_the_exact_rational_bins(bins):
    from hashdup.descriptors.color import hsv_bins

    px = hsv_pixels(4000, seed=sum(bins))
    np.testing.assert_array_equal(hsv_bins(px, bins), exact_hsv_bins(px, bins))


def test_hsv_bins_equal_scikit_image_except_on_bin_edges():
    from skimage.color import rgb2hsv

    from hashdup.descriptors.color import hsv_bins

    bins = (8, 4, 4)
    px = hsv_pixels(20000, seed=1)
    hsv = rgb2hsv(px[None])[0]
    ch = [np.clip(np.floor(hsv[:, c] * k).astype(int), 0, k - 1) for c, k in enumerate(bins)]
    ref = (ch[0] * bins[1] + ch[1]) * bins[2] + ch[2]
    got = hsv_bins(px, bins)
    differ = got != ref
    assert 0 < differ.sum() < 0.05 * len(px)  # the planted S = 3/4 pixels sit on an edge; floats may round below
    # where they differ, the exact value is on a bin edge: one channel's bin is one above scikit-image's
    exact = exact_hsv_bins(px[differ], bins)
    np.testing.assert_array_equal(got[differ], exact)
    step = np.abs(got[differ] - ref[differ])
    assert set(np.unique(step)) <= {1, bins[2], bins[1] * bins[2], (bins[0] - 1) * bins[1] * bins[2]}


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
