"""The estimator contract for every encoder, and what each paper promises."""

import numpy as np
import pytest

from hashdup import bits
from hashdup.encoders import ENCODERS, LSH, MedianPCA, load_encoder, make_encoder
from hashdup.errors import IndexFileError, NotFittedError


def _data(n=300, d=40, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.2, d)
    return rng.standard_normal((n, d)) * scales + 1.5


def _labels(X):
    """Four classes from the two leading coordinates, for encoders that learn from labels."""
    return ((X[:, 0] > 1.5).astype(np.int64) + 2 * (X[:, 1] > 1.5)).astype(np.int64)


#: Small training settings per encoder, so the contract checks below stay fast.
FAST_PARAMS: dict[str, dict] = {
    "itml": {"n_constraints": 2000, "max_iter": 20},
    "rbm": {"hidden": (32,), "pretrain_epochs": 5, "pretrain_batch": 20, "gaussian_lr": 0.01, "pretrain_lr": 0.1,
            "finetune_epochs": 20, "finetune_batch": 100, "finetune_lr": 0.01, "code_noise": 0.0, "min_steps": 0},
}


def make(name, **params):
    return make_encoder(name, **{**FAST_PARAMS.get(name, {}), **params})


def fit(enc, X):
    return enc.fit(X, _labels(X))


@pytest.fixture(params=sorted(ENCODERS))
def name(request):
    return request.param


def test_params_stored_verbatim_and_fit_returns_self(name):
    enc = make(name, n_bits=32, random_state=7)
    assert {"n_bits": 32, "random_state": 7}.items() <= enc.get_params().items()
    assert fit(enc, _data()) is enc
    assert enc.n_features_in_ == 40
    assert repr(enc).startswith(type(enc).__name__ + "(")


def test_unfitted_and_wrong_width_are_refused(name):
    enc = make(name, n_bits=16, random_state=0)
    with pytest.raises(NotFittedError):
        enc.encode(_data())
    fit(enc, _data())
    with pytest.raises(ValueError, match=r"39 features.*fitted with 40"):
        enc.encode(_data(d=39))
    with pytest.raises(ValueError, match="NaN"):
        enc.encode(np.full((2, 40), np.nan))


@pytest.mark.parametrize("n_bits", [8, 33, 40])
def test_codes_are_packed_and_padded(name, n_bits):
    X = _data()
    codes = fit(make(name, n_bits=n_bits, random_state=0), X).encode(X)
    assert codes.dtype == np.uint8 and codes.shape == (len(X), bits.row_bytes(n_bits))
    assert not bits.unpack(codes, codes.shape[1] * 8)[:, n_bits:].any()
    assert 0.2 < bits.unpack(codes, n_bits).mean() < 0.8


def test_same_seed_same_bytes(name):
    X = _data()
    a = fit(make(name, n_bits=32, random_state=3), X).encode(X)
    b = fit(make(name, n_bits=32, random_state=3), X).encode(X)
    assert a.tobytes() == b.tobytes()


def test_a_row_encodes_the_same_alone_and_in_a_batch(name):
    """A query must get exactly the code its image got at indexing time, bits near a threshold included."""
    X = _data(n=201)
    X[100] = X[50]  # a duplicate row: with an odd n its projection can be the median itself
    enc = fit(make(name, n_bits=32, random_state=0), X)
    batch = enc.encode(X)
    alone = np.vstack([enc.encode(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_array_equal(alone, batch)
    np.testing.assert_array_equal(enc.encode(X[37:]), batch[37:])


def test_save_load_round_trip(tmp_path, name):
    X = _data()
    enc = fit(make(name, n_bits=24, random_state=1), X)
    enc.save(tmp_path / "enc.npz")
    with np.load(tmp_path / "enc.npz", allow_pickle=False) as z:  # loadable with pickle disabled
        assert "__meta__" in z.files
    back = load_encoder(tmp_path / "enc.npz")
    assert type(back) is type(enc) and back.get_params() == enc.get_params()
    assert back.fingerprint() == enc.fingerprint()
    assert back.fingerprint() == enc.fingerprint()
    np.testing.assert_array_equal(back.encode(X), enc.encode(X))


def test_numpy_and_generator_parameters_are_saved(tmp_path, name):
    X = _data()
    enc = fit(make(name, n_bits=np.int64(16), random_state=np.random.default_rng(3)), X)
    enc.save(tmp_path / "enc.npz")
    back = load_encoder(tmp_path / "enc.npz")
    assert {"n_bits": 16, "random_state": None}.items() <= back.get_params().items()
    np.testing.assert_array_equal(back.encode(X), enc.encode(X))
    assert back.fingerprint() == enc.fingerprint()


def test_corrupt_encoder_file_is_refused(tmp_path, name):
    enc = fit(make(name, n_bits=16, random_state=1), _data())
    path = tmp_path / "enc.npz"
    enc.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError):
        load_encoder(path)


def test_fingerprint_tracks_fitted_state(name):
    X = _data()
    a = fit(make(name, n_bits=16, random_state=1), X)
    b = fit(make(name, n_bits=16, random_state=1), X + np.linspace(0, 1, X.shape[1]))
    assert len(a.fingerprint()) == 16
    assert a.fingerprint() != b.fingerprint()


def test_supervised_encoders_say_what_they_need(name):
    enc = make(name, n_bits=16, random_state=0)
    if enc.supervision == "required":
        with pytest.raises(ValueError, match="labels"):
            enc.fit(_data())
    with pytest.raises(ValueError, match="integer labels"):
        enc.fit(_data(), np.zeros(5, np.int64))


def test_unknown_encoder_and_bad_bits():
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("nope")
    with pytest.raises(ValueError, match="n_bits"):
        LSH(n_bits=4).fit(_data())


# --- LSH (Charikar 2002): Pr[bit differs] = θ / π ----------------------------------------------------------------
@pytest.mark.parametrize("theta", [0.1, 0.5, 1.0, 2.0, 3.0])
def test_lsh_collision_rate_is_one_minus_theta_over_pi(theta):
    d, n_pairs, n_bits = 32, 200, 512
    rng = np.random.default_rng(11)
    u = rng.standard_normal((n_pairs, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = rng.standard_normal((n_pairs, d))
    w -= (w * u).sum(1, keepdims=True) * u
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    v = np.cos(theta) * u + np.sin(theta) * w  # angle(u, v) = θ exactly
    train = np.vstack([u, -u])  # mean exactly 0: centring does not change the angles
    enc = LSH(n_bits=n_bits, random_state=5).fit(train)
    differ = (bits.unpack(enc.encode(u), n_bits) != bits.unpack(enc.encode(v), n_bits)).mean()
    # 102,400 bit comparisons over 512 shared planes: standard error ≈ 0.2 / sqrt(512) ≈ 0.009
    assert abs(differ - theta / np.pi) < 0.03


def test_lsh_centres_on_training_mean():
    X = _data() + 100.0  # far from the origin: without centring every bit would be the same
    b = bits.unpack(LSH(n_bits=64, random_state=0).fit(X).encode(X), 64)
    assert 0.35 < b.mean() < 0.65
    assert b.mean(axis=0).min() > 0.05 and b.mean(axis=0).max() < 0.95


# --- median thresholding of PCA projections -----------------------------------------------------------------------
def test_median_bits_are_balanced_and_follow_principal_directions():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((301, 24)) * 1.5 ** -np.arange(24.0) + 2.0  # variances well apart, axis by axis
    enc = MedianPCA(n_bits=16).fit(X)
    b = bits.unpack(enc.encode(X), 16)
    np.testing.assert_allclose(b.mean(axis=0), 150 / 301, atol=1e-9)  # exactly half above each median
    C = enc.components_
    np.testing.assert_allclose(C.T @ C, np.eye(16), atol=1e-9)
    # data scaled by decreasing factors along the axes: component i is axis i
    np.testing.assert_array_equal(np.argmax(np.abs(C), axis=0), np.arange(16))
    assert (C[np.argmax(np.abs(C), axis=0), np.arange(16)] > 0).all()  # fixed signs


def test_median_needs_enough_samples_and_features():
    with pytest.raises(ValueError, match="at least n_bits"):
        MedianPCA(n_bits=32).fit(_data(n=20))
    with pytest.raises(ValueError, match="n_features"):
        MedianPCA(n_bits=64).fit(_data(d=40))
