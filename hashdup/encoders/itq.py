"""Iterative quantization (Gong & Lazebnik 2011): PCA followed by the rotation that best fits the hypercube."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hashdup.encoders.base import BaseEncoder, Pairs, RandomState, StepProgress, project
from hashdup.encoders.pca import pca


def random_rotation(n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """A random orthogonal ``n × n`` matrix, uniform (Haar) over O(n): ``Q`` of the QR factorisation of a Gaussian
    matrix, its columns' signs fixed so that ``R`` has a positive diagonal (which also makes it unique)."""
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    signs = np.sign(np.diag(R))
    return Q * np.where(signs == 0, 1.0, signs)


def quantization_loss(V: NDArray[np.float64], R: NDArray[np.float64]) -> float:
    """``‖B − V R‖²_F`` with ``B = sgn(V R)`` (``+1`` for ``≥ 0``, as ITQ.m): the objective ITQ minimises."""
    Z = V @ R
    return float(np.square(np.where(Z >= 0, 1.0, -1.0) - Z).sum())


def itq_rotation(V: NDArray[np.float64], R: NDArray[np.float64], n_iter: int, progress: StepProgress
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Alternate ``B = sgn(V R)`` and the orthogonal Procrustes step for ``R``, ``n_iter`` times.

    For fixed ``B``, ``min_R ‖B − V R‖²_F`` over orthogonal ``R`` is ``max_R tr(R Bᵀ V)``; with the SVD
    ``Bᵀ V = S Ω Ŝᵀ`` it is reached at ``R = Ŝ Sᵀ`` (ITQ.m: ``[UB, sigma, UA] = svd(C); R = UA * UB'``).
    Neither step can raise the loss, so the recorded losses never increase.

    Parameters
    ----------
    V : ndarray of float64, shape (n_samples, c)
        Centred PCA projections.
    R : ndarray of float64, shape (c, c)
        Initial rotation.
    n_iter : int
    progress : callable

    Returns
    -------
    R : ndarray of float64, shape (c, c)
        The final rotation.
    loss : ndarray of float64, shape (n_iter + 1,)
        ``loss[0]`` for the initial rotation, ``loss[t]`` after ``t`` updates.
    """
    loss = np.empty(n_iter + 1, dtype=np.float64)
    loss[0] = quantization_loss(V, R)
    for t in range(1, n_iter + 1):
        B = np.where(V @ R >= 0, 1.0, -1.0)
        S, _, Sh_t = np.linalg.svd(B.T @ V)  # Bᵀ V = S Ω Ŝᵀ
        R = Sh_t.T @ S.T  # R = Ŝ Sᵀ
        loss[t] = quantization_loss(V, R)
        progress(t, n_iter)
    return R, loss


class ITQ(BaseEncoder):
    """Iterative quantization: the sign of PCA projections after a learned rotation.

    The centred data is projected on its top ``n_bits`` principal components, ``V = (X − μ) W_pca``; ITQ then looks
    for the orthogonal ``R`` that minimises the quantisation loss ``‖B − V R‖²_F`` over ``B ∈ {−1, 1}^{n × c}`` and
    ``R``, by alternating the two exact partial minimisations (see :func:`itq_rotation`) from a random rotation.
    Rotating spreads the variance, concentrated on the first components, over all bits, and aligns clusters of
    the data with the vertices of the hypercube. Bit ``b`` is ``[(x − μ)ᵀ w_b ≥ 0]`` with ``W = W_pca R``. Needs
    ``n_bits ≤ n_features``.

    Parameters
    ----------
    n_bits : int, default 64
        Code length, 8 to 1024 and at most ``n_features``.
    random_state : int, numpy Generator or None, default None
        Seed of the initial rotation; the same seed gives byte-identical codes.
    n_iter : int, default 50
        Alternations of the ``B`` and ``R`` steps (the paper's 50).

    Attributes
    ----------
    mean_ : ndarray of float64, shape (n_features,)
    components_ : ndarray of float64, shape (n_features, n_bits)
        Principal directions as columns, by decreasing variance, signs fixed (largest entry positive).
    rotation_ : ndarray of float64, shape (n_bits, n_bits)
        The learned orthogonal rotation ``R``.
    projection_ : ndarray of float64, shape (n_features, n_bits)
        ``components_ @ rotation_``, the map the codes are computed with.
    loss_ : ndarray of float64, shape (n_iter + 1,)
        Quantisation loss ``‖sgn(V R) − V R‖²_F`` on the training set for the initial rotation and after each
        iteration; non-increasing.
    n_features_in_ : int

    References
    ----------
    Y. Gong and S. Lazebnik, "Iterative quantization: a Procrustean approach to learning binary codes", CVPR 2011;
    Y. Gong, S. Lazebnik, A. Gordo and F. Perronnin, "Iterative quantization: a Procrustean approach to learning
    binary codes for large-scale image retrieval", IEEE TPAMI 35(12), 2013; and the authors' MATLAB code (ITQ.m).
    """

    name = "itq"
    bits_within_features = True
    _fitted = ("mean_", "components_", "rotation_", "projection_", "loss_")

    def __init__(self, *, n_bits: int = 64, random_state: RandomState = None, n_iter: int = 50) -> None:
        self.n_bits = n_bits
        self.random_state = random_state
        self.n_iter = n_iter

    def _fit(self, X: NDArray[np.float64], rng: np.random.Generator, *, y: NDArray[np.integer] | None,
             pairs: Pairs | None, progress: StepProgress) -> None:
        n_bits, d = int(self.n_bits), X.shape[1]
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, (int, np.integer)) or self.n_iter < 0:
            raise ValueError(f"itq needs n_iter to be an integer ≥ 0, got n_iter={self.n_iter!r}")
        if n_bits > d:
            raise ValueError(f"itq needs n_bits ≤ n_features, got n_bits={n_bits} for {d} features")
        self.mean_, self.components_, _ = pca(X, n_bits)
        V = project(X - self.mean_, self.components_)
        self.rotation_, self.loss_ = itq_rotation(V, random_rotation(n_bits, rng), int(self.n_iter), progress)
        self.projection_ = self.components_ @ self.rotation_

    def _bits(self, X: NDArray[np.float64]) -> NDArray[np.bool_]:
        return project(X - self.mean_, self.projection_) >= 0
