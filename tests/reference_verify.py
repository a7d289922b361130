"""The slow reference verification: the scikit-image pipeline hashdup used before its compiled path, run on the same
stored local features (whose band-passed thumbnails were computed at index time; :func:`band_pass` is the reference
for that filter), as the oracle that :mod:`hashdup.dedup.verify` is compared with (tests/test_verify_reference.py).

Descriptors are unpacked to booleans and matched by ``skimage.feature.match_descriptors`` (Hamming metric, cross
check, ratio test), the similarity is fitted by ``skimage.measure.ransac`` with ``SimilarityTransform``, the
band-passed thumbnail is warped by ``skimage.transform.warp`` (bilinear, NaN outside), and the correlation and the
block agreement are computed with numpy over the overlap.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from hashdup.dedup.verify import BLOCK_AGREE, GATE_BITS, GATE_MATCHES, RANSAC, Verdict, block_agreement, ncc
from hashdup.io.featurefile import LocalFeatures


def band_pass(thumb: np.ndarray, frame: int) -> np.ndarray:
    """:func:`hashdup.descriptors.local.band_pass` (computed at index time) with scipy's Gaussian filter."""
    s = max(thumb.shape) / frame
    g = thumb.astype(np.float64) / 255
    band = gaussian_filter(g, max(1.5 * s, 0.5)) - gaussian_filter(g, 8.0 * s)
    return (band / (np.sqrt(gaussian_filter(band * band, 8.0 * s)) + 0.01)).astype(np.float32)


def _rescale(sx: float, sy: float) -> np.ndarray:
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


class ReferenceVerifier:
    """:class:`hashdup.dedup.verify.Verifier`'s decision, step by step with scikit-image (default parameters)."""

    def __init__(self, frame: int, *, min_inliers: int = 8, min_ncc: float = 0.8, min_blocks: float = 0.7,
                 min_overlap: float = 0.85, max_rotation: float = 20.0, max_ratio: float = 0.85,
                 mirror: bool = True, random_state: int = 0) -> None:
        self.frame, self.min_inliers, self.min_ncc, self.min_blocks = frame, min_inliers, min_ncc, min_blocks
        self.min_overlap, self.max_rotation, self.max_ratio = min_overlap, max_rotation, max_ratio
        self.mirror, self.random_state = mirror, random_state

    def compare(self, a: LocalFeatures, b: LocalFeatures, mirrored: bool | None = None) -> Verdict:
        ways = ((bool(mirrored) and self.mirror,) if mirrored is not None else
                ((False, True) if self.mirror else (False,)))
        band_a, band_b = a.band(), b.band()  # stored band-passed at index time
        best = Verdict(False, reason="no transform")
        for way in ways:
            v = self._match(a, b, band_a, band_b[:, ::-1] if way else band_b, way)
            if v.same:
                return v
            if (v.inliers, v.ncc) > (best.inliers, best.ncc):
                best = v
        return best

    def _match(self, a, b, band_a, band_b, mirrored):
        from skimage.feature import match_descriptors
        from skimage.measure import ransac
        from skimage.transform import SimilarityTransform

        (ha, wa), (hb, wb) = a.frame_shape, b.frame_shape
        if abs(np.log((wa / ha) / (wb / hb))) < 0.03:
            s = (wa / wb + ha / hb) / 2
            v = self._photometric(a, b, band_a, band_b, _rescale(s, s), 0, mirrored)
            if v.same:
                return v
        if mirrored:
            return Verdict(False, mirrored=True, reason="mirrored, not the whole frame")
        if len(a.keypoints) < self.min_inliers or len(b.keypoints) < self.min_inliers:
            return Verdict(False, reason="too few keypoints")
        bits_a, bits_b = (np.unpackbits(np.asarray(x.descriptors), axis=1).astype(bool) for x in (a, b))
        m = match_descriptors(bits_a, bits_b, cross_check=True, max_ratio=self.max_ratio)
        if len(m) < self.min_inliers:
            return Verdict(False, inliers=len(m), reason="too few matches")
        dist = (bits_a[m[:, 0]] != bits_b[m[:, 1]]).sum(axis=1)
        if (dist <= GATE_BITS).sum() < GATE_MATCHES:
            return Verdict(False, inliers=len(m), reason="too few close matches")
        src, dst = b.points()[m[:, 1]].astype(np.float64), a.points()[m[:, 0]].astype(np.float64)
        model, inliers = ransac((src, dst), SimilarityTransform, min_samples=2,
                                residual_threshold=RANSAC["threshold"], max_trials=RANSAC["max_iters"],
                                rng=self.random_state)
        n_in = int(inliers.sum()) if inliers is not None else 0
        if model is None or n_in < self.min_inliers:
            return Verdict(False, inliers=n_in, reason="too few inliers")
        if abs(np.degrees(model.rotation)) > self.max_rotation or not 0.1 < model.scale < 10:
            return Verdict(False, inliers=n_in, reason="implausible transform")
        return self._photometric(a, b, band_a, band_b, model.params, n_in, False)

    def _photometric(self, a, b, band_a, band_b, model, n_in, mirrored):
        from skimage.transform import AffineTransform, warp

        (tha, twa), (thb, twb) = band_a.shape, band_b.shape
        M = _rescale(twa / a.frame_shape[1], tha / a.frame_shape[0]) @ model @ _rescale(b.frame_shape[1] / twb,
                                                                                       b.frame_shape[0] / thb)
        warped = warp(band_b.astype(np.float64), AffineTransform(matrix=M).inverse, output_shape=band_a.shape,
                      order=1, cval=np.nan, preserve_range=True)
        valid = np.isfinite(warped)
        overlap = float(valid.sum()) / max(min(float(tha * twa), thb * twb * abs(np.linalg.det(M[:2, :2]))), 1.0)
        if overlap < self.min_overlap:
            return Verdict(False, n_in, 0.0, min(overlap, 1.0), mirrored, "too little overlap")
        r = ncc(band_a[valid], warped[valid].astype(np.float32))
        block = max(4, round(16 * max(tha, twa) / self.frame))
        same = r >= self.min_ncc or block_agreement(band_a, np.where(valid, warped, 0).astype(np.float32), valid,
                                                    block, BLOCK_AGREE) >= self.min_blocks
        return Verdict(bool(same), n_in, r, min(overlap, 1.0), mirrored, "" if same else "pixels differ")
