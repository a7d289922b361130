"""ITML + LSH (Davis et al. 2007; Jain, Kulis & Grauman 2008): what the Bregman projections promise."""

import numpy as np
import pytest

from hashdup import bits
from hashdup.encoders import Pairs, make_encoder
from hashdup.encoders.itml import ITMLHash, distance_bounds, itml, label_pairs, metric_factor
from hashdup.encoders.pca import pca
from hashdup.errors import HashdupError

FAST = {"n_constraints": 2000, "max_iter": 50}


def _triangle(n=300, seed=0):
    """Three tight classes at the corners of a triangle (side 10) in dims 0-1; dim 2 is noise (std 3) only."""
    rng = np.random.default_rng(seed)
    y = rng.integers(3, size=n).astype(np.int64)
    angle = 2 * np.pi * y / 3
    corners = 10 / np.sqrt(3) * np.column_stack([np.cos(angle), np.sin(angle), np.zeros(n)])
    return corners + rng.standard_normal((n, 3)) * [0.05, 0.05, 3.0], y


def _sq_dist(X, pairs, A):
    D = X[pairs.i] - X[pairs.j]
    return np.einsum("ij,jk,ik->i", D, A, D)


def _satisfied(p, similar, u, l):
    return np.where(similar, p <= u, p >= l)


# --- the Bregman projection itself ---------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma, expected", [(1.0, 1.6), (3.0, 16 / 13), (np.inf, 1.0)])
def test_one_projection_meets_the_moved_target(gamma, expected):
    """One similar pair at squared distance 4 with u = 1: the projection makes d_A equal the target ξ, which moves
    from u towards 4 by the amount the slack penalty γ allows (α = γ/(γ+1)(1/p − 1/ξ), 1/ξ ← 1/ξ + α/γ)."""
    r = itml(np.array([[2.0, 0.0]]), [True], 1.0, 10.0, gamma=gamma, max_iter=1)
    np.testing.assert_allclose(r.slack, [expected], rtol=1e-12)
    np.testing.assert_allclose(2.0**2 * r.A[0, 0], expected, rtol=1e-12)  # d_A = ξ after the projection
    np.testing.assert_allclose(r.A, np.diag([expected / 4, 1.0]), atol=1e-15)  # only the pair's direction changes


def test_dissimilar_pair_is_pushed_out_and_satisfied_pair_left_alone():
    r = itml(np.array([[1.0, 0.0], [0.0, 3.0]]), [False, False], 0.5, 4.0, gamma=np.inf, max_iter=1)
    np.testing.assert_allclose(r.A, np.diag([4.0, 1.0]), rtol=1e-12)  # 1 → 4 exactly; 9 ≥ 4 already
    np.testing.assert_array_equal(r.duals, [r.duals[0], 0.0])
    assert r.duals[0] > 0


def test_converged_solution_satisfies_the_optimality_conditions():
    X, y = _triangle()
    pairs = label_pairs(y, 500, np.random.default_rng(1))
    D = X[pairs.i] - X[pairs.j]
    u, l = distance_bounds(X, 5.0, 95.0, np.random.default_rng(2))
    r = itml(D, pairs.similar, u, l, gamma=1.0, max_iter=2000, tol=1e-9)
    assert r.converged
    p = np.einsum("ij,jk,ik->i", D, r.A, D)
    s, xi, lam = pairs.similar, r.slack, r.duals
    assert (lam >= 0).all()
    # feasibility against the moved targets ξ, complementary slackness for the active constraints
    assert (p[s] <= xi[s] * (1 + 1e-4)).all() and (p[~s] >= xi[~s] * (1 - 1e-4)).all()
    np.testing.assert_allclose(p[lam > 1e-9], xi[lam > 1e-9], rtol=1e-4)
    # the targets move with the duals: 1/ξ = 1/ξ0 − δλ/γ
    xi0 = np.where(s, u, l)
    np.testing.assert_allclose(1 / xi, 1 / xi0 - np.where(s, 1.0, -1.0) * lam, rtol=1e-9)


def test_zero_distance_pairs_are_refused_by_the_solver():
    with pytest.raises(ValueError, match="zero distance"):
        itml(np.array([[1.0, 0.0], [0.0, 0.0]]), [True, False], 1.0, 2.0)


def test_a_metric_that_is_not_positive_definite_is_refused():
    with pytest.raises(HashdupError, match=r"lost positive definiteness.*-4"):
        itml(np.array([[0.0, 2.0]]), [True], 1.0, 2.0, A0=np.diag([1.0, -1.0]))


def test_metric_factor_refuses_a_matrix_that_is_not_positive_definite():
    L = metric_factor(np.array([[4.0, 2.0], [2.0, 2.0]]))
    np.testing.assert_allclose(L @ L.T, [[4.0, 2.0], [2.0, 2.0]])
    with pytest.raises(HashdupError, match=r"not positive definite.*-1"):
        metric_factor(np.array([[1.0, 0.0], [0.0, -1.0]]))


# --- constraints and bounds ----------------------------------------------------------------------------------------
def test_bounds_are_percentiles_of_squared_distances():
    X = np.array([[0.0], [1.0], [3.0]])  # squared distances 1, 4, 9
    assert distance_bounds(X, 0.0, 100.0, np.random.default_rng(0)) == (1.0, 9.0)
    assert distance_bounds(X, 50.0, 50.0, np.random.default_rng(0))[0] == 4.0


def test_label_pairs_are_half_similar_and_never_self_pairs():
    y = np.repeat(np.arange(10), [50, 1, 30, 30, 30, 30, 30, 30, 30, 30])  # a singleton class too
    pairs = label_pairs(y, 1001, np.random.default_rng(0))
    assert len(pairs) == 1001 and pairs.similar.sum() == 500
    np.testing.assert_array_equal(y[pairs.i] == y[pairs.j], pairs.similar)
    assert (pairs.i != pairs.j).all()
    assert 1 not in set(y[pairs.i[pairs.similar]])  # the singleton cannot anchor a similar pair
    assert set(y[pairs.i]) == set(range(10))


def test_label_pairs_with_one_kind_only():
    one_class = label_pairs(np.zeros(5, np.int64), 20, np.random.default_rng(0))
    assert one_class.similar.all() and (one_class.i != one_class.j).all()
    singletons = label_pairs(np.arange(5), 20, np.random.default_rng(0))
    assert not singletons.similar.any() and (singletons.i != singletons.j).all()


# --- the encoder ---------------------------------------------------------------------------------------------------
def test_learned_metric_satisfies_its_constraints_and_ignores_the_noise_dimension():
    X, y = _triangle()
    pairs = label_pairs(y, 2000, np.random.default_rng(1))
    enc = ITMLHash(n_bits=32, random_state=0, pca_dims=None, **FAST).fit(X, pairs=pairs)
    A, (u, l) = enc.metric_, enc.bounds_
    np.testing.assert_array_equal(A, A.T)
    assert np.linalg.eigvalsh(A)[0] > 0
    before = _satisfied(_sq_dist(X, pairs, np.eye(3)), pairs.similar, u, l).mean()
    after = _satisfied(_sq_dist(X, pairs, A), pairs.similar, u, l).mean()
    # with slack (γ = 1) a few targets may move off u and l; the problem is feasible, so nearly all hold
    assert before < 0.2 and after >= 0.95
    # the noise dimension is shrunk: a unit step along it costs far less than one along an informative axis
    assert A[2, 2] < 0.01 * min(A[0, 0], A[1, 1])
    # and codes separate the classes: same-class codes are much closer than other-class codes
    codes = bits.unpack(enc.encode(X), 32)
    same = y[:, None] == y[None, :]
    D = (codes[:, None, :] != codes[None, :, :]).sum(axis=2)
    assert D[same].mean() < 0.2 * D[~same].mean()


def test_label_supervision_learns_the_same_kind_of_metric():
    X, y = _triangle(seed=3)
    enc = ITMLHash(n_bits=16, random_state=0, pca_dims=None, **FAST).fit(X, y)
    assert enc.metric_[2, 2] < 0.01 * min(enc.metric_[0, 0], enc.metric_[1, 1])
    held_out = label_pairs(y, 2000, np.random.default_rng(9))
    assert _satisfied(_sq_dist(X, held_out, enc.metric_), held_out.similar, *enc.bounds_).mean() >= 0.9


def test_codes_are_lsh_in_the_learned_metric():
    """E[W Wᵀ] = n_bits · Pᵀ A P for W = Pᵀ Gᵀ R, R ~ N(0, I): the hyperplanes are Gaussian in the learned metric."""
    X, y = _triangle()
    X = np.column_stack([X, 0.01 * np.random.default_rng(0).standard_normal(len(X))])  # a 4th, tiny dimension
    enc = ITMLHash(n_bits=1024, random_state=0, pca_dims=3, **FAST).fit(X, y)
    assert enc.metric_.shape == (3, 3) and enc.projection_.shape == (4, 1024)
    mean, P, _ = pca(X, 3)
    np.testing.assert_array_equal(enc.mean_, mean)
    expected = P @ enc.metric_ @ P.T
    W = enc.projection_
    assert np.linalg.norm(W @ W.T / 1024 - expected) < 0.15 * np.linalg.norm(expected)


def test_pca_dims_is_capped_at_the_feature_count():
    X, y = _triangle()
    assert ITMLHash(n_bits=8, random_state=0, **FAST).fit(X, y).metric_.shape == (3, 3)  # default 64 > 3 features
    assert ITMLHash(n_bits=8, random_state=0, pca_dims=2, **FAST).fit(X, y).metric_.shape == (2, 2)


def test_self_and_zero_distance_pairs_are_dropped():
    X, y = _triangle(n=60)
    X[1] = X[0]  # a duplicate row
    good = label_pairs(y, 300, np.random.default_rng(1))
    good = Pairs(good.i[good.i + good.j > 1], good.j[good.i + good.j > 1], good.similar[good.i + good.j > 1])
    bad = Pairs(np.array([5, 0, 1]), np.array([5, 1, 0]), np.array([True, False, False]))
    both = Pairs(np.concatenate([bad.i, good.i]), np.concatenate([bad.j, good.j]),
                 np.concatenate([bad.similar, good.similar]))
    a = ITMLHash(n_bits=16, random_state=0, pca_dims=None, **FAST).fit(X, pairs=both)
    b = ITMLHash(n_bits=16, random_state=0, pca_dims=None, **FAST).fit(X, pairs=good)
    np.testing.assert_array_equal(a.metric_, b.metric_)
    assert a.encode(X).tobytes() == b.encode(X).tobytes()
    with pytest.raises(ValueError, match="i == j or zero distance"):
        ITMLHash(n_bits=16, random_state=0, pca_dims=None, **FAST).fit(X, pairs=bad)


def test_pairs_are_subsampled_and_combined_with_labels():
    X, y = _triangle()
    pairs = label_pairs(y, 5000, np.random.default_rng(1))
    enc = ITMLHash(n_bits=16, random_state=0, pca_dims=None, n_constraints=300, max_iter=50)
    calls = []
    enc.fit(X, y, pairs=pairs, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 50) for k in range(1, enc.n_iter_ + 1)]
    assert enc.metric_[2, 2] < 0.01 * min(enc.metric_[0, 0], enc.metric_[1, 1])


def test_supervision_is_required():
    enc = make_encoder("itml", n_bits=16, random_state=0)
    assert enc.supervision == "required"
    with pytest.raises(ValueError, match="labels"):
        enc.fit(_triangle()[0])
    with pytest.raises(ValueError, match="labels"):
        enc.fit(_triangle()[0], pairs=Pairs(np.zeros(0), np.zeros(0), np.zeros(0)))


def test_same_seed_same_bytes_and_another_seed_other_codes():
    X, y = _triangle()
    a = ITMLHash(n_bits=64, random_state=3, **FAST).fit(X, y).encode(X)
    b = ITMLHash(n_bits=64, random_state=3, **FAST).fit(X, y).encode(X)
    c = ITMLHash(n_bits=64, random_state=4, **FAST).fit(X, y).encode(X)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize("param, value, match", [
    ("pca_dims", 0, "pca_dims"), ("n_constraints", 1.5, "n_constraints"), ("max_iter", 0, "max_iter"),
    ("gamma", 0.0, "gamma"), ("u_percentile", 99.0, "u_percentile"), ("l_percentile", 101.0, "l_percentile"),
    ("tol", -1.0, "tol"),
])
def test_bad_parameters_are_refused(param, value, match):
    X, y = _triangle(n=30)
    with pytest.raises(ValueError, match=match):
        ITMLHash(n_bits=8, **{param: value}).fit(X, y)
