"""PCA projections thresholded at their medians: the lecture's simple binarisation."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hashdup.encoders.base import BaseEncoder, Pairs, RandomState, StepProgress, project
from hashdup.encoders.pca import pca


class MedianPCA(BaseEncoder):
    """Project on the top ``n_bits`` principal components and threshold each projection at its training median.

    Each bit splits the training set in half (a balanced bit), and the bits follow the directions of largest
    variance. Needs ``n_bits ≤ n_features`` and at least ``n_bits + 1`` training samples (otherwise some components
    carry no variance and their bits would be noise).

    Parameters
    ----------
    n_bits : int, default 64
    random_state : int, numpy Generator or None, default None
        Unused (the method is deterministic); accepted for a uniform interface.

    Attributes
    ----------
    mean_ : ndarray of float64, shape (n_features,)
    components_ : ndarray of float64, shape (n_features, n_bits)
    thresholds_ : ndarray of float64, shape (n_bits,)
        Median of each projection on the training set.
    n_features_in_ : int

    References
    ----------
    The "simple binarization" baseline of the lecture "Hashing Representation Learning"; see also A. Torralba,
    R. Fergus and Y. Weiss, "Small codes and large image databases for recognition", CVPR 2008, and Y. Weiss,
    A. Torralba and R. Fergus, "Spectral hashing", NIPS 2008 (PCA-direction baselines).
    """

    name = "median"
    bits_within_features = True
    _fitted = ("mean_", "components_", "thresholds_")

    def __init__(self, *, n_bits: int = 64, random_state: RandomState = None) -> None:
        self.n_bits = n_bits
        self.random_state = random_state

    def _fit(self, X: NDArray[np.float64], rng: np.random.Generator, *, y: NDArray[np.integer] | None,
             pairs: Pairs | None, progress: StepProgress) -> None:
        n, d = X.shape
        if self.n_bits > d:
            raise ValueError(f"median needs n_bits ≤ n_features, got n_bits={self.n_bits} for {d} features")
        if n < self.n_bits + 1:
            raise ValueError(
                f"median needs at least n_bits + 1 = {self.n_bits + 1} training samples, got {n}; "
                "use fewer bits or the lsh encoder"
            )
        self.mean_, self.components_, _ = pca(X, self.n_bits)
        self.thresholds_ = np.median(project(X - self.mean_, self.components_), axis=0)

    def _bits(self, X: NDArray[np.float64]) -> NDArray[np.bool_]:
        return project(X - self.mean_, self.components_) > self.thresholds_
