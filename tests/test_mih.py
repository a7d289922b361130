"""Multi-index hashing equals the brute-force oracle and the reference scan, including the awkward cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashdup import bits
from hashdup.index import mih, scan

from .oracles import oracle_distances, oracle_knn, oracle_radius


def oracle_join(db_bits, r):
    D = oracle_distances(db_bits, db_bits)
    n = len(db_bits)
    return [(a, b, int(D[a, b])) for a in range(n) for b in range(a + 1, n) if D[a, b] <= r]


def make(n, nq, n_bits, seed, kind="random"):
    """Database and query bits. ``kind``: random; dups (30 % copies with a few flipped bits); equal (all codes one
    code); star (every code one flipped bit away from one centre, so all pairwise distances are 0 or 2)."""
    rng = np.random.default_rng(seed)
    db = rng.random((n, n_bits)) < 0.5
    if kind == "dups" and n:
        copies = rng.random(n) < 0.3
        db[copies] = db[rng.integers(0, n, copies.sum())] ^ (rng.random((copies.sum(), n_bits)) < 0.03)
    elif kind == "equal":
        db[:] = db[:1] if n else db
    elif kind == "star" and n:
        db[:] = db[0]
        db[np.arange(n), rng.integers(0, n_bits, n)] ^= True
    q = rng.random((nq, n_bits)) < 0.5
    if n:
        near = rng.random(nq) < 0.6
        q[near] = db[rng.integers(0, n, near.sum())] ^ (rng.random((near.sum(), n_bits)) < 0.03)
    return db, q


def valid_m(n_bits, m):
    """Map any int (or None) onto a valid number of substrings for n_bits."""
    if m is None:
        return None
    lo = -(-n_bits // 64)
    return lo + m % (min(n_bits, lo + 9) - lo + 1)


params = st.tuples(st.integers(0, 50), st.integers(0, 5), st.sampled_from([8, 13, 40, 64, 100, 130]),
                   st.integers(0, 2**31), st.sampled_from(["random", "dups", "equal", "star"]),
                   st.one_of(st.none(), st.integers(0, 100)))


@given(params, st.integers(0, 24))
@settings(max_examples=60, deadline=None)
def test_radius_equals_oracle(p, r):
    n, nq, n_bits, seed, kind, m = p
    db, q = make(n, nq, n_bits, seed, kind)
    lims, D, I = mih.MultiIndex(bits.pack(db), n_bits, valid_m(n_bits, m)).radius(bits.pack(q), r)
    assert lims.dtype == np.int64 and D.dtype == np.int32 and I.dtype == np.int64
    assert lims.shape == (nq + 1,) and lims[0] == 0 and lims[-1] == len(D) == len(I)
    expected = oracle_radius(oracle_distances(db, q), r)
    for qi in range(nq):
        a, b = lims[qi], lims[qi + 1]
        assert list(zip(D[a:b].tolist(), I[a:b].tolist(), strict=True)) == expected[qi]


@given(params, st.integers(1, 60))
@settings(max_examples=60, deadline=None)
def test_knn_equals_oracle(p, k):
    n, nq, n_bits, seed, kind, m = p
    db, q = make(n, nq, n_bits, seed, kind)
    D, I = mih.MultiIndex(bits.pack(db), n_bits, valid_m(n_bits, m)).knn(bits.pack(q), k)
    Do, Io = oracle_knn(oracle_distances(db, q), k)
    assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == I.shape == (nq, k)
    np.testing.assert_array_equal(D, Do)
    np.testing.assert_array_equal(I, Io)


@given(params, st.integers(0, 24))
@settings(max_examples=60, deadline=None)
def test_self_join_equals_oracle(p, r):
    n, _, n_bits, seed, kind, m = p
    db, _ = make(n, 0, n_bits, seed, kind)
    i, j, d = mih.self_join(bits.pack(db), n_bits, r, valid_m(n_bits, m))
    assert i.dtype == j.dtype == np.int64 and d.dtype == np.int32
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == oracle_join(db, r)


@pytest.mark.parametrize("n_bits", [40, 64, 100])
def test_equals_reference_scan_with_planted_copies(n_bits):
    """A few thousand codes with 1 % near copies: every path (default m and others) equals scan.py."""
    rng = np.random.default_rng(n_bits)
    n = 3000
    db = rng.random((n, n_bits)) < 0.5
    copies = rng.choice(n, n // 100, replace=False)
    db[copies] = db[rng.integers(0, n, len(copies))]
    db[copies, rng.integers(0, n_bits, len(copies))] ^= True
    codes = bits.pack(db)
    queries = codes[rng.integers(0, n, 200)] ^ (rng.random((200, codes.shape[1])) < 0.01).astype(np.uint8)
    queries = bits.pack(bits.unpack(queries, n_bits))       # keep padding bits zero
    for r in (0, 1, 3, 6):
        ref = scan.self_join_scan(codes, r)
        for m in (None, 2, 3, 5):
            got = mih.self_join(codes, n_bits, r, m)
            for a, b in zip(ref, got, strict=True):
                np.testing.assert_array_equal(a, b)
        ref = scan.radius_scan(codes, queries, r)
        for m in (None, 3):
            for a, b in zip(ref, mih.MultiIndex(codes, n_bits, m).radius(queries, r), strict=True):
                np.testing.assert_array_equal(a, b)
    index = mih.MultiIndex(codes, n_bits)
    for k in (1, 12):
        for a, b in zip(scan.knn_scan(codes, queries, k), index.knn(queries, k), strict=True):
            np.testing.assert_array_equal(a, b)


def test_all_codes_equal():
    """One run of equal keys: every pair, each once, including when the pairs overflow a chunk's first guess."""
    codes = np.tile(bits.pack(np.random.default_rng(0).random((1, 100)) < 0.5), (300, 1))
    for r, m in ((0, None), (0, 2), (3, 2), (3, 4), (9, 4), (2, 2)):
        i, j, d = mih.self_join(codes, 100, r, m)
        assert len(i) == 300 * 299 // 2 and (d == 0).all() and (i < j).all()
        assert (np.lexsort((j, i)) == np.arange(len(i))).all()
    D, I = mih.MultiIndex(codes, 100).knn(codes[:2], 5)
    assert D.tolist() == [[0] * 5] * 2 and I.tolist() == [[0, 1, 2, 3, 4]] * 2


def test_runs_longer_than_the_gather_buffer(monkeypatch):
    """Runs of equal keys longer than the chunk's buffer are read in place past its end."""
    monkeypatch.setattr(mih, "_GATHER_MIN", 1)
    monkeypatch.setattr(mih, "_CODES_PER_THREAD", 1)
    db, _ = make(400, 0, 64, 5, "dups")
    db[:200, :32] = db[0, :32]                       # 200 codes share their first half: long runs for m = 2
    codes = bits.pack(db)
    for r, m in ((1, 2), (3, 2), (3, 4)):
        for a, b in zip(scan.self_join_scan(codes, r), mih.self_join(codes, 64, r, m, n_threads=3), strict=True):
            np.testing.assert_array_equal(a, b)


def test_huge_balls_fall_back_to_key_scans():
    """One 64-bit substring at radius 3 (43 745 keys per ball, more than the codes): keys are compared instead."""
    db, q = make(300, 20, 64, 7, "dups")
    codes = bits.pack(db)
    for a, b in zip(scan.self_join_scan(codes, 3), mih.self_join(codes, 64, 3, m=1), strict=True):
        np.testing.assert_array_equal(a, b)
    index = mih.MultiIndex(codes, 64, m=1)
    for a, b in zip(scan.radius_scan(codes, bits.pack(q), 3), index.radius(bits.pack(q), 3), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(scan.knn_scan(codes, bits.pack(q), 7), index.knn(bits.pack(q), 7), strict=True):
        np.testing.assert_array_equal(a, b)


def test_knn_budget_falls_back_to_a_scan(monkeypatch):
    monkeypatch.setattr(mih, "_KNN_BUDGET", 0.0)
    db, q = make(200, 10, 100, 3, "dups")
    D, I = mih.MultiIndex(bits.pack(db), 100).knn(bits.pack(q), 9)
    Do, Io = oracle_knn(oracle_distances(db, q), 9)
    np.testing.assert_array_equal(D, Do)
    np.testing.assert_array_equal(I, Io)


def test_read_only_memmap(tmp_path):
    db, q = make(500, 8, 64, 11, "dups")
    path = tmp_path / "codes.u8"
    bits.pack(db).tofile(path)
    codes = np.memmap(path, dtype=np.uint8, mode="r", shape=(500, 8))
    index = mih.MultiIndex(codes, 64)
    assert np.shares_memory(index.words_, codes)
    Dall = oracle_distances(db, q)
    lims, D, I = index.radius(bits.pack(q), 10)
    assert [list(zip(D[lims[x] : lims[x + 1]].tolist(), I[lims[x] : lims[x + 1]].tolist(), strict=True))
            for x in range(8)] == \
        oracle_radius(Dall, 10)
    np.testing.assert_array_equal(index.knn(bits.pack(q), 4)[1], oracle_knn(Dall, 4)[1])
    assert list(zip(*(a.tolist() for a in index.self_join(6)), strict=True)) == oracle_join(db, 6)


def test_empty_and_single():
    for n in (0, 1):
        codes = np.zeros((n, 8), np.uint8)
        index = mih.MultiIndex(codes, 64)
        D, I = index.knn(np.zeros((2, 8), np.uint8), 3)
        assert (D == -1).all() and (I == -1).all() if n == 0 else I.tolist() == [[0, -1, -1]] * 2
        lims, D, I = index.radius(np.zeros((2, 8), np.uint8), 5)
        assert lims.tolist() == [0, n, 2 * n] and I.tolist() == [0] * 2 * n
        assert all(len(a) == 0 for a in index.self_join(3))
    lims, D, I = mih.MultiIndex(np.zeros((4, 8), np.uint8), 64).radius(np.zeros((0, 8), np.uint8), 2)
    assert lims.tolist() == [0] and len(D) == len(I) == 0


def test_substrings_and_parameters():
    for n_bits in (8, 40, 64, 100, 1024):
        for m in range(-(-n_bits // 64), min(n_bits, 70) + 1):
            starts, widths = mih.substring_bounds(n_bits, m)
            assert widths.sum() == n_bits and widths.max() - widths.min() <= 1 and widths.max() <= 64
            assert (starts == np.concatenate(([0], np.cumsum(widths)[:-1]))).all()
    assert mih.default_m(10**6, 64) == 3 and mih.default_m(10**7, 64) == 3 and mih.default_m(10**6, 256) == 13
    assert mih.default_m(2, 1024) == 1024 and mih.default_m(10**6, 1024) == 51 and mih.default_m(10, 8) == 2
    assert mih.join_m(10**6, 64, 3) == 4 and mih.join_m(10**6, 64, 0) == 1 and mih.join_m(20, 64, 3) is None
    # the refined pigeonhole bound: radius m·r' + a probes r' on the first a + 1 substrings, r' − 1 on the rest
    assert mih.substring_radii(7, 3).tolist() == [2, 2, 1] and mih.substring_radii(2, 4).tolist() == [0, 0, 0, -1]
    probes, cands = mih.expected_work(2**16, 64, 3, 4)
    assert probes == 4 and cands == 4.0


def test_bad_arguments():
    codes = np.zeros((4, 8), np.uint8)
    with pytest.raises(ValueError, match="m must be between 1 and 64"):
        mih.MultiIndex(codes, 64, m=65)
    with pytest.raises(ValueError, match="m must be between 2 and 100"):
        mih.self_join(np.zeros((4, 16), np.uint8), 100, 1, m=1)
    with pytest.raises(ValueError, match="bits need"):
        mih.MultiIndex(codes, 65)
    with pytest.raises(ValueError, match="radius"):
        mih.MultiIndex(codes, 64).radius(codes, -1)
    with pytest.raises(ValueError, match="k must"):
        mih.MultiIndex(codes, 64).knn(codes, 0)
    with pytest.raises(ValueError, match="bytes per row"):
        mih.MultiIndex(codes, 64).knn(np.zeros((1, 16), np.uint8), 1)
    with pytest.raises(ValueError, match="n_threads"):
        mih.MultiIndex(codes, 64, n_threads=0)
