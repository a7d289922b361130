"""Colour histograms: joint HSV or CIE Lab bins, globally or per spatial cell."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numba import njit
from numpy.typing import NDArray

from hashdup.descriptors.base import View, check_images

ColorSpace = Literal["hsv", "lab"]
_RANGES = {"hsv": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)), "lab": ((0.0, 100.0), (-128.0, 128.0), (-128.0, 128.0))}
_DEFAULT_BINS = {"hsv": (8, 4, 4), "lab": (4, 8, 8)}


class ColorHistogram:
    """A joint colour histogram, L1-normalised.

    Each pixel is converted to HSV or CIE Lab (D65), each channel quantised into equal-width bins over its full range
    (H, S, V in 0..1; L in 0..100, a and b in -128..128), and the joint bin counted. With ``grid > 1`` the image is
    cut into ``grid`` × ``grid`` cells, one histogram each, concatenated cell by cell in row-major order. The whole
    vector sums to 1 (each cell to ``1 / grid²``).

    Parameters
    ----------
    space : {"hsv", "lab"}, default "hsv"
    bins : tuple of 3 int, optional
        Bins per channel; default (8, 4, 4) for HSV (hue finest) and (4, 8, 8) for Lab.
    grid : int, default 1
        Spatial cells per side.
    image_size : int, default 64
        Side of the square image the reader provides.

    References
    ----------
    M. J. Swain and D. H. Ballard, "Color indexing", International Journal of Computer Vision 7(1), 11–32, 1991.
    """

    name = "color"

    def __init__(self, *, space: ColorSpace = "hsv", bins: tuple[int, int, int] | None = None,
                 grid: int = 1, image_size: int = 64) -> None:
        if space not in _RANGES:
            raise ValueError(f"space must be 'hsv' or 'lab', got {space!r}")
        self.space = space
        self.bins = tuple(int(b) for b in (bins or _DEFAULT_BINS[space]))
        if len(self.bins) != 3 or min(self.bins) < 1:
            raise ValueError(f"bins must be three positive counts, got {bins}")
        self.grid = int(grid)
        self.image_size = int(image_size)
        if self.grid < 1 or self.image_size < self.grid:
            raise ValueError(f"grid must be between 1 and image_size, got grid={grid}, image_size={image_size}")

    @property
    def n_features(self) -> int:
        return int(np.prod(self.bins)) * self.grid * self.grid

    def get_params(self) -> dict[str, Any]:
        return {"space": self.space, "bins": list(self.bins), "grid": self.grid, "image_size": self.image_size}

    def __repr__(self) -> str:
        return f"ColorHistogram(space={self.space!r}, bins={self.bins}, grid={self.grid})"

    def mirror_permutation(self) -> NDArray[np.int64]:
        """Feature order of the histogram of the left-right mirrored image (cell columns reversed; a global
        histogram is mirror-invariant): ``describe(mirror(I)) == describe(I)[perm]``, exactly when ``image_size``
        is a multiple of ``grid`` (otherwise the cells are not all the same width, and it holds approximately)."""
        g, n_bins = self.grid, int(np.prod(self.bins))
        cells = np.arange(g * g).reshape(g, g)[:, ::-1].reshape(-1)
        return (cells[:, None] * n_bins + np.arange(n_bins)[None, :]).reshape(-1).astype(np.int64)

    def views(self) -> dict[str, View]:
        """No view besides the whole histogram (see :meth:`hashdup.descriptors.base.Descriptor.views`)."""
        return {}

    def describe(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Histograms of a batch of images.

        Parameters
        ----------
        images : ndarray of uint8, shape (n, image_size, image_size, 3)

        Returns
        -------
        ndarray of float32, shape (n, n_features), each row summing to 1.
        """
        images = check_images(images, self.image_size)
        n, S = images.shape[0], self.image_size
        if self.space == "hsv":
            idx = hsv_bins(images, self.bins)
        else:
            from skimage.color import rgb2lab  # imported here: it costs ~0.2 s at start-up

            conv = rgb2lab(images)
            idx = np.zeros(images.shape[:3], dtype=np.int64)
            for c, (nb, (lo, hi)) in enumerate(zip(self.bins, _RANGES[self.space], strict=True)):
                q = np.floor((conv[..., c] - lo) * (nb / (hi - lo))).astype(np.int64)
                idx = idx * nb + np.clip(q, 0, nb - 1)
        n_bins = int(np.prod(self.bins))
        g = self.grid
        rows = np.minimum(np.arange(S) * g // S, g - 1)
        cell = rows[:, None] * g + rows[None, :]
        flat = (np.arange(n)[:, None, None] * (g * g) + cell[None]) * n_bins + idx
        counts = np.bincount(flat.ravel(), minlength=n * g * g * n_bins).reshape(n, g * g, n_bins)
        cell_pixels = counts.sum(axis=2, keepdims=True)
        hist = counts / np.maximum(cell_pixels, 1) / (g * g)
        return hist.reshape(n, -1).astype(np.float32)


def hsv_bins(images: NDArray[np.uint8], bins: tuple[int, ...]) -> NDArray[np.int64]:
    """Joint HSV bin of every pixel of uint8 RGB images, in exact integer arithmetic.

    With ``M = max(R, G, B)``, ``m = min(R, G, B)`` and ``Δ = M - m``, the channels are those of
    ``skimage.color.rgb2hsv`` (Smith's hexcone): ``V = M / 255``, ``S = Δ / M`` (0 when ``Δ = 0``) and
    ``H = ((sector · Δ + num) / (6 Δ)) mod 1`` with ``(sector, num)`` = ``(0, G - B)`` when red is the maximum,
    ``(2, B - R)`` for green and ``(4, R - G)`` for blue (blue, then green, winning ties, as in scikit-image; 0 when
    ``Δ = 0``). A channel with ``k`` bins is quantised to ``floor(k · channel)``, clipped to ``k - 1``. Each floor
    is an integer division of exact numerators, so a pixel on a bin edge always falls in the upper bin, where the
    floating-point formula can round either way; otherwise the bins equal scikit-image's, at a fraction of the cost
    (no float64 image, no per-channel masks).

    Parameters
    ----------
    images : ndarray of uint8, shape (..., 3)
    bins : tuple of 3 int
        Bins for H, S and V.

    Returns
    -------
    ndarray of int64, shape images.shape[:-1]
        ``(h · bins[1] + s) · bins[2] + v``.

    References
    ----------
    A. R. Smith, "Color gamut transform pairs", SIGGRAPH 1978.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.shape[-1:] != (3,):
        raise ValueError(f"images must have 3 channels in the last axis, got shape {images.shape}")
    nh, ns, nv = (int(b) for b in bins)
    if min(nh, ns, nv) < 1:
        raise ValueError(f"bins must be three positive counts, got {bins}")
    return _hsv_bins(images.reshape(-1, 3), nh, ns, nv).reshape(images.shape[:-1])


@njit(cache=True, nogil=True)
def _hsv_bins(rgb, nh, ns, nv):  # pragma: no cover - compiled
    out = np.empty(rgb.shape[0], dtype=np.int64)
    for i in range(rgb.shape[0]):
        r, g, b = np.int64(rgb[i, 0]), np.int64(rgb[i, 1]), np.int64(rgb[i, 2])
        hi = max(r, g, b)
        delta = hi - min(r, g, b)
        h = 0
        s = 0
        if delta > 0:
            if b == hi:
                num = 4 * delta + r - g
            elif g == hi:
                num = 2 * delta + b - r
            else:
                num = g - b
            h = (nh * num) // (6 * delta) % nh  # floor division and modulo round towards -inf, as the formula needs
            s = min(ns * delta // hi, ns - 1)
        v = min(nv * hi // 255, nv - 1)
        out[i] = (h * ns + s) * nv + v
    return out
