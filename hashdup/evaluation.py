"""Measuring encoders the way the learning-to-hash papers do: ``hashdup eval``.

Protocol: ``n_queries`` rows drawn at random (seeded) are the queries, the rest the database; encoders are trained
on the database (or on ``n_train`` rows of it, drawn with ``seed + 1``); a database item is relevant to a query when
their labels are equal.

Metrics, for each (encoder, bits):

* ``map``: mean average precision of the Hamming ranking of the whole database. Ties in Hamming distance are ordered
  by database position (a stable sort), as the search engine orders them; with very short codes (many ties) the
  figure therefore depends a little on the database order (on MNIST at 8 bits, sorting the database by label moves
  LSH's mAP from 0.169 to 0.179).
* ``p_at_r2``: precision of the items within Hamming distance 2 (inclusive); a query that retrieves nothing counts
  as precision 0.
* ``p_at_100``: precision of the first 100 items of the ranking.
* ``fit_s``, ``encode_s``: seconds to fit on the training rows, and to encode queries and database.

The float reference ``euclidean`` ranks the database by exact Euclidean distance (``bits`` 0, no radius metric);
``kdtree`` gets the same ranking from a kd-tree (:func:`kdtree_metrics`), the lecture's exact baseline. For these two
rows ``encode_s`` is the time to rank the database for every query and compute the metrics, and ``fit_s`` the time to
build the kd-tree (0 for the scan): the Hamming rows' ``encode_s`` does not include their ranking.
Precision-recall curves sweep the Hamming radius from 0 to ``bits``, with totals pooled over queries
(precision = relevant retrieved / retrieved, taken as 1 at radii that retrieve nothing; recall = relevant
retrieved / relevant).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from hashdup import bits
from hashdup.encoders import make_encoder
from hashdup.errors import HashdupError

if TYPE_CHECKING:  # imported where used otherwise: scipy.spatial takes a second or more to import
    from scipy.spatial import cKDTree

QUERY_BLOCK = 200


@dataclass
class Result:
    """One row of ``hashdup eval``; ``pr`` holds the precision-recall curve (not printed as JSON)."""

    encoder: str
    bits: int
    map: float
    p_at_r2: float | None
    p_at_100: float
    fit_s: float
    encode_s: float
    pr: tuple[NDArray[np.float64], NDArray[np.float64]] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        def r(v: Any) -> float | None:
            return None if v is None else round(float(v), 4)

        return {"encoder": self.encoder, "bits": self.bits, "map": r(self.map), "p_at_r2": r(self.p_at_r2),
                "p_at_100": r(self.p_at_100), "fit_s": round(self.fit_s, 3), "encode_s": round(self.encode_s, 3)}


def split(n: int, n_queries: int, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Random query rows and the remaining database rows (both sorted), drawn with ``seed``."""
    if not 0 < n_queries < n:
        raise ValueError(f"queries must be between 1 and n - 1 = {n - 1}, got {n_queries}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_queries]), np.sort(perm[n_queries:])


def _ranking_metrics(D: NDArray[np.floating] | NDArray[np.integer], rel: NDArray[np.bool_], top: int
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Average precision and precision@top per query row, ranking by D with ties by column (stable)."""
    order = np.argsort(D, axis=1, kind="stable")
    return _ranked_metrics(np.take_along_axis(rel, order, axis=1), top)


def _ranked_metrics(hits: NDArray[np.bool_], top: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Average precision and precision@top per row of ``hits`` (nq, n): relevance of the whole database, in rank
    order."""
    cum = np.cumsum(hits, axis=1)
    ranks = np.arange(1, hits.shape[1] + 1)
    n_rel = hits.sum(axis=1)
    ap = np.where(n_rel > 0, (cum / ranks * hits).sum(axis=1) / np.maximum(n_rel, 1), 0.0)
    p_top = cum[:, min(top, hits.shape[1]) - 1] / min(top, hits.shape[1])
    return ap, p_top


def hamming_metrics(q_codes: NDArray[np.uint8], db_codes: NDArray[np.uint8], yq: NDArray[np.integer],
                    ydb: NDArray[np.integer], n_bits: int, *, radius: int = 2, top: int = 100
                    ) -> tuple[float, float, float, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """mAP, precision within ``radius``, precision@``top`` and the precision-recall curve of Hamming rankings."""
    aps, p_r, p_top = [], [], []
    rel_within = np.zeros(n_bits + 1)
    ret_within = np.zeros(n_bits + 1)
    total_rel = 0
    for s in range(0, len(q_codes), QUERY_BLOCK):
        D = bits.hamming(q_codes[s : s + QUERY_BLOCK], db_codes)
        rel = yq[s : s + QUERY_BLOCK, None] == ydb[None, :]
        ap, pt = _ranking_metrics(D, rel, top)
        aps.append(ap)
        p_top.append(pt)
        within = radius >= D
        n_ret = within.sum(axis=1)
        p_r.append(np.where(n_ret > 0, (within & rel).sum(axis=1) / np.maximum(n_ret, 1), 0.0))
        for d in range(n_bits + 1):  # histogram of distances, all and relevant, pooled over queries
            at = np.equal(D, d)
            ret_within[d] += at.sum()
            rel_within[d] += (at & rel).sum()
        total_rel += rel.sum()
    ret_c, rel_c = np.cumsum(ret_within), np.cumsum(rel_within)
    precision = np.where(ret_c > 0, rel_c / np.maximum(ret_c, 1), 1.0)
    recall = rel_c / max(total_rel, 1)
    return (float(np.concatenate(aps).mean()), float(np.concatenate(p_r).mean()), float(np.concatenate(p_top).mean()),
            (precision, recall))


def euclidean_metrics(Xq: NDArray[np.floating], Xdb: NDArray[np.floating], yq: NDArray[np.integer],
                      ydb: NDArray[np.integer], *, top: int = 100) -> tuple[float, float]:
    """mAP and precision@``top`` of the exact Euclidean ranking (brute force)."""
    Xq, Xdb = np.asarray(Xq, np.float64), np.asarray(Xdb, np.float64)
    db_sq = (Xdb**2).sum(axis=1)
    aps, p_top = [], []
    for s in range(0, len(Xq), QUERY_BLOCK):
        q = Xq[s : s + QUERY_BLOCK]
        D = (q**2).sum(axis=1)[:, None] + db_sq[None, :] - 2 * q @ Xdb.T
        ap, pt = _ranking_metrics(D, yq[s : s + QUERY_BLOCK, None] == ydb[None, :], top)
        aps.append(ap)
        p_top.append(pt)
    return float(np.concatenate(aps).mean()), float(np.concatenate(p_top).mean())


def kdtree_knn(tree: cKDTree, Xq: NDArray[np.floating], k: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The ``k`` nearest database items of each query by Euclidean distance, from a kd-tree.

    Parameters
    ----------
    tree : scipy.spatial.cKDTree
        Built on the database rows, shape (n, d).
    Xq : ndarray of float, shape (nq, d)
    k : int
        At least 1; may exceed ``n``.

    Returns
    -------
    D : ndarray of float64, shape (nq, k)
        Euclidean distances (units of the descriptors), ascending; ``inf`` past the ``n`` items of the database.
    I : ndarray of int64, shape (nq, k)
        Database rows; ``-1`` past the ``n`` items of the database.

    Notes
    -----
    Equal distances are ordered by database row, as :func:`hamming_metrics` and :func:`euclidean_metrics` order them.
    That order is exact when ``k >= n``; with a smaller ``k``, which of several items tied at the k-th distance are
    returned is the tree's choice. Queries run on one thread (``workers=1``), as the Hamming scans do; the matrix
    product of :func:`euclidean_metrics` may use BLAS's threads.
    """
    Xq = np.asarray(Xq, dtype=np.float64)
    if Xq.ndim != 2 or Xq.shape[1] != tree.m:
        raise ValueError(f"queries must be (nq, {tree.m}) to match the tree, got {Xq.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    nq, k_found = len(Xq), min(k, tree.n)
    D = np.full((nq, k), np.inf)
    I = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0 or k_found == 0:
        return D, I
    d, i = tree.query(Xq, k=k_found, workers=1)
    d, i = np.reshape(d, (nq, k_found)), np.reshape(i, (nq, k_found)).astype(np.int64)
    order = np.lexsort((i, d), axis=1)  # distance, then database row
    D[:, :k_found] = np.take_along_axis(d, order, axis=1)
    I[:, :k_found] = np.take_along_axis(i, order, axis=1)
    return D, I


def kdtree_metrics(tree: cKDTree, Xq: NDArray[np.floating], yq: NDArray[np.integer], ydb: NDArray[np.integer], *,
                   top: int = 100) -> tuple[float, float]:
    """mAP and precision@``top`` of the Euclidean ranking returned by a kd-tree (the ``kdtree`` row).

    The kd-tree (Friedman, Bentley & Finkel 1977) is the exact nearest-neighbour structure the lecture sets against
    Hamming ranking: its answers are the exact Euclidean neighbours, so this row's mAP and precision@``top`` equal
    the ``euclidean`` row's (up to the order of items at equal distance, whose distances the two compute with
    different rounding), but its pruning stops paying off as the dimension grows and a query then costs about as much
    as a linear scan, or more.

    mAP here is the average precision over the whole database, as for the other rows, which needs the rank of every
    relevant item, that is the full ranking: each query asks the tree for ``k = n`` neighbours (n = database size),
    not the handful a kNN search would ask for, and precision@``top`` is read off the same ranking. Asking for every
    item leaves the tree nothing to prune, so the time measured for this row is that of a full ranking, not of a
    small-``k`` search (which can prune, though in high dimension it barely does). Stopping at a smaller ``k`` would
    give a truncated AP, a different figure from the other rows'.

    Parameters
    ----------
    tree : scipy.spatial.cKDTree
        Built on the database rows, shape (n, d).
    Xq : ndarray of float, shape (nq, d)
    yq : ndarray of int, shape (nq,)
    ydb : ndarray of int, shape (n,)
    top : int

    Returns
    -------
    map, p_at_top : float

    References
    ----------
    J. H. Friedman, J. L. Bentley, R. A. Finkel, "An algorithm for finding best matches in logarithmic expected
    time", ACM Transactions on Mathematical Software 3(3):209-226, 1977.
    """
    if ydb.shape != (tree.n,):
        raise ValueError(f"ydb must have one label per database row, (n,) = ({tree.n},), got {ydb.shape}")
    aps, p_top = [], []
    for s in range(0, len(Xq), QUERY_BLOCK):
        _, I = kdtree_knn(tree, Xq[s : s + QUERY_BLOCK], tree.n)
        hits = yq[s : s + QUERY_BLOCK, None] == ydb[I]
        ap, pt = _ranked_metrics(hits, top)
        aps.append(ap)
        p_top.append(pt)
    return float(np.concatenate(aps).mean()), float(np.concatenate(p_top).mean())


def evaluate(X: NDArray[np.floating], y: NDArray[np.integer], encoders: Sequence[str], bits_list: Sequence[int], *,
             n_queries: int = 1000, n_train: int | None = None, seed: int = 0, euclidean: bool = True,
             kdtree: bool = True, encoder_params: dict[str, dict[str, Any]] | None = None,
             on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run the protocol of the module docstring for every encoder and code length.

    Parameters
    ----------
    X : ndarray of float, shape (n, d)
    y : ndarray of int, shape (n,)
    encoders : sequence of str
        Registry names; supervised encoders are trained with the training rows' labels.
    bits_list : sequence of int
    n_queries : int
    n_train : int, optional
        Train on this many database rows (default: all of them).
    seed : int
        Seeds the split, the training subset and every encoder's ``random_state``.
    euclidean : bool
        Also report the exact Euclidean ranking as the float reference.
    kdtree : bool
        Also report the same ranking from a kd-tree, with its build and query times (:func:`kdtree_metrics`).
    encoder_params : dict, optional
        Extra keyword parameters per encoder name.
    on_result : callable, optional
        Called with each Result as soon as it is measured.

    Returns
    -------
    list of Result
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
    q_idx, db_idx = split(len(X), n_queries, seed)
    train = db_idx
    if n_train is not None and n_train < len(db_idx):
        train = np.sort(np.random.default_rng(seed + 1).choice(db_idx, n_train, replace=False))
    Xq, yq, Xdb, ydb = X[q_idx], y[q_idx], X[db_idx], y[db_idx]
    results: list[Result] = []

    def emit(r: Result) -> None:
        results.append(r)
        if on_result is not None:
            on_result(r)

    if euclidean:
        t0 = time.perf_counter()
        m, p100 = euclidean_metrics(Xq, Xdb, yq, ydb)
        emit(Result("euclidean", 0, m, None, p100, 0.0, time.perf_counter() - t0))
    if kdtree:
        from scipy.spatial import cKDTree

        t0 = time.perf_counter()
        tree = cKDTree(Xdb)
        t1 = time.perf_counter()
        m, p100 = kdtree_metrics(tree, Xq, yq, ydb)
        emit(Result("kdtree", 0, m, None, p100, t1 - t0, time.perf_counter() - t1))
        del tree
    for name in encoders:
        for n_bits in bits_list:
            enc = make_encoder(name, n_bits=n_bits, random_state=seed, **(encoder_params or {}).get(name, {}))
            t0 = time.perf_counter()
            enc.fit(X[train], y[train])
            t1 = time.perf_counter()
            q_codes, db_codes = enc.encode(Xq), enc.encode(Xdb)
            t2 = time.perf_counter()
            m, p_r2, p100, pr = hamming_metrics(q_codes, db_codes, yq, ydb, n_bits)
            emit(Result(name, n_bits, m, p_r2, p100, t1 - t0, t2 - t1, pr))
    return results


def load_features(path: str) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Read ``X`` (n, d) float and ``y`` (n,) int from an ``.npz`` file (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            X, y = np.asarray(z["X"], dtype=np.float64), np.asarray(z["y"])
    except KeyError as e:
        raise HashdupError(f"{path}: a features file holds arrays X and y; {e} is missing") from e
    except (OSError, ValueError) as e:
        raise HashdupError(f"{path}: not a readable .npz features file") from e
    if X.ndim != 2 or y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise HashdupError(f"{path}: X must be (n, d) float and y (n,) int, got {X.shape} and {y.shape} {y.dtype}")
    return X, y.astype(np.int64)


def plot_pr(results: Sequence[Result], path: str) -> None:
    """Precision-recall curves (Hamming radius swept from 0 to bits), one panel per code length, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise HashdupError("--plot needs matplotlib: pip install 'hashdup[plot]'") from e
    lengths = sorted({r.bits for r in results if r.pr is not None})
    fig, axes = plt.subplots(1, max(len(lengths), 1), figsize=(4.5 * max(len(lengths), 1), 4), squeeze=False)
    for ax, b in zip(axes[0], lengths, strict=False):
        for r in results:
            if r.bits == b and r.pr is not None:
                precision, recall = r.pr
                ax.plot(recall, precision, marker=".", markersize=3, label=f"{r.encoder} (mAP {r.map:.2f})")
        ax.set(title=f"{b} bits", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
