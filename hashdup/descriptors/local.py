"""Local features for verifying near-duplicates: ORB keypoints with packed binary descriptors, and a small
band-passed greyscale thumbnail for the photometric check.

They are computed once, when an image is indexed (:class:`LocalExtractor`, from the upright greyscale *frame* the
image reader gives: the whole picture, aspect ratio kept, longest side :attr:`LocalExtractor.frame` pixels), stored
in the index (:mod:`hashdup.io.featurefile`), and compared pair by pair by :mod:`hashdup.dedup.verify` without decoding
any image again.

References
----------
E. Rublee, V. Rabaud, K. Konolige and G. Bradski, "ORB: an efficient alternative to SIFT or SURF", ICCV 2011.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup.io.featurefile import BAND_SCALE, COORD_SCALE, DESCRIPTOR_BYTES, LocalFeatures


def stretch(gray: NDArray[np.uint8]) -> tuple[NDArray[np.float32], float]:
    """Greyscale stretched so that its 1st and 99th percentiles become 0 and 1 (clipped), and the spread of those
    percentiles in 0..1 (near 0 for a flat image): hazy and dark photos are compared like the others."""
    hist = np.bincount(gray.reshape(-1), minlength=256)
    cdf = np.cumsum(hist) / max(gray.size, 1)
    lo = float(np.searchsorted(cdf, 0.01))
    hi = float(np.searchsorted(cdf, 0.99))
    spread = max(hi - lo, 1e-3 * 255)
    out = np.clip((gray.astype(np.float32) - np.float32(lo)) / np.float32(spread), 0.0, 1.0)
    return out, (hi - lo) / 255.0


def opencv() -> Any:
    """The ``cv2`` module, imported on first use and limited to one thread: every image hashdup gives it is small
    (a 256-pixel frame, a thumbnail), where OpenCV's thread pool costs more than it saves (measured: a dedup on
    1,508 images took 8.3 s of wall time with it, 5.6 s without), and hashdup parallelises across images itself."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    return cv2


def smooth(x: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """A Gaussian blur of ``sigma`` pixels; a wide one (σ ≥ 4) is computed on the image shrunk 4 times (area
    average) and enlarged back (bilinear), about ten times faster and within a few per cent of the exact blur where
    it is used: the local mean and contrast that normalise keypoint detection."""
    cv2 = opencv()
    h, w = x.shape
    if sigma < 4 or min(h, w) < 32:
        return cv2.GaussianBlur(x, (0, 0), sigma)
    small = cv2.resize(x, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / 4)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def band_pass(thumb: NDArray[np.uint8], frame: int) -> NDArray[np.float32]:
    """The thumbnail compared by the photometric check: a difference of Gaussians (1.5 and 8 pixels of a
    ``frame``-pixel frame) with local contrast normalisation, so that what is compared is structure, not the smooth
    light gradients that make neighbouring tiles of one sky or one lawn correlate, and a caption's hard edges weigh
    no more than any other local detail. Computed once per image, at index time, and stored quantised
    (:func:`quantise_band`)."""
    cv2 = opencv()
    s = max(thumb.shape) / frame
    g = thumb.astype(np.float32) / np.float32(255)
    band = cv2.GaussianBlur(g, (0, 0), max(1.5 * s, 0.5)) - cv2.GaussianBlur(g, (0, 0), 8.0 * s)
    band /= np.sqrt(cv2.GaussianBlur(band * band, (0, 0), 8.0 * s)) + np.float32(0.01)
    return band


def quantise_band(band: NDArray[np.float32]) -> NDArray[np.int8]:
    """``band`` in steps of 1/:data:`~hashdup.io.featurefile.BAND_SCALE`, clipped to int8 (the stored form)."""
    return np.clip(np.rint(band * np.float32(BAND_SCALE)), -127, 127).astype(np.int8)


class LocalExtractor:
    """Compute :class:`LocalFeatures` of upright greyscale frames.

    Keypoints are ORB's (oriented FAST corners ranked by the Harris measure, over a scale pyramid, with rotated
    BRIEF descriptors), found on a locally contrast-normalised copy of the frame so that a caption's hard corners
    do not crowd out the texture of a hazy or dark picture.

    Parameters
    ----------
    frame : int, default 192
        Longest side, in pixels, of the frames :meth:`describe` takes (the reader resizes to it, enlarging small
        images, so that every pair is compared at the same scale).
    n_keypoints : int, default 224
        Most keypoints kept per image (the strongest).
    thumb_pixels : int, default 8192
        Most pixels of the stored thumbnail (for 4:3 pictures 104 × 78), stored band-passed (:func:`band_pass`,
        one byte a pixel).
    fast_threshold : int, default 20
        FAST corner threshold on the normalised 8-bit image.
    patch_size : int, default 31
        Side of ORB's descriptor patch at each pyramid level, in pixels.

    Notes
    -----
    At the defaults a record holds at most 224 × 36 + 8192 = 16,256 bytes (keypoint coordinates 4 bytes and a
    descriptor 32 bytes each, plus the thumbnail).
    """

    def __init__(self, *, frame: int = 192, n_keypoints: int = 224, thumb_pixels: int = 8192,
                 fast_threshold: int = 20, patch_size: int = 31) -> None:
        self.frame = int(frame)
        self.n_keypoints = int(n_keypoints)
        self.thumb_pixels = int(thumb_pixels)
        self.fast_threshold = int(fast_threshold)
        self.patch_size = int(patch_size)
        if not 32 <= self.frame <= 1023:
            raise ValueError(f"frame must be in 32..1023 pixels, got {frame}")
        if not 0 <= self.n_keypoints <= 65535:
            raise ValueError(f"n_keypoints must be in 0..65535, got {n_keypoints}")
        if self.thumb_pixels < 64:
            raise ValueError(f"thumb_pixels must be ≥ 64, got {thumb_pixels}")
        self._orb = threading.local()

    def get_params(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this extractor."""
        return {"frame": self.frame, "n_keypoints": self.n_keypoints, "thumb_pixels": self.thumb_pixels,
                "fast_threshold": self.fast_threshold, "patch_size": self.patch_size}

    @property
    def max_record_bytes(self) -> int:
        """The largest :attr:`LocalFeatures.nbytes` this extractor gives."""
        return self.n_keypoints * (4 + DESCRIPTOR_BYTES) + self.thumb_pixels

    def frame_shape(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of the frame of a ``width`` × ``height`` image: longest side :attr:`frame`."""
        s = self.frame / max(width, height, 1)
        return max(1, round(height * s)), max(1, round(width * s))

    def describe(self, gray: NDArray[np.uint8]) -> LocalFeatures:
        """The local features of one frame.

        Parameters
        ----------
        gray : ndarray of uint8, shape (h, w)
            Upright greyscale frame, longest side :attr:`frame`.

        Returns
        -------
        LocalFeatures
        """
        cv2 = opencv()
        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        if gray.ndim != 2 or max(gray.shape) != self.frame:
            raise ValueError(f"frame must be 2-D with longest side {self.frame}, got shape {gray.shape}")
        h, w = gray.shape
        stretched, spread = stretch(gray)
        kp = np.zeros((0, 2), dtype=np.uint16)
        desc = np.zeros((0, DESCRIPTOR_BYTES), dtype=np.uint8)
        if min(h, w) >= 48 and spread > 1e-2 and self.n_keypoints:
            sigma = 8.0 * self.frame / 256
            local = stretched - smooth(stretched, sigma)
            local /= np.sqrt(smooth(local * local, sigma)) + np.float32(0.02)
            img8 = np.clip(128.0 + local * (255.0 / 6.0), 0, 255).astype(np.uint8)
            found, d = self._detector().detectAndCompute(img8, None)
            if d is not None and len(found):
                # OpenCV keeps every keypoint tied at its cut-off (a repeated texture gave 388 for 224): the
                # strongest n_keypoints, ties in detection order
                order = np.argsort([-k.response for k in found], kind="stable")[: self.n_keypoints]
                pts = np.array([found[k].pt for k in order], dtype=np.float64).reshape(-1, 2)
                kp = np.clip(np.rint(pts * COORD_SCALE), 0, 65535).astype(np.uint16)
                desc = np.ascontiguousarray(d[order], dtype=np.uint8)
        s = min(1.0, float(np.sqrt(self.thumb_pixels / (h * w))))
        tw, th = max(1, int(w * s)), max(1, int(h * s))
        thumb8 = np.rint(stretched * 255).astype(np.uint8)
        thumb = thumb8 if (th, tw) == (h, w) else cv2.resize(thumb8, (tw, th), interpolation=cv2.INTER_AREA)
        return LocalFeatures((h, w), kp, desc, quantise_band(band_pass(thumb, self.frame)))

    def _detector(self) -> Any:
        """This thread's ORB detector (OpenCV's are not documented as thread-safe; threaded Dask workers share the
        extractor)."""
        if getattr(self._orb, "detector", None) is None:
            cv2 = opencv()
            self._orb.detector = cv2.ORB_create(nfeatures=self.n_keypoints, scaleFactor=1.2, nlevels=8,
                                       edgeThreshold=self.patch_size, patchSize=self.patch_size,
                                       fastThreshold=self.fast_threshold)
        return self._orb.detector


__all__ = ["BAND_SCALE", "COORD_SCALE", "DESCRIPTOR_BYTES", "LocalExtractor", "LocalFeatures", "band_pass", "opencv",
           "quantise_band", "smooth", "stretch"]
