"""Random-hyperplane LSH (Charikar 2002)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hashdup.encoders.base import BaseEncoder, Pairs, RandomState, StepProgress, project


class LSH(BaseEncoder):
    """Random-hyperplane locality-sensitive hashing for the angle between centred vectors.

    Bit ``b`` of the code of ``x`` is ``[r_bᵀ (x − μ) ≥ 0]`` where ``μ`` is the training mean and the hyperplane
    normals ``r_b ~ N(0, I)`` are drawn independently. For two vectors at angle ``θ`` (after centring), each bit
    agrees with probability ``1 − θ/π``, so the expected Hamming distance is ``n_bits · θ/π``.

    Parameters
    ----------
    n_bits : int, default 64
        Code length, 8 to 1024.
    random_state : int, numpy Generator or None, default None
        Seed of the hyperplanes; the same seed gives byte-identical codes.

    Attributes
    ----------
    mean_ : ndarray of float64, shape (n_features,)
    planes_ : ndarray of float64, shape (n_features, n_bits)
    n_features_in_ : int

    References
    ----------
    M. S. Charikar, "Similarity estimation techniques from rounding algorithms", STOC 2002.
    M. Datar, N. Immorlica, P. Indyk and V. S. Mirrokni, "Locality-sensitive hashing scheme based on p-stable
    distributions", SoCG 2004.
    """

    name = "lsh"
    _fitted = ("mean_", "planes_")

    def __init__(self, *, n_bits: int = 64, random_state: RandomState = None) -> None:
        self.n_bits = n_bits
        self.random_state = random_state

    def _fit(self, X: NDArray[np.float64], rng: np.random.Generator, *, y: NDArray[np.integer] | None,
             pairs: Pairs | None, progress: StepProgress) -> None:
        self.mean_ = X.mean(axis=0)
        self.planes_ = rng.standard_normal((X.shape[1], self.n_bits))

    def _bits(self, X: NDArray[np.float64]) -> NDArray[np.bool_]:
        return project(X - self.mean_, self.planes_) >= 0
