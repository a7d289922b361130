"""The RBM semantic-hashing encoder: its training curves, and codes that keep classes together."""

import numpy as np
import pytest

from hashdup import bits
from hashdup.encoders import Pairs
from hashdup.encoders.rbm import RBMHash

#: Settings for a few hundred rows: the defaults (batches of 100 and 1000, small steps) suit thousands.
SMALL = {"hidden": (48,), "pretrain_epochs": 8, "pretrain_batch": 20, "gaussian_lr": 0.01, "pretrain_lr": 0.1,
             "finetune_epochs": 15, "finetune_batch": 200, "finetune_lr": 0.01, "min_steps": 0}


def _classes(n=400, d=30, k=4, seed=0):
    """Gaussian classes: k random means (spread 1.2 per coordinate) with unit-variance noise, plus an offset."""
    rng = np.random.default_rng(seed)
    means = 1.2 * rng.standard_normal((k, d))
    y = np.arange(n) % k
    return means[y] + rng.standard_normal((n, d)) + 5.0, y.astype(np.int64)


@pytest.fixture(scope="module")
def fitted():
    X, y = _classes()
    return RBMHash(n_bits=16, random_state=0, **SMALL).fit(X, y), X, y


def test_rbm_reconstruction_error_falls_during_pretraining(fitted):
    enc, _, _ = fitted
    err = enc.pretrain_error_
    assert err.dtype == np.float64 and err.shape == (2, SMALL["pretrain_epochs"])
    assert (err[:, -1] < err[:, 0]).all()
    assert (err[:, -1] < 0.9 * err[:, 0]).all()


def test_nca_objective_rises_during_finetuning(fitted):
    enc, _, _ = fitted
    curve = enc.finetune_objective_
    assert curve.shape == (SMALL["finetune_epochs"],)
    assert curve.min() >= 0.0 and curve.max() <= 1.0
    assert curve[-3:].mean() > curve[:3].mean() + 0.05


def test_autoencoder_reconstruction_error_falls_without_labels():
    X, _ = _classes(n=300)
    enc = RBMHash(n_bits=16, random_state=0, **SMALL).fit(X)
    curve = enc.finetune_objective_
    assert curve[-1] < curve[0] and curve[-3:].mean() < 0.97 * curve[:3].mean()


def test_similar_pairs_act_as_classes():
    X, y = _classes(n=300)
    rng = np.random.default_rng(1)
    i = rng.integers(0, 300, 1500)
    j = rng.integers(0, 300, 1500)
    pairs = Pairs(i, j, y[i] == y[j])
    enc = RBMHash(n_bits=16, random_state=0, **SMALL).fit(X, pairs=pairs)
    assert enc.finetune_objective_[-3:].mean() > enc.finetune_objective_[:3].mean() + 0.05  # NCA, not autoencoder


def test_same_seed_same_bytes_and_other_seed_other_codes():
    X, y = _classes(n=200)
    a, b, c = (RBMHash(n_bits=16, random_state=s, **SMALL).fit(X, y).encode(X) for s in (5, 5, 6))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_a_row_encodes_the_same_alone_and_in_a_batch(fitted):
    enc, X, _ = fitted
    batch = enc.encode(X)
    alone = np.vstack([enc.encode(X[i : i + 1]) for i in range(0, len(X), 3)])
    np.testing.assert_array_equal(alone, batch[::3])
    assert enc.weights_.dtype == np.float64 and [W.shape for W, _ in enc.coefs] == [(30, 48), (48, 16)]


def test_codes_of_a_class_are_closer_than_codes_of_different_classes(fitted):
    enc, _, _ = fitted
    Xt, yt = _classes(n=400, seed=0)  # same class means as the training set
    Xt = Xt + np.random.default_rng(9).standard_normal(Xt.shape)  # new noise: held-out-like rows
    D = bits.hamming(enc.encode(Xt), enc.encode(Xt)).astype(float)
    same = yt[:, None] == yt[None, :]
    np.fill_diagonal(same, False)
    other = yt[:, None] != yt[None, :]
    assert D[same].mean() < 0.5 * D[other].mean()
    # nearest neighbour in Hamming space has the query's class for most rows
    np.fill_diagonal(D, np.inf)
    assert (yt[np.argmin(D, axis=1)] == yt).mean() > 0.8


def test_progress_counts_every_epoch():
    X, y = _classes(n=100)
    calls = []
    RBMHash(n_bits=8, random_state=0, **SMALL).fit(X, y, progress=lambda done, total: calls.append((done, total)))
    total = 2 * SMALL["pretrain_epochs"] + SMALL["finetune_epochs"]
    assert calls == [(k, total) for k in range(1, total + 1)]


@pytest.mark.parametrize("bad", [{"hidden": (0,)}, {"momentum": 1.0}, {"finetune_lr": 0.0}, {"code_noise": -1.0},
                                 {"finetune_batch": 0}])
def test_bad_parameters_are_refused(bad):
    X, y = _classes(n=50)
    with pytest.raises(ValueError, match=next(iter(bad))):
        RBMHash(n_bits=8, **{**SMALL, **bad}).fit(X, y)


def test_save_load_keeps_the_hidden_tuple_and_the_curves(tmp_path, fitted):
    from hashdup.encoders import load_encoder

    enc, X, _ = fitted
    enc.save(tmp_path / "rbm.npz")
    back = load_encoder(tmp_path / "rbm.npz")
    assert back.get_params() == enc.get_params() and back.hidden == (48,)
    np.testing.assert_array_equal(back.finetune_objective_, enc.finetune_objective_)
    np.testing.assert_array_equal(back.encode(X), enc.encode(X))


def test_small_training_sets_get_enough_updates():
    """With min_steps, a training set of a few dozen rows is trained for more epochs, not left near chance."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), 15)
    X = rng.standard_normal((4, 20))[y] * 2 + rng.standard_normal((60, 20))
    params = {**SMALL, "min_steps": 200, "pretrain_batch": 20, "finetune_batch": 60}
    enc = RBMHash(n_bits=8, random_state=0, **params).fit(X, y)
    assert enc.pretrain_error_.shape[1] == 67  # ceil(200 / 3 batches per epoch), more than the 8 asked
    assert len(enc.finetune_objective_) == 200  # one batch per epoch
    short = RBMHash(n_bits=8, random_state=0, **SMALL).fit(X, y)
    assert short.pretrain_error_.shape[1] == 8 and len(short.finetune_objective_) == 15
    assert enc.finetune_objective_[-1] > short.finetune_objective_[-1]


def test_batches_have_near_equal_sizes():
    """101 rows in batches of 100 are split 51 + 50, not 100 + 1 (a one-row CD step made a Gaussian RBM diverge on
    sample_data's 101 descriptors)."""
    from hashdup.encoders._rbm_layers import batches

    assert [len(b) for b in batches(np.arange(101), 100)] == [51, 50]
    assert [len(b) for b in batches(np.arange(9000), 100)] == [100] * 90
    assert [len(b) for b in batches(np.arange(7), 100)] == [7]
    assert sorted(np.concatenate(batches(np.arange(250)[::-1], 60)).tolist()) == list(range(250))
