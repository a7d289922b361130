"""Spectral hashing and ITQ: what each paper (and its reference code) promises."""

import numpy as np
import pytest

from hashdup import bits
from hashdup.encoders import ITQ, SpectralHashing, load_encoder
from hashdup.encoders.itq import quantization_loss, random_rotation
from hashdup.encoders.spectral import enumerate_modes


def _box(n=2000, seed=0):
    """Uniform in [0, 10] × [0, 1]: a box ten times wider in x than in y."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (n, 2)) * [10.0, 1.0]


def _flips(b):
    """Changes of value along each column of a bool matrix."""
    return (b[1:] != b[:-1]).sum(axis=0)


# --- spectral hashing ---------------------------------------------------------------------------------------------
def test_spectral_modes_follow_the_wide_side_first():
    X = _box()
    enc = SpectralHashing(n_bits=16).fit(X)
    C = enc.components_
    assert C.shape == (2, 2) and C[0, 0] > 0.999  # first principal direction: +x
    R = enc.mx_ - enc.mn_
    np.testing.assert_allclose(R, [10.0, 1.0], rtol=0.05)  # y: slightly tilted by the sampled PCA
    modes = enc.modes_
    assert modes.shape == (16, 2) and ((modes != 0).sum(axis=1) == 1).all()  # one component per bit
    # (k / 10)² < (1 / 1)² for k ≤ 9: the first nine bits are x modes 1..9, before any y mode
    np.testing.assert_array_equal(modes[:9], np.c_[np.arange(1, 10), np.zeros(9, np.int64)])
    # then x mode 10 and y mode 1 (eigenvalues tie up to the sampled widths), then x modes 11..15; y mode 2 = x 20
    assert sorted(map(tuple, modes[9:11].tolist())) == [(0, 1), (10, 0)]
    np.testing.assert_array_equal(modes[11:], np.c_[np.arange(11, 16), np.zeros(5, np.int64)])
    eigenvalues = ((modes * np.pi / R) ** 2).sum(axis=1)
    assert (np.diff(eigenvalues) >= 0).all()


def test_spectral_kth_bit_flips_k_times_across_the_box():
    X = _box()
    enc = SpectralHashing(n_bits=16).fit(X)
    along_x = np.c_[np.linspace(0.05, 9.95, 20001), np.full(20001, 0.5)]
    b = bits.unpack(enc.encode(along_x), 16)
    x_bits = enc.modes_[:, 1] == 0
    np.testing.assert_array_equal(_flips(b)[x_bits], enc.modes_[x_bits, 0])
    along_y = np.c_[np.full(2001, 2.345), np.linspace(0.005, 0.995, 2001)]
    b = bits.unpack(enc.encode(along_y), 16)
    np.testing.assert_array_equal(_flips(b), ~x_bits)  # the y mode (k = 1) flips once, the x bits never


def _trainsh_modes(R, n_bits):
    """A line-by-line transcription of step 3 of trainSH.m (MATLAB's sort is stable)."""
    npca = len(R)
    max_mode = np.ceil((n_bits + 1) * R / R.max()).astype(int)
    n_modes = max_mode.sum() - len(max_mode) + 1
    modes = np.ones((n_modes, npca))
    m = 1
    for i in range(npca):
        modes[m : m + max_mode[i] - 1, i] = np.arange(2, max_mode[i] + 1)
        m += max_mode[i] - 1
    modes -= 1
    omegas = modes * (np.pi / R)
    eig_val = -(omegas**2).sum(axis=1)
    ii = np.argsort(-eig_val, kind="stable")
    return modes[ii[1 : n_bits + 1]].astype(np.int64)


@pytest.mark.parametrize("n_bits", [8, 16, 33, 64])
def test_spectral_mode_table_matches_trainsh(n_bits):
    rng = np.random.default_rng(n_bits)
    for R in [np.sort(rng.uniform(0.1, 5.0, min(n_bits, 12)))[::-1], np.array([2.0, 2.0, 1.0, 0.5, 1e-15]),
              np.array([3.0, 1.0, 1.0])]:  # ties, broken by component order
        np.testing.assert_array_equal(enumerate_modes(R, n_bits), _trainsh_modes(R, n_bits))


def test_spectral_bits_match_compresssh():
    """compressSH.m: U = prod over components of sin(ω (x − mn) + π/2), bits U > 0."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 12)) * np.linspace(3.0, 0.5, 12)
    enc = SpectralHashing(n_bits=24).fit(X)
    P = (X - enc.mean_) @ enc.components_ - enc.mn_
    omegas = enc.modes_ * (np.pi / (enc.mx_ - enc.mn_))
    U = np.prod(np.sin(P[:, None, :] * omegas[None] + np.pi / 2), axis=2)
    b = bits.unpack(enc.encode(X), 24)
    far = np.abs(U) > 1e-9  # away from the thresholds, where rounding cannot decide
    assert far.mean() > 0.99
    np.testing.assert_array_equal(b[far], (U > 0)[far])


def test_spectral_more_bits_than_features_and_constant_feature():
    X = np.c_[_box(), np.full(2000, 3.0)]  # a third, constant feature
    enc = SpectralHashing(n_bits=40).fit(X)
    assert enc.components_.shape == (3, 3) and enc.modes_.shape == (40, 3)
    assert (enc.modes_[:, 2] == 0).all()  # the zero-range component gives no mode
    assert (enc.mx_[2] - enc.mn_[2]) < 1e-12
    b = bits.unpack(enc.encode(X), 40)
    assert 0.4 < b.mean() < 0.6 and len(np.unique(b, axis=0)) > 1000
    a = SpectralHashing(n_bits=40, random_state=5).fit(X).encode(X)
    assert a.tobytes() == enc.encode(X).tobytes()


def test_spectral_refuses_identical_rows():
    with pytest.raises(ValueError, match="all 5 rows of X are identical"):
        SpectralHashing(n_bits=8).fit(np.ones((5, 3)))


# --- ITQ ----------------------------------------------------------------------------------------------------------
def _clusters(c=8, d=16, per=8, noise=0.15, seed=0):
    """Clusters at the 2^c vertices of a randomly rotated hypercube in c of d dimensions, plus small noise."""
    rng = np.random.default_rng(seed)
    vertices = np.array(np.meshgrid(*[[-1.0, 1.0]] * c)).reshape(c, -1).T
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0][:c]  # c orthonormal rows in d dimensions
    labels = np.repeat(np.arange(len(vertices)), per)
    return vertices[labels] @ Q + noise * rng.standard_normal((len(labels), d)) + 2.0, labels


def test_itq_loss_decreases_and_rotation_is_orthogonal():
    X, _ = _clusters()
    enc = ITQ(n_bits=8, random_state=0).fit(X)
    loss = enc.loss_
    assert loss.dtype == np.float64 and loss.shape == (51,)
    assert (np.diff(loss) <= 1e-9 * loss[:-1]).all()
    assert loss[-1] < 0.5 * loss[0]
    R = enc.rotation_
    np.testing.assert_allclose(R.T @ R, np.eye(8), atol=1e-10)
    np.testing.assert_allclose(enc.projection_, enc.components_ @ R, atol=1e-12)
    V = (X - enc.mean_) @ enc.components_
    assert quantization_loss(V, R) == pytest.approx(loss[-1], rel=1e-9)


def test_itq_beats_plain_pca_signs_on_clusters():
    X, labels = _clusters()
    enc = ITQ(n_bits=8, random_state=1).fit(X)
    V = (X - enc.mean_) @ enc.components_
    pca_loss = np.square(np.where(V >= 0, 1.0, -1.0) - V).sum()
    VR = V @ enc.rotation_
    itq_loss = np.square(np.where(VR >= 0, 1.0, -1.0) - VR).sum()
    assert pca_loss > 2 * itq_loss
    # the hypercube found: most clusters get one code of their own
    codes = enc.encode(X).view(np.uint64).ravel()
    pure = sum(len(np.unique(codes[labels == k])) == 1 for k in range(256))
    assert pure > 200 and len(np.unique(codes)) >= 240


def test_itq_is_seeded_and_saves_its_loss(tmp_path):
    X, _ = _clusters()
    a, b = ITQ(n_bits=8, random_state=3).fit(X), ITQ(n_bits=8, random_state=3).fit(X)
    assert a.encode(X).tobytes() == b.encode(X).tobytes()
    assert not np.allclose(ITQ(n_bits=8, random_state=4).fit(X).loss_[0], a.loss_[0])
    a.save(tmp_path / "itq.npz")
    back = load_encoder(tmp_path / "itq.npz")
    assert back.loss_.dtype == np.float64
    np.testing.assert_array_equal(back.loss_, a.loss_)
    np.testing.assert_array_equal(back.encode(X), a.encode(X))


def test_random_rotation_is_orthogonal_and_fixed_by_the_seed():
    R = random_rotation(16, np.random.default_rng(0))
    np.testing.assert_allclose(R.T @ R, np.eye(16), atol=1e-12)
    np.testing.assert_array_equal(R, random_rotation(16, np.random.default_rng(0)))
    # the QR sign fix: R = Q · upper-triangular with a positive diagonal
    G = np.random.default_rng(0).standard_normal((16, 16))
    assert (np.diag(R.T @ G) > 0).all()


def test_itq_parameters_are_checked():
    X, _ = _clusters()
    with pytest.raises(ValueError, match="n_bits=32 for 16 features"):
        ITQ(n_bits=32).fit(X)
    with pytest.raises(ValueError, match="n_iter=-1"):
        ITQ(n_bits=8, n_iter=-1).fit(X)
    assert ITQ(n_bits=8, n_iter=0, random_state=0).fit(X).loss_.shape == (1,)


def test_spectral_and_itq_same_seed_same_bytes_on_real_scale_data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((400, 30)) * np.linspace(2.0, 0.1, 30)
    for cls in (SpectralHashing, ITQ):
        a = cls(n_bits=24, random_state=11).fit(X).encode(X)
        b = cls(n_bits=24, random_state=11).fit(X).encode(X)
        assert a.tobytes() == b.tobytes()
