"""Geometric verification of candidate near-duplicate pairs from their stored local features (ORB + RANSAC).

A pair of images is the same picture, edited, when a similarity transform (scale, rotation, translation) maps
enough matched local features of one onto the other, and the pixels then agree: the normalised cross-correlation of
the two band-passed thumbnails over the region where they overlap. The second test is what separates an edited copy
from a different photograph of the same object (UKBench's four views of one CD cover match many features, under a
perspective change that a similarity cannot absorb and with lighting that differs) and from neighbouring tiles of
one photo (no consistent transform at all).

Everything works on the features stored at index time (:mod:`hashdup.descriptors.local`,
:mod:`hashdup.io.featurefile`): no image is decoded. Descriptors are matched on their packed bits
(:func:`hashdup.index.matching.match_binary`, compiled), the similarity is fitted by OpenCV's RANSAC
(``estimateAffinePartial2D``, deterministic) and the thumbnail is warped by ``warpAffine``. The scikit-image
pipeline this replaces stays in ``tests/reference_verify.py`` as the oracle the tests compare verdicts with.

References
----------
E. Rublee, V. Rabaud, K. Konolige and G. Bradski, "ORB: an efficient alternative to SIFT or SURF", ICCV 2011.
M. A. Fischler and R. C. Bolles, "Random sample consensus", Communications of the ACM 24(6), 381–395, 1981.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup.descriptors.local import opencv
from hashdup.extract import default_workers
from hashdup.index import _match_kernels as kernels
from hashdup.index._match_kernels import _photometric_scores, _screen
from hashdup.index.matching import match_binary
from hashdup.io.featurefile import BAND_SCALE, FeatureFile, Features, FeatureTable, LocalFeatures


@dataclass(frozen=True)
class Verdict:
    """The outcome of :meth:`Verifier.compare`: ``same`` and the evidence (inliers of the best transform, the
    correlation of the aligned pixels, their overlap as a fraction of the smaller image, and whether the second image
    was mirrored)."""

    same: bool
    inliers: int = 0
    ncc: float = 0.0
    overlap: float = 0.0
    mirrored: bool = False
    reason: str = ""


def ncc(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Normalised cross-correlation of two equally shaped arrays (0 when either is constant)."""
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-9 else 0.0


def block_agreement(a: NDArray[np.float32], b: NDArray[np.float32], valid: NDArray[np.bool_], block: int,
                    agree: float = 0.7) -> float:
    """A correlation score robust to local edits: the fraction of the textured ``block`` × ``block`` pixel blocks
    inside the overlap whose own correlation reaches ``agree`` (0 with fewer than 8 such blocks)."""
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


def _rescale(sx: float, sy: float) -> NDArray[np.float64]:
    """The map of pixel coordinates (pixel centres at integers) from an image to the same image resized by
    ``sx`` × ``sy``: ``x' = sx (x + 0.5) - 0.5``."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _compose(model: NDArray[np.float64], ax: float, ay: float, bx: float, by: float) -> NDArray[np.float64]:
    """``_rescale(ax, ay) @ model @ _rescale(bx, by)`` (first two rows), in plain arithmetic: called per pair."""
    (m00, m01, m02), (m10, m11, m12) = model[0].tolist(), model[1].tolist()
    # inner: p -> (bx (x + .5) - .5, by (y + .5) - .5); model; outer: q -> (ax (u + .5) - .5, ay (v + .5) - .5)
    tx, ty = 0.5 * bx - 0.5, 0.5 * by - 0.5
    u0, u1, u2 = m00 * bx, m01 * by, m00 * tx + m01 * ty + m02
    v0, v1, v2 = m10 * bx, m11 * by, m10 * tx + m11 * ty + m12
    return np.array([[ax * u0, ax * u1, ax * u2 + 0.5 * ax - 0.5], [ay * v0, ay * v1, ay * v2 + 0.5 * ay - 0.5]])


class Verifier:
    """Decide whether candidate pairs of indexed images are edited copies of one picture, from stored features.

    Parameters
    ----------
    features : sequence of LocalFeatures
        ``features[i]`` is image ``i``'s :class:`~hashdup.io.featurefile.LocalFeatures`: a
        :class:`~hashdup.io.featurefile.FeatureFile` (read in place by :meth:`screen`) or a list.
    frame : int
        Longest side of the frames the keypoints are in (the feature file's ``frame``).
    min_inliers : int, default 8
        RANSAC inliers needed for a transform to be considered; fewer cross-checked matches reject a pair before
        RANSAC runs.
    min_ncc : float, default 0.8
        Correlation of the aligned, band-passed thumbnails needed to call the pair the same picture.
    min_blocks : float, default 0.7
        Otherwise, the fraction of blocks (16 pixels of the frame) of the overlap that must correlate (≥ 0.7) on
        their own: a caption or watermark changes a few blocks and lowers the correlation of the whole.
    min_overlap : float, default 0.85
        Overlap of the aligned images needed, as a fraction of the smaller one's area. An edited copy is the whole
        picture or a part of it (a crop), so one image lies almost entirely inside the other; two shots of one scene
        that only partly overlap (measured: 41–74 % for tiles of two Holidays photos of one view) are not duplicates.
    max_rotation : float, default 20
        Largest rotation, in degrees, of an accepted transform (EXIF orientation is applied when reading, and
        mirroring is tried explicitly).
    max_ratio : float, default 0.85
        Ratio test of the descriptor matching.
    mirror : bool, default True
        Also try the second image mirrored left-right. ORB descriptors are not mirror-symmetric, so a mirrored
        image is compared as the whole frame (mirrored and resized, recompressed, recoloured), not as a crop.
    threads : int, optional
        Threads of :meth:`screen` (default: the CPU cores this process may use); verdicts do not depend on it.
    """

    def __init__(self, features: Features, frame: int, *, min_inliers: int = 8,
                 min_ncc: float = 0.8, min_blocks: float = 0.7, min_overlap: float = 0.85, max_rotation: float = 20.0,
                 max_ratio: float = 0.85, mirror: bool = True, threads: int | None = None) -> None:
        self.features = features
        self.frame = int(frame)
        self.min_inliers = int(min_inliers)
        self.min_ncc = float(min_ncc)
        self.min_blocks = float(min_blocks)
        self.min_overlap = float(min_overlap)
        self.max_rotation = float(max_rotation)
        self.max_ratio = float(max_ratio)
        self.mirror = bool(mirror)
        self.threads = default_workers() if threads is None else max(1, int(threads))

    def settings(self) -> dict[str, Any]:
        """What decides a verdict besides the two images' features (part of the key of stored verdicts)."""
        return {"frame": self.frame, "min_inliers": self.min_inliers, "min_ncc": self.min_ncc,
                "min_blocks": self.min_blocks, "min_overlap": self.min_overlap, "max_rotation": self.max_rotation,
                "max_ratio": self.max_ratio, "mirror": self.mirror, "ransac": RANSAC,
                "gate": [GATE_BITS, GATE_MATCHES], "block_agree": BLOCK_AGREE}

    @classmethod
    def settings_for(cls, frame: int, **params: Any) -> dict[str, Any]:
        """:meth:`settings` of a verifier with these parameters, without opening any features."""
        return cls([], frame, **params).settings()

    def ways(self, mirrored: bool | None) -> tuple[bool, ...]:
        """Which ways round the second image of a pair is compared (see :meth:`verify`), in order."""
        if mirrored is not None:
            return (bool(mirrored) and self.mirror,)
        return (False, True) if self.mirror else (False,)

    def verify(self, i: int, j: int, mirrored: bool | None = None) -> Verdict:
        """Whether indexed images ``i`` and ``j`` are one picture.

        ``mirrored`` says which way round to compare ``j`` (left-right mirrored or not); None tries both when
        mirroring is enabled, the plain one first.
        """
        return self.compare(self.features[i], self.features[j], mirrored)

    def screen(self, pairs: Sequence[tuple[int, int, bool | None]]) -> list[Verdict | None]:
        """:meth:`verify` of many pairs ``(i, j, mirrored)`` at once, as far as it goes without RANSAC or a warp.

        One compiled pass (:func:`hashdup.index._match_kernels._screen`) takes each pair through the steps of
        :meth:`compare` in their order: the whole-frame pixel comparison of two frames of the same shape, then the
        descriptor matches and the gate. It decides the pairs that those steps decide (an acceptance, with the
        verdict :meth:`verify` gives, or a rejection, with the reason of the plain way) and returns None for the
        others (matches through the gate, or frames of the same aspect but another size), which :meth:`verify`
        then decides. A folder without duplicates has almost only pairs of the first kind: their Python work is
        done once per batch instead of once per pair.
        """
        if not pairs:
            return []
        t = self.table
        pi = np.array([i for i, _, _ in pairs], dtype=np.int64)
        pj = np.array([j for _, j, _ in pairs], dtype=np.int64)
        ways = np.array([2 if len(w) == 2 else int(w[0]) for w in (self.ways(m) for _, _, m in pairs)],
                        dtype=np.int64)

        def run(part: slice) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
            return _screen(t.words, t.kp_offsets, t.thumbs, t.thumb_offsets, t.shapes, self._blocks,
                           np.float32(1 / BAND_SCALE), pi[part], pj[part], ways[part], self.min_inliers,
                           self.max_ratio, GATE_BITS, GATE_MATCHES, self.min_ncc, self.min_blocks, BLOCK_AGREE)

        step = -(-len(pairs) // (4 * self.threads))
        parts = [slice(a, a + step) for a in range(0, len(pairs), step)]
        if self.threads == 1 or len(parts) == 1:
            done = [run(part) for part in parts]
        else:
            with ThreadPoolExecutor(self.threads) as pool:  # the kernel releases the GIL
                done = list(pool.map(run, parts))
        outcome = np.concatenate([o for o, _ in done])
        corr = np.concatenate([c for _, c in done])
        return [_SCREENED[o](c) if o else None for o, c in zip(outcome.tolist(), corr.tolist(), strict=True)]

    @cached_property
    def table(self) -> FeatureTable:
        """Every image's features as flat arrays (:class:`~hashdup.io.featurefile.FeatureTable`): views of the memory
        map of a feature file, else copied from the records once."""
        f = self.features
        return f.table() if isinstance(f, FeatureFile) else FeatureTable.of([f[i] for i in range(len(f))])

    @cached_property
    def _blocks(self) -> NDArray[np.int64]:
        """Block size of the pixel comparison when each image is the first of a pair (16 pixels of the frame)."""
        longest = np.maximum(self.table.shapes[:, 2], self.table.shapes[:, 3])
        return np.maximum(4, np.round(16 * longest / self.frame)).astype(np.int64)

    def compare(self, a: LocalFeatures, b: LocalFeatures, mirrored: bool | None = None,
                band_a: NDArray[np.float32] | None = None, band_b: NDArray[np.float32] | None = None) -> Verdict:
        """:meth:`verify` on two images' features (their band-passed thumbnails as float32 unless given)."""
        if band_a is None:
            band_a = a.band()
        if band_b is None:
            band_b = b.band()
        best = Verdict(False, reason="no transform")
        for way in self.ways(mirrored):
            v = self._match(a, b, band_a, band_b[:, ::-1] if way else band_b, way)
            if v.same:
                return v
            if (v.inliers, v.ncc) > (best.inliers, best.ncc):
                best = v
        return best

    def _match(self, a: LocalFeatures, b: LocalFeatures, band_a: NDArray[np.float32], band_b: NDArray[np.float32],
               mirrored: bool) -> Verdict:
        (ha, wa), (hb, wb) = a.frame_shape, b.frame_shape
        if abs(np.log((wa / ha) / (wb / hb))) < 0.03:  # the same frame, resized: no features needed
            s = (wa / wb + ha / hb) / 2
            v = self._photometric(a, b, band_a, band_b, _rescale(s, s), 0, mirrored)
            if v.same:
                return v
        if mirrored:
            return Verdict(False, mirrored=True, reason="mirrored, not the whole frame")
        if len(a.keypoints) < self.min_inliers or len(b.keypoints) < self.min_inliers:
            return Verdict(False, reason="too few keypoints")
        ia, ib, dist = match_binary(np.asarray(a.descriptors), np.asarray(b.descriptors), max_ratio=self.max_ratio,
                                    return_distance=True)
        if len(ia) < self.min_inliers:
            return Verdict(False, inliers=len(ia), reason="too few matches")
        if int((dist <= GATE_BITS).sum()) < GATE_MATCHES:  # the gate: no geometry for pairs without close matches
            return Verdict(False, inliers=len(ia), reason="too few close matches")
        model, n_in = ransac_similarity(b.points()[ib], a.points()[ia])
        if model is None or n_in < self.min_inliers:
            return Verdict(False, inliers=n_in, reason="too few inliers")
        scale, rotation = float(np.hypot(model[0, 0], model[1, 0])), float(np.arctan2(model[1, 0], model[0, 0]))
        if abs(np.degrees(rotation)) > self.max_rotation or not 0.1 < scale < 10:
            return Verdict(False, inliers=n_in, reason="implausible transform")
        return self._photometric(a, b, band_a, band_b, model, n_in, False)

    def _photometric(self, a: LocalFeatures, b: LocalFeatures, band_a: NDArray[np.float32],
                     band_b: NDArray[np.float32], model: NDArray[np.float64], n_in: int, mirrored: bool) -> Verdict:
        """Warp ``b``'s band-passed thumbnail by ``model`` (frame of ``b`` to frame of ``a``) onto ``a``'s and
        compare them over their overlap."""
        cv2 = opencv()
        (tha, twa), (thb, twb) = band_a.shape, band_b.shape
        M = _compose(model, twa / a.frame_shape[1], tha / a.frame_shape[0], b.frame_shape[1] / twb,
                     b.frame_shape[0] / thb)
        warped = cv2.warpAffine(np.ascontiguousarray(band_b), M, (twa, tha), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))
        block = max(4, round(16 * max(tha, twa) / self.frame))
        n_valid, r, blocks = _photometric_scores(band_a, warped, block, BLOCK_AGREE)
        scale2 = abs(M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0])
        overlap = n_valid / max(min(float(tha * twa), thb * twb * scale2), 1.0)
        if overlap < self.min_overlap:
            return Verdict(False, n_in, 0.0, min(overlap, 1.0), mirrored, "too little overlap")
        # a caption or watermark lowers the correlation of the whole: then the blocks decide
        same = r >= self.min_ncc or blocks >= self.min_blocks
        return Verdict(bool(same), n_in, r, min(overlap, 1.0), mirrored, "" if same else "pixels differ")


#: Bumped whenever the verification changes in a way its parameters do not show (a constant, the band-pass, the
#: order of the steps): stored verdicts of an older verification are then not reused.
VERIFY_VERSION = 3  # 3: the band-passed thumbnails are computed at index time and stored as int8
#: The gate before geometry: a pair needs at least GATE_MATCHES matches within GATE_BITS bits (of 256) to reach
#: RANSAC. Calibrated on bench/neardup.py dev: every pair accepted through its features there had 4 or more such
#: matches, and 97 % of the rejected pairs that had enough matches for RANSAC (1,245 of 1,281) had fewer than 2.
GATE_BITS = 48
GATE_MATCHES = 2
#: Correlation a block of the overlap must reach on its own to count as agreeing (see :func:`block_agreement`).
BLOCK_AGREE = 0.7


#: The verdict of each decided outcome of :meth:`Verifier.screen`, from the correlation of the accepting comparison.
_SCREENED: dict[int, Callable[[float], Verdict]] = {
    kernels.SAME_PLAIN: lambda r: Verdict(True, 0, r, 1.0, False, ""),
    kernels.SAME_MIRRORED: lambda r: Verdict(True, 0, r, 1.0, True, ""),
    kernels.FEW_KEYPOINTS: lambda r: Verdict(False, reason="too few keypoints"),
    kernels.FEW_MATCHES: lambda r: Verdict(False, reason="too few matches"),
    kernels.FEW_CLOSE: lambda r: Verdict(False, reason="too few close matches"),
    kernels.MIRRORED_NOT_WHOLE: lambda r: Verdict(False, mirrored=True, reason="mirrored, not the whole frame"),
    kernels.PIXELS_DIFFER: lambda r: Verdict(False, reason="pixels differ"),
}


#: RANSAC settings of :func:`ransac_similarity` (part of :meth:`Verifier.settings`).
RANSAC = {"threshold": 2.5, "max_iters": 300, "confidence": 0.99, "refine_iters": 10}


def ransac_similarity(src: NDArray[np.float32], dst: NDArray[np.float32]) -> tuple[NDArray[np.float64] | None, int]:
    """The similarity transform (3 × 3, homogeneous) that maps most of ``src`` onto ``dst`` within
    ``RANSAC["threshold"]`` pixels, and its number of inliers; ``(None, 0)`` when none is found.

    OpenCV's ``estimateAffinePartial2D`` (4 degrees of freedom: scale, rotation, translation) with RANSAC, seeded
    the same way on every call, then refined on the inliers (Levenberg–Marquardt).
    """
    cv2 = opencv()
    M, inliers = cv2.estimateAffinePartial2D(
        np.ascontiguousarray(src, dtype=np.float32), np.ascontiguousarray(dst, dtype=np.float32), method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC["threshold"], maxIters=RANSAC["max_iters"], confidence=RANSAC["confidence"],
        refineIters=RANSAC["refine_iters"])
    if M is None or inliers is None:
        return None, 0
    return np.vstack([M, [0.0, 0.0, 1.0]]), int(inliers.sum())
