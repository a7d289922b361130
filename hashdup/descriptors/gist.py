"""GIST: Gabor filter-bank energies pooled on a spatial grid (Oliva & Torralba 2001)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from hashdup.descriptors.base import View, check_images, to_gray


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
            raise ValueError(f"image_size must be ≥ 16 and a multiple of 2 × blocks ({2 * self.blocks}), "
                             f"got {image_size}")
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

    def coarse(self, X: NDArray[np.floating], blocks: int = 2) -> NDArray[np.float64]:
        """GIST on a coarser grid, from full descriptors: cell means averaged over ``blocks`` × ``blocks`` groups of
        cells (exact, the cells being equal). Coarse cells move little when a picture is cropped or rotated a few
        degrees, so near-duplicate search looks for neighbours there too.

        Parameters
        ----------
        X : ndarray, shape (n, n_features)
        blocks : int
            Cells per side of the coarse grid, a divisor of :attr:`blocks`.

        Returns
        -------
        ndarray of float64, shape (n, n_filters × blocks²)
        """
        B, f = self.blocks, self.blocks // blocks
        if blocks < 1 or B % blocks:
            raise ValueError(f"blocks must divide {B}, got {blocks}")
        X = np.asarray(X, dtype=np.float64).reshape(len(X), self.n_filters, blocks, f, blocks, f)
        return X.mean(axis=(3, 5)).reshape(len(X), -1)

    def views(self) -> dict[str, View]:
        """Where near-duplicate search also looks for neighbours: the GIST on a 2 × 2 grid (see :meth:`coarse`)."""
        return {"gist-2x2": lambda X: self.coarse(X, 2)}

    def mirror_permutation(self) -> NDArray[np.int64]:
        """Feature order of the GIST of the left-right mirrored image: ``describe(mirror(I)) ≈ describe(I)[perm]``.

        Mirroring maps a frequency direction α to −α, so orientation ``o`` of ``K`` (direction −πo/K, directions
        being equivalent modulo π for a real image) trades places with orientation ``(K − o) mod K``, and the grid
        columns reverse. The equality holds up to the one-pixel shift of the discrete mirror and float rounding, so
        mirrored copies are matched without describing them again.

        Returns
        -------
        ndarray of int64, shape (n_features,)
        """
        B = self.blocks
        cells = np.arange(B * B).reshape(B, B)[:, ::-1].reshape(-1)  # row-major cells, columns reversed
        perm: list[np.int64] = []  # one feature index per entry
        start = 0
        for k in self.orientations:
            for o in range(k):
                f = start + (k - o) % k
                perm.extend(f * B * B + cells)
            start += k
        return np.asarray(perm, dtype=np.int64)

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

    @cached_property
    def _prefilter_half(self) -> NDArray[np.float32]:
        """The columns of :attr:`_prefilter` a real-input FFT keeps, with its subnormal float32 gains (under 1e-38,
        far below rounding) set to zero: arithmetic on subnormal numbers is many times slower."""
        gf = self._prefilter[:, : self._prefilter.shape[1] // 2 + 1]
        return np.ascontiguousarray(np.where(gf < np.finfo(np.float32).tiny, np.float32(0), gf))

    # --- computation ---------------------------------------------------------------------------------------------
    def prefilter(self, gray: NDArray[np.float32]) -> NDArray[np.float32]:
        """Whitening and local contrast normalisation of (n, S, S) images in 0..255 (``prefilt.m``).

        The Gaussian low-pass is real and even, so both filterings use real-input FFTs.
        """
        import scipy.fft  # here, not at the top: opening an index (dedup, info) never runs a transform

        w = 5
        img = np.log1p(gray.astype(np.float32))
        img = np.pad(img, ((0, 0), (w, w), (w, w)), mode="symmetric")
        shape = img.shape[1:]
        gf = self._prefilter_half
        low = scipy.fft.irfft2(scipy.fft.rfft2(img, axes=(1, 2)) * gf, s=shape, axes=(1, 2))
        out = img - low
        local = np.sqrt(np.abs(scipy.fft.irfft2(scipy.fft.rfft2(out * out, axes=(1, 2)) * gf, s=shape, axes=(1, 2))))
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
        import scipy.fft

        pre = self.prefilter(gray)
        b = self.boundary
        padded = np.pad(pre, ((0, 0), (b, b), (b, b)), mode="symmetric")
        spectra = scipy.fft.fft2(padded, axes=(1, 2)).astype(np.complex64, copy=False)
        out = np.empty((len(images), self.n_features), dtype=np.float32)
        for i in range(len(images)):  # image by image: the same bits alone as in any batch, and cache-sized work
            out[i] = self._pooled_energy(spectra[i]).reshape(-1)
        return out

    # --- the filter bank, pruned ---------------------------------------------------------------------------------
    @cached_property
    def _bank_groups(self) -> list[_FilterGroup]:
        """The bank cut to the frequencies where each filter is not negligible, grouped by scale and by the axis
        along which its support is narrower (see :meth:`_pooled_energy`)."""
        bank = self.gabor_bank
        n = bank.shape[1]
        scale_of = np.repeat(np.arange(len(self.orientations)), self.orientations)
        members: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for k, support in enumerate(bank > NEGLIGIBLE_GAIN):
            rows, cols = support.any(axis=1), support.any(axis=0)
            axis = 0 if rows.sum() <= cols.sum() else 1
            start, length = _cyclic_window(rows if axis == 0 else cols)
            members.setdefault((int(scale_of[k]), axis), []).append((k, start, length))
        groups = []
        for (_, axis), group in sorted(members.items()):
            m = max(length for _, _, length in group)
            ids = np.array([k for k, _, _ in group])
            windows = (np.array([start for _, start, _ in group])[:, None] + np.arange(m)) % n
            filters = bank[ids] if axis == 0 else bank[ids].transpose(0, 2, 1)
            filters = np.take_along_axis(filters, windows[:, :, None], axis=1)  # (g, m, n)
            filters = np.where(filters < NEGLIGIBLE_GAIN, np.float32(0), filters)  # no slow subnormal arithmetic
            groups.append(_FilterGroup(axis, ids, np.ascontiguousarray(windows, dtype=np.intp),
                                       np.ascontiguousarray(filters, dtype=np.float32)))
        return groups

    def _pooled_energy(self, spectrum: NDArray[np.complex64]) -> NDArray[np.float32]:
        """Grid means of the filtered magnitudes of one padded image, shape (n_filters, blocks, blocks).

        Computes what ``abs(ifft2(bank * spectrum))`` cropped and pooled gives, with less work: every filter is
        negligible (gain under :data:`NEGLIGIBLE_GAIN`) outside a band of rows (or columns) of the spectrum, so the
        first 1-D inverse transforms run only over that band (a cyclic window, moved to frequency 0: a frequency
        shift multiplies the output by a unit phase, leaving the magnitude unchanged), and the second ones only
        over the lines that survive the crop of the ``boundary``. The results equal the full computation up to
        float32 rounding (checked against it in ``tests/test_extract.py``).
        """
        import scipy.fft

        S, b, B = self.image_size, self.boundary, self.blocks
        n = S + 2 * b
        by_axis = (spectrum, np.ascontiguousarray(spectrum.T))
        cells = np.empty((self.n_filters, B, B), dtype=np.float32)
        buffers = _BUFFERS.by_gist.setdefault(id(self), {})
        for k, g in enumerate(self._bank_groups):
            band = _filtered_band(by_axis[g.axis], g.windows, g.gains)  # (g, m, n): the band's lines, filtered
            lines = scipy.fft.ifft(band, axis=2, overwrite_x=True)[:, :, b : b + S]
            m = lines.shape[1]
            padded = buffers.get(k)  # the zero-padded input of the second transforms, reused (no page faults)
            if padded is None or padded.shape != (len(g.ids), n, S):
                padded = buffers[k] = np.zeros((len(g.ids), n, S), dtype=np.complex64)
            padded[:, :m] = lines
            padded[:, m:] = 0
            filtered = scipy.fft.ifft(padded, axis=1, overwrite_x=True)  # (g, n, S), rows b..b+S kept below
            pooled = _pooled_magnitude(filtered, b, B)
            cells[g.ids] = pooled if g.axis == 0 else pooled.transpose(0, 2, 1)
        return cells


class _Buffers(threading.local):
    """Per thread (a Dask worker may run threads), per Gist object (by ``id``), per filter group: the zero-padded
    complex64 inputs that :meth:`Gist._pooled_energy` reuses."""

    def __init__(self) -> None:
        self.by_gist: dict[int, dict[int, NDArray[np.complex64]]] = {}


_BUFFERS = _Buffers()

#: Filter gains below this (the peak gain is 1) are treated as zero by the pruned filtering: dropping them changes
#: the descriptor by about float32 rounding (relative error under 1e-6 on real photos).
NEGLIGIBLE_GAIN = 1e-6


@dataclass(frozen=True)
class _FilterGroup:
    """Filters of one scale applied along the same axis: ``ids`` in the bank, ``windows`` (g, m) the frequency
    lines (rows when ``axis`` is 0, columns when 1) where they are not negligible, ``gains`` (g, m, n) float32
    their values there."""

    axis: int
    ids: NDArray[np.intp]
    windows: NDArray[np.intp]
    gains: NDArray[np.float32]


def _cyclic_window(mask: NDArray[np.bool_]) -> tuple[int, int]:
    """The shortest cyclic run ``(start, length)`` of indices that covers every True of ``mask``."""
    n = len(mask)
    on = np.flatnonzero(mask)
    if len(on) == 0:
        return 0, 1
    gaps = np.diff(np.append(on, on[0] + n))  # distance from each True to the next, cyclically
    j = int(np.argmax(gaps))
    return int(on[(j + 1) % len(on)]), int(n - gaps[j] + 1)


@njit(cache=True, nogil=True)
def _filtered_band(spectrum, windows, gains):  # pragma: no cover - compiled
    """``spectrum[windows] * gains``: the lines ``windows[k]`` of one (n, n) complex64 spectrum, each multiplied by
    the real gains of filter ``k``, in one pass; shape (g, m, n)."""
    g, m = windows.shape
    n = spectrum.shape[1]
    out = np.empty((g, m, n), dtype=np.complex64)
    for k in range(g):
        for j in range(m):
            line = spectrum[windows[k, j]]
            gain = gains[k, j]
            for x in range(n):
                out[k, j, x] = np.complex64(complex(line[x].real * gain[x], line[x].imag * gain[x]))
    return out


@njit(cache=True, nogil=True)
def _pooled_magnitude(filtered, b, blocks):  # pragma: no cover - compiled
    """Means of ``|filtered[k, b + y, x]|`` over a ``blocks`` × ``blocks`` grid of the S × S crop (S = the last
    axis), in one pass over the complex64 output; shape (g, blocks, blocks).

    Magnitudes are computed in float32 and summed column by column in float64 (element-wise loops, which the
    compiler vectorises without reordering any sum: the bits do not depend on the CPU's vector width), then each
    cell's columns are added in order."""
    g, S = filtered.shape[0], filtered.shape[2]
    c = S // blocks
    out = np.empty((g, blocks, blocks), dtype=np.float32)
    col = np.empty(S, dtype=np.float64)
    for k in range(g):
        for by in range(blocks):
            col[:] = 0.0
            for y in range(by * c, (by + 1) * c):
                row = filtered[k, b + y]
                for x in range(S):
                    re = row[x].real
                    im = row[x].imag
                    col[x] += np.sqrt(re * re + im * im)  # float32, as numpy.abs on complex64
            for bx in range(blocks):
                t = 0.0
                for x in range(bx * c, (bx + 1) * c):
                    t += col[x]
                out[k, by, bx] = t / (c * c)
    return out
