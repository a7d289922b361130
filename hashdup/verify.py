"""Geometric verification of candidate near-duplicate pairs with local features (ORB + RANSAC).

A pair of images is the same picture, edited, when a similarity transform (scale, rotation, translation) maps
enough matched local features of one onto the other, and the pixels then agree: the normalised cross-correlation of
the two images, smoothed, over the region where they overlap. The second test is what separates an edited copy from a
different photograph of the same object (UKBench's four views of one CD cover match many features, under a
perspective change that a similarity cannot absorb and with lighting that differs) and from neighbouring tiles of
one photo (no consistent transform at all).

References
----------
E. Rublee, V. Rabaud, K. Konolige and G. Bradski, "ORB: an efficient alternative to SIFT or SURF", ICCV 2011.
M. A. Fischler and R. C. Bolles, "Random sample consensus", Communications of the ACM 24(6), 381–395, 1981.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hashdup.errors import ImageError
from hashdup.io import thumbnails


@dataclass(frozen=True)
class Features:
    """An image prepared for verification: smoothed greyscale pixels and ORB keypoints ((x, y), in pixels) with
    their 256-bit binary descriptors, packed 8 bits a byte (``numpy.packbits``)."""

    gray: NDArray[np.float32]
    keypoints: NDArray[np.float64]
    descriptors: NDArray[np.uint8]


@dataclass(frozen=True)
class Verdict:
    """The outcome of :meth:`Verifier.verify`: ``same`` and the evidence (inliers of the best transform, the
    correlation of the aligned pixels, their overlap as a fraction of the smaller image, and whether the second image
    was mirrored)."""

    same: bool
    inliers: int = 0
    ncc: float = 0.0
    overlap: float = 0.0
    mirrored: bool = False
    reason: str = ""


def _ncc(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-9 else 0.0


def _block_agreement(a: NDArray[np.float32], b: NDArray[np.float32], valid: NDArray[np.bool_], block: int = 16,
                     agree: float = 0.7) -> float:
    """A correlation score robust to local edits: the fraction of the textured ``block`` × ``block`` pixel blocks
    inside the overlap whose own correlation reaches ``agree``."""
    h, w = (a.shape[0] // block) * block, (a.shape[1] // block) * block
    if h == 0 or w == 0:
        return 0.0
    def tiles(x: NDArray) -> NDArray:
        return x[:h, :w].reshape(h // block, block, w // block, block).swapaxes(1, 2).reshape(-1, block * block)
    ta, tb, tv = tiles(a), tiles(np.where(valid, b, 0.0)), tiles(valid)
    full = tv.all(axis=1)
    ta, tb = ta[full] - ta[full].mean(axis=1, keepdims=True), tb[full] - tb[full].mean(axis=1, keepdims=True)
    sa, sb = np.sqrt((ta * ta).sum(axis=1)), np.sqrt((tb * tb).sum(axis=1))
    textured = (sa > 0.1 * block) & (sb > 0.1 * block)  # flat blocks (clear sky, walls) say nothing
    if textured.sum() < 8:
        return 0.0
    r = (ta[textured] * tb[textured]).sum(axis=1) / (sa[textured] * sb[textured])
    return float(np.mean(r >= agree))


class Verifier:
    """Decide whether candidate pairs of image files are edited copies of one picture.

    Parameters
    ----------
    max_side : int, default 256
        Images are compared with their longest side scaled to this many pixels.
    n_keypoints : int, default 800
        ORB keypoints per image.
    min_inliers : int, default 8
        RANSAC inliers needed for a transform to be considered.
    min_ncc : float, default 0.8
        Correlation of the aligned, smoothed pixels needed to call the pair the same picture.
    min_blocks : float, default 0.7
        Otherwise, the fraction of 16-pixel blocks of the overlap that must correlate (≥ 0.7) on their own: a
        caption or watermark changes a few blocks and lowers the correlation of the whole.
    min_overlap : float, default 0.85
        Overlap of the aligned images needed, as a fraction of the smaller one's area. An edited copy is the whole
        picture or a part of it (a crop), so one image lies almost entirely inside the other; two shots of one scene
        that only partly overlap (measured: 41–74 % for tiles of two Holidays photos of one view) are not duplicates.
    max_rotation : float, default 20
        Largest rotation, in degrees, of an accepted transform (EXIF orientation is applied when reading, and
        mirroring is tried explicitly).
    mirror : bool, default True
        Also try the second image mirrored left-right.
    random_state : int, default 0
        Seed of RANSAC.
    cache_size : int, default 1024
        Prepared images kept in memory (up to about 0.3 MB each).
    """

    def __init__(self, *, max_side: int = 256, n_keypoints: int = 800, min_inliers: int = 8, min_ncc: float = 0.8,
                 min_blocks: float = 0.7, min_overlap: float = 0.85, max_rotation: float = 20.0, mirror: bool = True,
                 random_state: int = 0, cache_size: int = 1024) -> None:
        self.max_side = int(max_side)
        self.n_keypoints = int(n_keypoints)
        self.min_inliers = int(min_inliers)
        self.min_ncc = float(min_ncc)
        self.min_blocks = float(min_blocks)
        self.min_overlap = float(min_overlap)
        self.max_rotation = float(max_rotation)
        self.mirror = bool(mirror)
        self.random_state = int(random_state)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[str, bool], Features | None] = OrderedDict()

    def get_params(self) -> dict[str, object]:
        """The keyword arguments that rebuild this verifier (how worker processes make theirs)."""
        return {"max_side": self.max_side, "n_keypoints": self.n_keypoints, "min_inliers": self.min_inliers,
                "min_ncc": self.min_ncc, "min_blocks": self.min_blocks, "min_overlap": self.min_overlap,
                "max_rotation": self.max_rotation, "mirror": self.mirror, "random_state": self.random_state,
                "cache_size": self.cache_size}

    # --- preparation ---------------------------------------------------------------------------------------------
    def features(self, path: str, mirrored: bool = False) -> Features | None:
        """The prepared image (None when the file cannot be read or has no texture to match), cached."""
        key = (path, mirrored)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        feats = self.compute_features(path, mirrored)
        self.remember(key, feats)
        return feats

    def cached(self, path: str, mirrored: bool = False) -> bool:
        """Whether :meth:`features` of this image is in the cache."""
        return (path, mirrored) in self._cache

    def remember(self, key: tuple[str, bool], feats: Features | None) -> None:
        """Put features computed elsewhere (a worker process) in the cache, under ``(path, mirrored)``."""
        self._cache[key] = feats
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def compute_features(self, path: str, mirrored: bool = False) -> Features | None:
        """:meth:`features` without the cache."""
        try:
            gray = thumbnails.load_gray(path, self.max_side)
        except ImageError:
            return None
        if mirrored:
            gray = np.ascontiguousarray(gray[:, ::-1])
        return self._prepare(gray)

    def ways(self, mirrored: bool | None) -> tuple[bool, ...]:
        """Which ways round the second image of a pair is compared (see :meth:`verify`), in order."""
        if mirrored is not None:
            return (bool(mirrored) and self.mirror,)
        return (False, True) if self.mirror else (False,)

    def _prepare(self, gray: NDArray[np.float32]) -> Features:
        from scipy.ndimage import gaussian_filter
        from skimage.feature import ORB

        lo, hi = np.percentile(gray, [1, 99])  # stretched: hazy and dark photos get keypoints too
        gray = np.clip((gray - lo) / max(float(hi - lo), 1e-3), 0.0, 1.0).astype(np.float32)
        kp = np.zeros((0, 2))
        desc = np.zeros((0, 32), dtype=np.uint8)
        if min(gray.shape) >= 48 and float(hi - lo) > 1e-2:
            # keypoints on a locally normalised image: a caption's hard corners do not crowd out the texture of a
            # hazy or dark picture
            local = gray - gaussian_filter(gray, 8.0)
            local = local / (np.sqrt(gaussian_filter(local * local, 8.0)) + 0.02)
            local = np.clip(0.5 + local / 6.0, 0.0, 1.0).astype(np.float32)
            orb = ORB(n_keypoints=self.n_keypoints, fast_threshold=0.08)
            try:
                orb.detect_and_extract(local)
                kp = orb.keypoints[:, ::-1].astype(np.float64)
                desc = np.packbits(orb.descriptors.astype(bool), axis=1)
            except (RuntimeError, ValueError):  # no keypoints on a flat image
                pass
        # band-pass (difference of Gaussians) with local contrast normalisation: what is compared is structure, not
        # the smooth light gradients that make neighbouring tiles of one sky or one lawn correlate, and a caption's
        # hard edges weigh no more than any other local detail
        band = gaussian_filter(gray, 1.5) - gaussian_filter(gray, 8.0)
        band = band / (np.sqrt(gaussian_filter(band * band, 8.0)) + 0.01)
        return Features(band.astype(np.float32), kp, desc)

    # --- decision ------------------------------------------------------------------------------------------------
    def verify(self, path_a: str, path_b: str, mirrored: bool | None = None) -> Verdict:
        """Whether the images at ``path_a`` and ``path_b`` are one picture.

        ``mirrored`` says which way round to compare ``path_b`` (left-right mirrored or not); None tries both when
        mirroring is enabled, the plain one first.
        """
        return self.compare(self.features(path_a), lambda way: self.features(path_b, way), mirrored)

    def compare(self, a: Features | None, b: Callable[[bool], Features | None], mirrored: bool | None = None
                ) -> Verdict:
        """:meth:`verify` on prepared images: ``a`` and ``b(way)``, the second image plain (``way`` False) or
        mirrored (True), asked for in the order of :meth:`ways`."""
        if a is None:
            return Verdict(False, reason="unreadable")
        best = Verdict(False, reason="no transform")
        for way in self.ways(mirrored):
            fb = b(way)
            if fb is None:
                return Verdict(False, reason="unreadable")
            v = self._match(a, fb, way)
            if v.same:
                return v
            if (v.inliers, v.ncc) > (best.inliers, best.ncc):
                best = v
        return best

    def _match(self, a: Features, b: Features, mirrored: bool) -> Verdict:
        from skimage.transform import SimilarityTransform

        ha, wa = a.gray.shape
        hb, wb = b.gray.shape
        # the same frame, resized: no features needed
        if abs(np.log((wa / ha) / (wb / hb))) < 0.03:
            scale = SimilarityTransform(scale=(wa / wb + ha / hb) / 2)
            v = self._photometric(a, b, scale, 0, mirrored)
            if v.same:
                return v
        if len(a.keypoints) < self.min_inliers or len(b.keypoints) < self.min_inliers:
            return Verdict(False, mirrored=mirrored, reason="too few keypoints")
        from skimage.feature import match_descriptors
        from skimage.measure import ransac

        bits_a, bits_b = (np.unpackbits(x.descriptors, axis=1).astype(bool) for x in (a, b))
        m = match_descriptors(bits_a, bits_b, cross_check=True, max_ratio=0.85)
        if len(m) < self.min_inliers:
            return Verdict(False, inliers=len(m), mirrored=mirrored, reason="too few matches")
        src, dst = b.keypoints[m[:, 1]], a.keypoints[m[:, 0]]
        model, inliers = ransac((src, dst), SimilarityTransform, min_samples=2, residual_threshold=2.5,
                                max_trials=300, rng=self.random_state)
        n_in = int(inliers.sum()) if inliers is not None else 0
        if model is None or n_in < self.min_inliers:
            return Verdict(False, inliers=n_in, mirrored=mirrored, reason="too few inliers")
        if abs(np.degrees(model.rotation)) > self.max_rotation or not 0.1 < model.scale < 10:
            return Verdict(False, inliers=n_in, mirrored=mirrored, reason="implausible transform")
        return self._photometric(a, b, model, n_in, mirrored)

    def _photometric(self, a: Features, b: Features, model, n_in: int, mirrored: bool) -> Verdict:  # noqa: ANN001
        from skimage.transform import warp

        warped = warp(b.gray, model.inverse, output_shape=a.gray.shape, order=1, cval=np.nan, preserve_range=True)
        valid = np.isfinite(warped)
        smaller = min(a.gray.size, b.gray.size * float(model.scale) ** 2)
        overlap = float(valid.sum()) / max(smaller, 1.0)
        if overlap < self.min_overlap:
            return Verdict(False, n_in, 0.0, overlap, mirrored, "too little overlap")
        ncc = _ncc(a.gray[valid], warped[valid].astype(np.float32))
        same = ncc >= self.min_ncc
        if not same:  # a caption or watermark lowers the correlation of the whole: look block by block
            same = _block_agreement(a.gray, warped.astype(np.float32), valid) >= self.min_blocks
        return Verdict(same, n_in, ncc, min(overlap, 1.0), mirrored, "" if same else "pixels differ")
