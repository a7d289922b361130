"""GIST: Gabor filter-bank energies pooled on a spatial grid (Oliva & Torralba 2001)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from hashdup.descriptors.base import check_images, to_gray


class Gist:
    """The GIST descriptor of Oliva & Torralba, following the authors' reference code (``LMgist.m``).

    Steps, per image:

    1. grayscale (BT.601 luma), resized by the reader to ``image_size`` × ``image_size`` (the whole frame, aspect
       ratio not kept), then stretched to the range 0..255;
    2. prefiltering: ``log(1 + I)``, whitening by subtracting a Gaussian low-pass (cut-off ``fc_prefilt`` cycles per
       image), and local contrast normalisation by ``0.2 + `` the local standard deviation;
    3. a bank of Gabor-like filters applied in the Fourier domain, ``len(orientations)`` scales with
       ``orientations[s]`` orientations each, on the image padded symmetrically by ``boundary`` pixels; the filter
       for scale ``s`` and orientation ``o`` of ``K`` is
       ``G(f, θ) = exp(-3.5 (|f| / (N f_s) - 1)² - 2π (16 K²/32²) (θ + πo/K)²)`` with ``f_s = 0.3 / 1.85^s``;
    4. the magnitude of each filtered image, averaged over a ``blocks`` × ``blocks`` grid.

    The output is ordered filter by filter (scale-major, then orientation), each holding the grid cells in
    row-major order: 4 scales × 8 orientations × 4 × 4 cells = 512 float32 values by default.

    Parameters
    ----------
    image_size : int, default 128
        Side of the square grayscale image, a multiple of ``blocks`` (128 or 256 in the literature).
    orientations : tuple of int, default (8, 8, 8, 8)
        Orientations per scale, from fine to coarse.
    blocks : int, default 4
        Grid cells per side.
    fc_prefilt : float, default 4
        Cut-off of the whitening filter, in cycles per image.
    boundary : int, default 32
        Symmetric padding, in pixels, before the Gabor filtering.

    References
    ----------
    A. Oliva and A. Torralba, "Modeling the shape of the scene: a holistic representation of the spatial envelope",
    International Journal of Computer Vision 42(3), 145–175, 2001. Reference implementation ``LMgist.m`` (LabelMe
    toolbox, A. Torralba).
    """

    name = "gist"

    def __init__(self, *, image_size: int = 128, orientations: tuple[int, ...] = (8, 8, 8, 8), blocks: int = 4,
                 fc_prefilt: float = 4.0, boundary: int = 32) -> None:
        self.image_size = int(image_size)
        self.orientations = tuple(int(o) for o in orientations)
        self.blocks = int(blocks)
        self.fc_prefilt = float(fc_prefilt)
        self.boundary = int(boundary)
        if self.image_size < 16 or self.image_size % (2 * self.blocks):
            raise ValueError(f"image_size must be ≥ 16 and a multiple of 2 × blocks ({2 * self.blocks}), got {image_size}")
        if not self.orientations or min(self.orientations) < 1:
            raise ValueError(f"orientations must be positive counts per scale, got {orientations}")
        if self.blocks < 1:
            raise ValueError(f"blocks must be ≥ 1, got {blocks}")
        if not 0 <= self.boundary <= self.image_size:
            raise ValueError(f"boundary must be between 0 and image_size, got {boundary}")

    @property
    def n_filters(self) -> int:
        return sum(self.orientations)

    @property
    def n_features(self) -> int:
        return self.n_filters * self.blocks * self.blocks

    def get_params(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "orientations": list(self.orientations), "blocks": self.blocks,
                "fc_prefilt": self.fc_prefilt, "boundary": self.boundary}

    def __repr__(self) -> str:
        return f"Gist(image_size={self.image_size}, orientations={self.orientations}, blocks={self.blocks})"

    # --- filters -------------------------------------------------------------------------------------------------
    @cached_property
    def gabor_bank(self) -> NDArray[np.float32]:
        """Transfer functions of the filter bank, shape (n_filters, N, N) with N = image_size + 2 boundary,
        laid out like ``numpy.fft.fft2`` output (zero frequency first)."""
        n = self.image_size + 2 * self.boundary
        f = np.arange(-n // 2, n // 2, dtype=np.float64)
        fx, fy = np.meshgrid(f, f)
        fr = np.fft.fftshift(np.hypot(fx, fy))
        t = np.fft.fftshift(np.angle(fx + 1j * fy))
        bank = []
        for s, n_or in enumerate(self.orientations):
            for o in range(n_or):
                p0, p1, p2, p3 = 0.35, 0.3 / 1.85**s, 16 * n_or**2 / 32**2, np.pi / n_or * o
                tr = t + p3
                tr = tr + 2 * np.pi * (tr < -np.pi) - 2 * np.pi * (tr > np.pi)
                bank.append(np.exp(-10 * p0 * (fr / n / p1 - 1) ** 2 - 2 * p2 * np.pi * tr**2))
        return np.asarray(bank, dtype=np.float32)

    @cached_property
    def _prefilter(self) -> NDArray[np.float32]:
        n = self.image_size + 2 * 5
        s1 = self.fc_prefilt / np.sqrt(np.log(2))
        f = np.arange(-n // 2, n // 2, dtype=np.float64)
        fx, fy = np.meshgrid(f, f)
        return np.fft.fftshift(np.exp(-(fx**2 + fy**2) / s1**2)).astype(np.float32)

    # --- computation ---------------------------------------------------------------------------------------------
    def prefilter(self, gray: NDArray[np.float32]) -> NDArray[np.float32]:
        """Whitening and local contrast normalisation of (n, S, S) images in 0..255 (``prefilt.m``)."""
        w = 5
        img = np.log1p(gray.astype(np.float32))
        img = np.pad(img, ((0, 0), (w, w), (w, w)), mode="symmetric")
        gf = self._prefilter
        low = scipy.fft.ifft2(scipy.fft.fft2(img, axes=(1, 2), workers=-1) * gf, axes=(1, 2), workers=-1).real
        out = img - low
        local = np.sqrt(np.abs(scipy.fft.ifft2(scipy.fft.fft2(out * out, axes=(1, 2), workers=-1) * gf,
                                              axes=(1, 2), workers=-1)))
        out = out / (0.2 + local)
        return out[:, w:-w, w:-w].astype(np.float32)

    def describe(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """GIST of a batch of images.

        Parameters
        ----------
        images : ndarray of uint8, shape (n, image_size, image_size, 3)
            RGB images (a single image of shape (image_size, image_size, 3) is accepted).

        Returns
        -------
        ndarray of float32, shape (n, n_features)
        """
        images = check_images(images, self.image_size)
        gray = to_gray(images)
        lo = gray.min(axis=(1, 2), keepdims=True)
        gray = gray - lo
        hi = gray.max(axis=(1, 2), keepdims=True)
        gray = np.where(hi > 0, gray * (255.0 / np.where(hi > 0, hi, 1.0)), 0.0).astype(np.float32)
        pre = self.prefilter(gray)
        S, b, B = self.image_size, self.boundary, self.blocks
        padded = np.pad(pre, ((0, 0), (b, b), (b, b)), mode="symmetric")
        bank = self.gabor_bank
        out = np.empty((len(images), self.n_features), dtype=np.float32)
        for i in range(len(images)):
            F = scipy.fft.fft2(padded[i], workers=-1).astype(np.complex64)
            energy = np.abs(scipy.fft.ifft2(bank * F, axes=(1, 2), workers=-1))[:, b : b + S, b : b + S]
            cells = energy.reshape(self.n_filters, B, S // B, B, S // B).mean(axis=(2, 4))
            out[i] = cells.reshape(-1)
        return out
