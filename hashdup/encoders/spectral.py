"""Spectral hashing (Weiss, Torralba & Fergus 2008), after the authors' reference code trainSH.m / compressSH.m."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hashdup.encoders.base import BaseEncoder, Pairs, RandomState, StepProgress, project
from hashdup.encoders.pca import pca

#: Padding of each component's box, as MATLAB's ``eps`` in trainSH.m: ``mn = min(X) - eps; mx = max(X) + eps``.
EPS = float(np.finfo(np.float64).eps)


def enumerate_modes(ranges: NDArray[np.float64], n_bits: int) -> NDArray[np.int64]:
    """The ``n_bits`` one-dimensional eigenfunction modes of smallest eigenvalue, as in trainSH.m.

    Component ``i`` (a box of width ``R_i``) offers the modes ``k = 1 .. maxMode_i − 1`` with
    ``maxMode_i = ceil((n_bits + 1) · R_i / max(R))``; mode ``k`` of component ``i`` has the eigenvalue
    ``(k π / R_i)²`` (up to a common factor). The constant mode ``k = 0`` comes first and is skipped; the rest are
    sorted by eigenvalue with a stable sort, so ties keep the enumeration order (component, then ``k``), as
    MATLAB's ``sort`` does.

    Parameters
    ----------
    ranges : ndarray of float64, shape (n_components,)
        Box widths ``R = mx − mn``, all positive.
    n_bits : int

    Returns
    -------
    modes : ndarray of int64, shape (n_bits, n_components)
        Row ``b`` is zero but for the mode number ``k ≥ 1`` of the one component bit ``b`` follows.
    """
    n_components = len(ranges)
    max_mode = np.ceil((n_bits + 1) * ranges / ranges.max()).astype(np.int64)
    comp = np.concatenate([np.full(m - 1, i, dtype=np.int64) for i, m in enumerate(max_mode)])
    k = np.concatenate([np.arange(1, m, dtype=np.int64) for m in max_mode])
    # the constant mode (eigenvalue 0) is row 0 of the reference's table: it sorts first and is dropped, so sorting
    # the others alone keeps the same order
    eigenvalues = (k * (np.pi / ranges[comp])) ** 2
    chosen = np.argsort(eigenvalues, kind="stable")[:n_bits]
    if len(chosen) < n_bits:  # cannot happen: the widest component alone offers n_bits modes
        raise ValueError(f"spectral found only {len(chosen)} modes for n_bits={n_bits}")
    modes = np.zeros((n_bits, n_components), dtype=np.int64)
    modes[np.arange(n_bits), comp[chosen]] = k[chosen]
    return modes


class SpectralHashing(BaseEncoder):
    """Spectral hashing: thresholded analytical eigenfunctions of a uniform box in PCA space.

    Spectral hashing looks for balanced, uncorrelated bits that keep neighbours (by a Gaussian affinity) on the
    same side; relaxed, this is the graph Laplacian's eigenvector problem. For data uniform in a box, the
    eigenfunctions of the continuous Laplacian are known in closed form. Training follows the reference code:

    1. PCA to ``npca = min(n_bits, n_features)`` components (signs fixed, see :func:`hashdup.encoders.pca.pca`);
    2. per component, a uniform box ``[mn, mx]`` from the training projections padded by ``eps``
       (``mn = min − eps``, ``mx = max + eps``, width ``R = mx − mn``);
    3. the one-dimensional modes ``k = 1, 2, …`` of every component (see :func:`enumerate_modes`), ordered by the
       eigenvalue ``(k π / R)²`` — wide components give several low-frequency bits before narrow ones give any —
       keeping the ``n_bits`` smallest.

    Bit ``b``, following mode ``k`` of component ``i``, is ``[sin(π/2 + k π (x_i − mn_i) / R_i) > 0]``
    (compressSH.m), i.e. ``[cos(k π (x_i − mn_i) / R_i) > 0]``: across the training box it flips exactly ``k``
    times. ``n_bits`` may exceed ``n_features`` (wide components then give several modes); a component whose
    training projections are (nearly) constant has ``R`` too small to give any mode.

    Unlike the reference, projections are taken of the centred descriptor ``x − μ``; this only shifts ``mn`` and
    ``mx`` by ``μᵀ pc`` and keeps rounding small for data far from the origin.

    Parameters
    ----------
    n_bits : int, default 64
        Code length, 8 to 1024.
    random_state : int, numpy Generator or None, default None
        Unused (the method is deterministic); accepted for a uniform interface.

    Attributes
    ----------
    mean_ : ndarray of float64, shape (n_features,)
        Training mean.
    components_ : ndarray of float64, shape (n_features, npca)
        Principal directions as columns, by decreasing variance, signs fixed (largest entry positive).
    mn_, mx_ : ndarray of float64, shape (npca,)
        The box of each component, in units of the centred projection: training minimum − eps, maximum + eps.
    modes_ : ndarray of int64, shape (n_bits, npca)
        Mode table of the reference code: row ``b`` holds the mode number ``k`` of bit ``b`` in the column of its
        component, zeros elsewhere; rows by increasing eigenvalue.
    n_features_in_ : int

    References
    ----------
    Y. Weiss, A. Torralba and R. Fergus, "Spectral hashing", NIPS 2008, and the authors' MATLAB code
    (trainSH.m, compressSH.m).
    """

    name = "spectral"
    _fitted = ("mean_", "components_", "mn_", "mx_", "modes_")

    def __init__(self, *, n_bits: int = 64, random_state: RandomState = None) -> None:
        self.n_bits = n_bits
        self.random_state = random_state

    def _fit(self, X: NDArray[np.float64], rng: np.random.Generator, *, y: NDArray[np.integer] | None,
             pairs: Pairs | None, progress: StepProgress) -> None:
        n, d = X.shape
        if np.ptp(X, axis=0).max() == 0.0:
            raise ValueError(f"spectral needs training samples that differ; all {n} rows of X are identical")
        n_bits = int(self.n_bits)
        self.mean_, self.components_, _ = pca(X, min(n_bits, d))
        P = project(X - self.mean_, self.components_)
        self.mn_ = P.min(axis=0) - EPS
        self.mx_ = P.max(axis=0) + EPS
        self.modes_ = enumerate_modes(self.mx_ - self.mn_, n_bits)
        progress(1, 1)

    def _bits(self, X: NDArray[np.float64]) -> NDArray[np.bool_]:
        P = project(X - self.mean_, self.components_) - self.mn_
        omega0 = np.pi / (self.mx_ - self.mn_)
        comp = np.argmax(self.modes_ != 0, axis=1)  # each row has one non-zero entry: its component
        omega = self.modes_[np.arange(len(comp)), comp] * omega0[comp]
        # compressSH.m takes the product of sin(ω x + π/2) over all components; those with mode 0 give exactly 1
        return np.sin(P[:, comp] * omega + np.pi / 2) > 0
