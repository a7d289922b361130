"""ITML + LSH: information-theoretic metric learning (Davis et al. 2007), hashed with random hyperplanes in the
learned metric (Jain, Kulis & Grauman 2008)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg.blas import dsymv, dsyr

from hashdup.encoders.base import BaseEncoder, Pairs, RandomState, StepProgress, project
from hashdup.encoders.pca import pca
from hashdup.errors import HashdupError

#: Random row pairs whose squared distances set the default bounds ``u`` and ``l``.
BOUND_PAIRS = 10_000
#: A pair whose squared distance is at most this fraction of the mean squared norm of the centred training rows is
#: treated as a zero-distance pair (the Bregman projection divides by the distance).
ZERO_DISTANCE = 1e-12


@dataclass(frozen=True)
class ITMLResult:
    """What :func:`itml` returns.

    Attributes
    ----------
    A : ndarray of float64, shape (k, k)
        The learned Mahalanobis matrix, symmetric.
    slack : ndarray of float64, shape (n_constraints,)
        The final targets ``ξ`` of the constraints (squared distances): at the solution a similar pair has
        ``d_A ≤ ξ`` and a dissimilar pair ``d_A ≥ ξ``, each ``ξ`` having moved away from its bound ``u`` or ``l``
        as far as the slack penalty ``γ`` allows.
    duals : ndarray of float64, shape (n_constraints,)
        The dual variables ``λ ≥ 0``; positive for the active constraints (those with ``d_A = ξ``).
    n_sweeps : int
        Sweeps over the constraints that were run.
    converged : bool
        Whether the convergence test passed before ``max_iter`` sweeps.
    """

    A: NDArray[np.float64]
    slack: NDArray[np.float64]
    duals: NDArray[np.float64]
    n_sweeps: int
    converged: bool


def itml(diffs: ArrayLike, similar: ArrayLike, u: float, l: float, *, gamma: float = 1.0, max_iter: int = 100,
         tol: float = 1e-3, A0: ArrayLike | None = None, progress: StepProgress | None = None) -> ITMLResult:
    """Learn a Mahalanobis matrix by cyclic Bregman projections onto pair constraints (ITML, Algorithm 1).

    Minimises ``D_ld(A, A0) + γ · D_ld(diag ξ, diag ξ0)`` subject to ``d_A(x_i, x_j) ≤ ξ_ij`` for similar pairs and
    ``d_A(x_i, x_j) ≥ ξ_ij`` for dissimilar ones, where ``d_A(x, x') = (x − x')ᵀ A (x − x')`` is a **squared**
    Mahalanobis distance and ``ξ0`` is ``u`` for similar and ``l`` for dissimilar pairs. Each step projects onto one
    constraint: with ``p = vᵀ A v`` for the pair's difference ``v`` and ``δ = +1`` (similar) or ``−1``,

    ``α = min(λ, δ γ/(γ+1) (1/p − 1/ξ))``, ``β = δα / (1 − δαp)``, ``1/ξ ← 1/ξ + δα/γ``, ``λ ← λ − α``,
    ``A ← A + β A v vᵀ A``.

    This is the exact LogDet projection (it makes ``vᵀ A v = ξ`` when ``α`` is not clipped by ``λ``) and the update
    of the authors' ``ItmlAlg.m``; the paper's Algorithm 1 prints ``α = min(λ, δ/2 (1/p − γ/ξ))``, which agrees
    with it at ``γ = 1`` only. ``γ = inf`` gives hard constraints (``ξ`` stays at its bound). Each step is a
    rank-one update, O(k²), done in place with BLAS ``dsymv``/``dsyr`` on the upper triangle.

    Convergence, tested after each sweep as in ``ItmlAlg.m``: ``‖λ − λ_prev‖₁ / (‖λ‖₂ + ‖λ_prev‖₂) < tol``, or
    no constraint was ever violated (all ``λ`` zero: ``A = A0`` already satisfies them).

    Parameters
    ----------
    diffs : array_like of float, shape (n_constraints, k)
        ``x_i − x_j`` for each constrained pair; none may be zero.
    similar : array_like of bool, shape (n_constraints,)
    u, l : float
        Bounds on the squared distance of similar (``≤ u``) and dissimilar (``≥ l``) pairs, both > 0.
    gamma : float, default 1.0
        Slack penalty ``γ > 0``: small values let the targets ``ξ`` move far from ``u``, ``l``; ``inf`` forbids it.
    max_iter : int, default 100
        Maximum number of sweeps over all the constraints.
    tol : float, default 1e-3
    A0 : array_like of float, shape (k, k), optional
        The prior, symmetric positive definite; default the identity.
    progress : callable, optional
        ``progress(sweep, max_iter)`` after each sweep.

    Returns
    -------
    ITMLResult

    Raises
    ------
    HashdupError
        When a pair gets ``vᵀ A v ≤ 0``: ``A`` is no longer positive definite (an indefinite ``A0``, or rounding).

    References
    ----------
    J. V. Davis, B. Kulis, P. Jain, S. Sra and I. S. Dhillon, "Information-theoretic metric learning", ICML 2007.
    """
    V = np.ascontiguousarray(diffs, dtype=np.float64)
    sim = np.asarray(similar, dtype=bool)
    if V.ndim != 2 or sim.shape != (V.shape[0],):
        raise ValueError(f"diffs must be (n_constraints, k) and similar (n_constraints,), got {V.shape}, {sim.shape}")
    c, k = V.shape
    if not (u > 0 and l > 0 and math.isfinite(u) and math.isfinite(l)):
        raise ValueError(f"the bounds must be positive squared distances, got u={u!r}, l={l!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be positive (or inf), got {gamma!r}")
    if c and (V * V).sum(axis=1).min() == 0:
        raise ValueError("a constrained pair has zero distance; drop such pairs before calling itml")
    A = np.eye(k, order="F") if A0 is None else np.array(A0, dtype=np.float64, order="F", copy=True)
    if A.shape != (k, k):
        raise ValueError(f"A0 must be ({k}, {k}), got {A.shape}")
    gamma_proj = 1.0 if math.isinf(gamma) else gamma / (gamma + 1.0)
    inv_gamma = 0.0 if math.isinf(gamma) else 1.0 / gamma
    rows = list(V)
    sign = [1.0 if s else -1.0 for s in sim]
    inv_xi = [1.0 / u if s else 1.0 / l for s in sim]
    lam = [0.0] * c
    lam_prev = np.zeros(c)
    dot = np.dot
    converged = False
    sweep = 0
    for sweep in range(1, max_iter + 1):
        for t in range(c):
            v = rows[t]
            Av = dsymv(1.0, A, v)
            p = float(dot(v, Av))
            if not p > 0.0:  # only rounding can get here: each exact projection keeps A positive definite
                raise HashdupError(f"itml: the metric lost positive definiteness in sweep {sweep} (vᵀAv = {p:.3g}); "
                                   "try a smaller gamma, fewer constraints or pca_dims")
            delta = sign[t]
            alpha = delta * gamma_proj * (1.0 / p - inv_xi[t])
            if lam[t] < alpha:
                alpha = lam[t]
            if alpha == 0.0:
                continue
            lam[t] -= alpha
            da = delta * alpha
            inv_xi[t] += da * inv_gamma
            A = dsyr(da / (1.0 - da * p), Av, a=A, overwrite_a=1)
        if progress is not None:
            progress(sweep, max_iter)
        lam_now = np.array(lam)
        norm_sum = np.linalg.norm(lam_now) + np.linalg.norm(lam_prev)
        if norm_sum == 0.0 or np.abs(lam_now - lam_prev).sum() / norm_sum < tol:
            converged = True
            break
        lam_prev = lam_now
    A = np.triu(A) + np.triu(A, 1).T  # dsymv/dsyr use and update the upper triangle only
    return ITMLResult(A=np.ascontiguousarray(A), slack=1.0 / np.array(inv_xi, dtype=np.float64),
                      duals=np.array(lam, dtype=np.float64), n_sweeps=sweep, converged=converged)


def label_pairs(y: ArrayLike, n_pairs: int, rng: np.random.Generator) -> Pairs:
    """Constraint pairs drawn from class labels: half similar, half dissimilar, in random order.

    A similar pair is a uniformly drawn row (among rows whose class has another member) and a uniformly drawn other
    row of its class; a dissimilar pair is a uniformly drawn row and a uniformly drawn row of another class. Never
    ``i == j``. When the labels allow only one kind (a single class, or only singleton classes) all pairs are of
    the other kind.

    The authors' ``GetConstraints.m`` instead labels random pairs by class equality, which with ``C`` balanced
    classes gives only about ``1/C`` similar pairs (10 % on MNIST); balancing gives the similar constraints, the
    ones that pull a class together, equal weight whatever the number of classes.

    Parameters
    ----------
    y : array_like of int, shape (n,)
    n_pairs : int
    rng : numpy Generator

    Returns
    -------
    Pairs
    """
    y = np.asarray(y)
    n = len(y)
    order = np.argsort(y, kind="stable")
    classes, start, count = np.unique(y[order], return_index=True, return_counts=True)
    cls = np.searchsorted(classes, y)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    can_sim = np.flatnonzero(count[cls] >= 2)
    can_dis = len(classes) >= 2
    n_sim = (n_pairs // 2 if can_dis else n_pairs) if len(can_sim) else 0
    n_dis = n_pairs - n_sim if can_dis else 0
    # similar: another member of the anchor's class, skipping the anchor's own position in the sorted order
    a = can_sim[rng.integers(len(can_sim), size=n_sim)] if n_sim else np.zeros(0, np.int64)
    ca = cls[a]
    pos = start[ca] + rng.integers(0, count[ca] - 1) if n_sim else np.zeros(0, np.int64)
    b = order[pos + (pos >= rank[a])]
    # dissimilar: a position among the rows of other classes, skipping the anchor's class block
    a2 = rng.integers(n, size=n_dis) if n_dis else np.zeros(0, np.int64)
    c2 = cls[a2]
    pos2 = rng.integers(0, n - count[c2]) if n_dis else np.zeros(0, np.int64)
    b2 = order[pos2 + count[c2] * (pos2 >= start[c2])]
    i, j = np.concatenate([a, a2]), np.concatenate([b, b2])
    similar = np.concatenate([np.ones(n_sim, bool), np.zeros(n_dis, bool)])
    perm = rng.permutation(len(i))
    return Pairs(i[perm], j[perm], similar[perm])


def distance_bounds(X: NDArray[np.float64], u_percentile: float, l_percentile: float, rng: np.random.Generator,
                    *, n_pairs: int = BOUND_PAIRS, zero: float = 0.0) -> tuple[float, float]:
    """``u`` and ``l``: percentiles of the squared Euclidean distances of ``n_pairs`` random pairs of distinct rows.

    Pairs at squared distance ``≤ zero`` are left out (they cannot be constraints). As ``ComputeDistanceExtremes.m``
    of the authors' code, but with exact percentiles (``numpy.percentile``, linear interpolation) of more pairs
    instead of histogram bin centres of 100 pairs.

    Returns
    -------
    u, l : float
        Squared distances, in the units of ``X`` squared.
    """
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"itml needs at least 2 training rows, got {n}")
    i = rng.integers(n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n
    sq = ((X[i] - X[j]) ** 2).sum(axis=1)
    sq = sq[sq > zero]
    if len(sq) == 0:
        raise ValueError("itml needs distinct training rows: all sampled pairs have zero distance")
    u, l = np.percentile(sq, [u_percentile, l_percentile])
    return float(u), float(l)


def metric_factor(A: NDArray[np.float64]) -> NDArray[np.float64]:
    """Lower-triangular ``L`` with ``A = L Lᵀ`` (so ``G = Lᵀ`` gives ``A = GᵀG``).

    Raises
    ------
    HashdupError
        When ``A`` is not symmetric positive definite (rounding in very many rank-one updates can cause this).
    """
    try:
        return np.linalg.cholesky(A).astype(np.float64, copy=False)  # float64 already: no copy, a typed result
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh((A + A.T) / 2)[0])
        raise HashdupError(
            f"itml: the learned metric is not positive definite (smallest eigenvalue {smallest:.3g}); "
            "try a smaller gamma, fewer constraints or pca_dims"
        ) from None


class ITMLHash(BaseEncoder):
    """Random-hyperplane LSH in a Mahalanobis metric learned from labels or pairs with ITML.

    Training: the centred rows are reduced to their top ``pca_dims`` principal components ``P`` (the reduction is
    there because the Bregman projections are sequential rank-one updates costing O(k²) each, so on 512-dimensional
    GIST descriptors tens of thousands of constraints over many sweeps would be slow); ITML learns ``A`` in that
    space from the prior ``A0 = I`` (the authors' default; the reduced space keeps Euclidean distances, as ``P`` is
    orthonormal); ``A = GᵀG`` is factored (Cholesky) and bit ``b`` of the code of ``x`` is
    ``[r_bᵀ G P (x − μ) ≥ 0]`` with ``r_b ~ N(0, I)``. Two codes then differ in a bit with probability ``θ_A/π``,
    ``θ_A`` the angle between the vectors in the learned metric.

    Constraints: ``d_A(x_i, x_j) ≤ u`` for similar pairs and ``≥ l`` for dissimilar ones, ``d_A`` the **squared**
    Mahalanobis distance in the reduced space; by default ``u`` and ``l`` are the ``u_percentile`` (5th) and
    ``l_percentile`` (95th) percentiles of the squared Euclidean distances of 10,000 random pairs of training rows
    (units: the descriptor's units squared), as in the authors' code. From labels ``y``, ``n_constraints`` pairs are
    drawn, half similar and half dissimilar (:func:`label_pairs`); ``pairs`` are used as given (a random subset of
    ``n_constraints`` if there are more); with both, both sets are used. Pairs with ``i == j`` or at (numerically)
    zero distance are dropped.

    Parameters
    ----------
    n_bits : int, default 64
        Code length, 8 to 1024.
    random_state : int, numpy Generator or None, default None
        Seeds the distance sample, the constraints drawn from labels and the hyperplanes.
    pca_dims : int or None, default 64
        Dimension the metric is learned in (capped at the number of features); None learns it on the raw features.
    n_constraints : int, default 20000
        Pairs drawn from the labels (and the most pairs taken from ``pairs``).
    gamma : float, default 1.0
        Slack penalty of ITML; ``inf`` makes the constraints hard.
    u_percentile, l_percentile : float, default 5.0 and 95.0
        Percentiles (0–100) of random squared distances giving ``u`` and ``l``; ``u_percentile ≤ l_percentile``.
    max_iter : int, default 20
        Maximum sweeps over the constraints. A sweep costs about ``n_constraints`` rank-one updates of ``k × k``
        (about 0.1 s for 20,000 constraints at ``k = 64``); the authors' convergence test is strict, so many runs
        stop at ``max_iter``. On MNIST, retrieval quality levels off after about 10 sweeps (mAP at 32 bits 0.491
        after 10, 0.489 after 100), hence the default.
    tol : float, default 1e-3
        Convergence threshold of the authors' test (see :func:`itml`).

    Attributes
    ----------
    mean_ : ndarray of float64, shape (n_features,)
        Training mean ``μ``.
    projection_ : ndarray of float64, shape (n_features, n_bits)
        ``W = Pᵀ Gᵀ R``: bit ``b`` is ``[(x − μ)ᵀ W[:, b] ≥ 0]``.
    metric_ : ndarray of float64, shape (k, k)
        The learned ``A`` in the reduced space (``k = min(pca_dims, n_features)``), symmetric positive definite.
    bounds_ : ndarray of float64, shape (2,)
        ``[u, l]``, squared distances in the reduced space.
    n_iter_ : int
        Sweeps run (not saved).
    n_features_in_ : int

    References
    ----------
    J. V. Davis, B. Kulis, P. Jain, S. Sra and I. S. Dhillon, "Information-theoretic metric learning", ICML 2007.
    P. Jain, B. Kulis and K. Grauman, "Fast image search for learned metrics", CVPR 2008.
    """

    name = "itml"
    _fitted = ("mean_", "projection_", "metric_", "bounds_")
    supervision = "required"

    def __init__(self, *, n_bits: int = 64, random_state: RandomState = None, pca_dims: int | None = 64,
                 n_constraints: int = 20000, gamma: float = 1.0, u_percentile: float = 5.0,
                 l_percentile: float = 95.0, max_iter: int = 20, tol: float = 1e-3) -> None:
        self.n_bits = n_bits
        self.random_state = random_state
        self.pca_dims = pca_dims
        self.n_constraints = n_constraints
        self.gamma = gamma
        self.u_percentile = u_percentile
        self.l_percentile = l_percentile
        self.max_iter = max_iter
        self.tol = tol

    def _check_params(self) -> None:
        def positive_int(name: str, value: object) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"itml: {name} must be a positive integer, got {value!r}")
        if self.pca_dims is not None:
            positive_int("pca_dims", self.pca_dims)
        positive_int("n_constraints", self.n_constraints)
        positive_int("max_iter", self.max_iter)
        if not self.gamma > 0:
            raise ValueError(f"itml: gamma must be positive (or inf), got {self.gamma!r}")
        if not 0 <= self.u_percentile <= self.l_percentile <= 100:
            raise ValueError("itml: need 0 ≤ u_percentile ≤ l_percentile ≤ 100, got "
                             f"u_percentile={self.u_percentile!r}, l_percentile={self.l_percentile!r}")
        if not self.tol >= 0:
            raise ValueError(f"itml: tol must be ≥ 0, got {self.tol!r}")

    def _fit(self, X: NDArray[np.float64], rng: np.random.Generator, *, y: NDArray[np.integer] | None,
             pairs: Pairs | None, progress: StepProgress) -> None:
        self._check_params()
        if self.pca_dims is None:
            mean, P = X.mean(axis=0), None
            Xr = X - mean
        else:
            mean, P, _ = pca(X, min(int(self.pca_dims), X.shape[1]))
            Xr = (X - mean) @ P
        zero = ZERO_DISTANCE * float((Xr * Xr).sum(axis=1).mean())
        u, l = distance_bounds(Xr, self.u_percentile, self.l_percentile, rng, zero=zero)
        i, j, similar = [], [], []
        if pairs is not None and len(pairs):
            keep = np.arange(len(pairs))
            if len(pairs) > self.n_constraints:
                keep = np.sort(rng.choice(len(pairs), size=int(self.n_constraints), replace=False))
            i.append(pairs.i[keep])
            j.append(pairs.j[keep])
            similar.append(pairs.similar[keep])
        if y is not None:
            drawn = label_pairs(y, int(self.n_constraints), rng)
            i.append(drawn.i)
            j.append(drawn.j)
            similar.append(drawn.similar)
        ii, jj, ss = np.concatenate(i), np.concatenate(j), np.concatenate(similar)
        diffs = Xr[ii] - Xr[jj]
        keep = (ii != jj) & ((diffs * diffs).sum(axis=1) > zero)
        if not keep.any():
            raise ValueError("itml: every constraint pair has i == j or zero distance; nothing to learn from")
        result = itml(diffs[keep], ss[keep], u, l, gamma=float(self.gamma), max_iter=int(self.max_iter),
                      tol=float(self.tol), progress=progress)
        L = metric_factor(result.A)  # A = L Lᵀ, G = Lᵀ
        R = rng.standard_normal((Xr.shape[1], self.n_bits))
        W = L @ R
        self.mean_ = mean
        self.projection_ = W if P is None else P @ W
        self.metric_ = result.A
        self.bounds_ = np.array([u, l])
        self.n_iter_ = result.n_sweeps

    def _bits(self, X: NDArray[np.float64]) -> NDArray[np.bool_]:
        return project(X - self.mean_, self.projection_) >= 0
