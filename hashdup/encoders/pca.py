"""PCA hashing: the sign of centred principal-component projections, and the PCA helper other encoders share."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hashdup.encoders.base import BaseEncoder, Pairs, RandomState, StepProgress, project


def pca(X: NDArray[np.float64], n_components: int) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                               NDArray[np.float64]]:
    """Principal components of ``X`` with deterministic signs.

    Returns the mean (d,), the components as columns (d, n_components) in decreasing order of variance, and the
    variances. Each component's sign is chosen so that its entry of largest magnitude is positive.
    """
    mean = X.mean(axis=0)
    Xc = X - mean
    cov = Xc.T @ Xc / max(X.shape[0] - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:n_components]
    values, vectors = values[order], vectors[:, order]
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])])
    return mean, vectors * np.where(signs == 0, 1.0, signs), np.clip(values, 0.0, None)


class PCAHash(BaseEncoder):
    """Bit ``b`` is the sign of the projection of the centred descriptor on the ``b``-th principal component.

    The baseline of the learning-to-hash literature ("PCA-direct" / PCAH): the top ``n_bits`` directions of
    variance, thresholded at zero (the training mean). Needs ``n_bits ≤ n_features`` and more training samples
    than bits.

    Parameters
    ----------
    n_bits : int, default 64
    random_state : int, numpy Generator or None, default None
        Unused (PCA is deterministic); accepted for a uniform interface.

    Attributes
    ----------
    mean_ : ndarray of float64, shape (n_features,)
    components_ : ndarray of float64, shape (n_features, n_bits)
        Principal directions as columns, by decreasing variance, signs fixed (largest entry positive).
    n_features_in_ : int

    References
    ----------
    Y. Gong and S. Lazebnik, "Iterative quantization: a Procrustean approach to learning binary codes", CVPR 2011
    (the PCA-Direct baseline); J. Wang, S. Kumar and S.-F. Chang, "Semi-supervised hashing for scalable image
    retrieval", CVPR 2010.
    """

    name = "pca"
    bits_within_features = True
    _fitted = ("mean_", "components_")

    def __init__(self, *, n_bits: int = 64, random_state: RandomState = None) -> None:
        self.n_bits = n_bits
        self.random_state = random_state

    def _fit(self, X: NDArray[np.float64], rng: np.random.Generator, *, y: NDArray[np.integer] | None,
             pairs: Pairs | None, progress: StepProgress) -> None:
        if self.n_bits > X.shape[1]:
            raise ValueError(f"pca needs n_bits ≤ n_features, got n_bits={self.n_bits} for {X.shape[1]} features")
        if X.shape[0] < self.n_bits + 1:
            raise ValueError(f"pca needs at least n_bits + 1 = {self.n_bits + 1} training samples, got {X.shape[0]}: "
                             "components beyond the data's rank have no variance and their signs would be noise; "
                             "use fewer bits or the lsh encoder")
        self.mean_, self.components_, _ = pca(X, self.n_bits)

    def _bits(self, X: NDArray[np.float64]) -> NDArray[np.bool_]:
        return project(X - self.mean_, self.components_) >= 0
