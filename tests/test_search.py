"""Every search path equals a brute-force oracle, including the awkward cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashdup import bits
from hashdup.dedup.groups import connected_groups
from hashdup.index import HammingIndex, hamming, scan
from hashdup.io.codefile import CodeFile

from .oracles import make, oracle_distances, oracle_knn


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def path(request, monkeypatch):
    """Every test runs twice: through the compiled kernels / multi-index hashing, and through the numpy scan that
    HammingIndex uses for small jobs."""
    monkeypatch.setattr(hamming, "SMALL_WORK", 0 if request.param == "compiled" else 1 << 62)
    return request.param


params = st.tuples(st.integers(0, 60), st.integers(0, 6), st.integers(1, 200), st.integers(0, 2**31),
                   st.sampled_from([0.0, 0.3]))


@given(params, st.integers(1, 70))
@settings(max_examples=80, deadline=None)
def test_knn_equals_oracle(p, k):
    n, nq, n_bits, seed, dup = p
    db, q = make(n, nq, n_bits, seed, dup)
    D, I = HammingIndex(bits.pack(db), n_bits).knn(bits.pack(q), k)
    Do, Io = oracle_knn(oracle_distances(db, q), k)
    assert D.shape == I.shape == (nq, k)
    np.testing.assert_array_equal(D, Do)
    np.testing.assert_array_equal(I, Io)


@given(params, st.integers(0, 30))
@settings(max_examples=80, deadline=None)
def test_radius_equals_oracle(p, r):
    n, nq, n_bits, seed, dup = p
    db, q = make(n, nq, n_bits, seed, dup)
    lims, D, I = HammingIndex(bits.pack(db), n_bits).radius(bits.pack(q), r)
    Dall = oracle_distances(db, q)
    assert lims.shape == (nq + 1,) and lims[0] == 0 and lims[-1] == len(D) == len(I)
    for qi in range(nq):
        expected = sorted((int(Dall[qi, i]), i) for i in range(n) if Dall[qi, i] <= r)
        got = list(zip(D[lims[qi] : lims[qi + 1]].tolist(), I[lims[qi] : lims[qi + 1]].tolist(), strict=True))
        assert got == expected


@given(params, st.integers(0, 30))
@settings(max_examples=60, deadline=None)
def test_self_join_equals_oracle(p, r):
    n, _, n_bits, seed, dup = p
    db, _ = make(n, 0, n_bits, seed, dup)
    i, j, d = HammingIndex(bits.pack(db), n_bits).self_join(r)
    Dall = oracle_distances(db, db)
    expected = [(a, b, int(Dall[a, b])) for a in range(n) for b in range(a + 1, n) if Dall[a, b] <= r]
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == expected


def test_blocks_are_stitched_correctly(monkeypatch):
    """Small blocks force every code path that joins partial results across blocks."""
    monkeypatch.setattr(scan, "DB_BLOCK", 7)
    monkeypatch.setattr(scan, "QUERY_BLOCK", 3)
    monkeypatch.setattr(scan, "JOIN_BLOCK", 5)
    db, q = make(50, 10, 70, 3, dup_rate=0.3)
    idx = HammingIndex(bits.pack(db), 70)
    Dall = oracle_distances(db, q)
    D, I = idx.knn(bits.pack(q), 9)
    Do, Io = oracle_knn(Dall, 9)
    np.testing.assert_array_equal(I, Io)
    np.testing.assert_array_equal(D, Do)
    lims, D, I = idx.radius(bits.pack(q), 30)
    for qi in range(10):
        expected = sorted((int(Dall[qi, i]), i) for i in range(50) if Dall[qi, i] <= 30)
        a, b = lims[qi], lims[qi + 1]
        assert list(zip(D[a:b].tolist(), I[a:b].tolist(), strict=True)) == expected
    i, j, d = idx.self_join(32)
    Ddb = oracle_distances(db, db)
    expected = [(a, b, int(Ddb[a, b])) for a in range(50) for b in range(a + 1, 50) if Ddb[a, b] <= 32]
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == expected


def test_all_equal_codes_tie_by_id():
    codes = np.tile(bits.pack(np.ones((1, 64), bool)), (10, 1))
    D, I = HammingIndex(codes, 64).knn(codes[:1], 4)
    assert D.tolist() == [[0, 0, 0, 0]] and I.tolist() == [[0, 1, 2, 3]]
    i, _j, d = HammingIndex(codes, 64).self_join(0)
    assert len(i) == 45 and (d == 0).all()


def test_k_larger_than_n_pads_with_minus_one():
    codes = bits.pack(np.eye(3, 16, dtype=bool))
    D, I = HammingIndex(codes, 16).knn(codes, 5)
    assert (I[:, 3:] == -1).all() and (D[:, 3:] == -1).all()
    assert (I[:, 0] == [0, 1, 2]).all() and (D[:, 0] == 0).all()


def test_empty_index():
    empty = np.zeros((0, 8), np.uint8)
    _D, I = HammingIndex(empty, 64).knn(np.zeros((2, 8), np.uint8), 3)
    assert (I == -1).all()
    lims, _D, I = HammingIndex(empty, 64).radius(np.zeros((2, 8), np.uint8), 5)
    assert lims.tolist() == [0, 0, 0] and len(I) == 0
    assert all(len(a) == 0 for a in HammingIndex(empty, 64).self_join(3))


def test_index_over_an_open_code_file(tmp_path):
    db, q = make(40, 5, 100, 9)
    CodeFile.write(tmp_path / "c.hdc", bits.pack(db), 100, b"\0" * 16)
    idx = HammingIndex(CodeFile.open(tmp_path / "c.hdc"))
    assert idx.n_bits == 100 and len(idx) == 40
    np.testing.assert_array_equal(idx.knn(bits.pack(q), 40)[1], oracle_knn(oracle_distances(db, q), 40)[1])


def test_bad_arguments():
    idx = HammingIndex(np.zeros((4, 8), np.uint8), 64)
    with pytest.raises(ValueError, match="k must"):
        idx.knn(np.zeros((1, 8), np.uint8), 0)
    with pytest.raises(ValueError, match="radius"):
        idx.radius(np.zeros((1, 8), np.uint8), -1)
    with pytest.raises(ValueError, match="bytes per row"):
        idx.knn(np.zeros((1, 16), np.uint8), 1)
    with pytest.raises(ValueError, match="bits need"):
        HammingIndex(np.zeros((4, 8), np.uint8), 65)


def test_connected_groups():
    groups = connected_groups(8, [0, 1, 5, 3], [1, 2, 6, 7])
    assert [g.tolist() for g in groups] == [[0, 1, 2], [3, 7], [5, 6]]
    assert connected_groups(3, [], []) == []
    assert connected_groups(0, [], []) == []


def test_multi_index_cost_model():
    """Multi-index hashing is chosen for many queries at a small radius on a large index, never for a few."""
    big = HammingIndex(np.zeros((1_000_000, 8), np.uint8), 64)
    assert big._use_multi_index(5000, 3) and not big._use_multi_index(100, 3)
    assert not HammingIndex(np.zeros((12_000, 8), np.uint8), 64)._use_multi_index(10, 3)


def test_batches_of_radius_queries_on_the_multi_index_path_agree(path, monkeypatch):
    if path == "numpy":
        pytest.skip("the multi-index path is the compiled one")
    db, q = make(12_000, 100, 64, 11, dup_rate=0.01)
    idx = HammingIndex(bits.pack(db), 64)
    monkeypatch.setattr(HammingIndex, "_use_multi_index", lambda self, nq, r: True)
    got = idx.radius(bits.pack(q), 3)
    assert "multi_index" in idx.__dict__
    ref = scan.radius_scan(bits.pack(db), bits.pack(q), 3)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    i, j, d = idx.self_join(3)
    ri, rj, rd = scan.self_join_scan(bits.pack(db), 3)
    assert (i == ri).all() and (j == rj).all() and (d == rd).all() and len(i) > 50
