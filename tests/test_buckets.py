"""LSH bucket tables: candidates equal a bit-level oracle, results are exact on them, files round-trip and refuse
corruption, and recall behaves as the analysis says."""

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashdup import bits
from hashdup.errors import IndexFileError
from hashdup.index import scan
from hashdup.index.buckets import (
    HEADER_SIZE,
    MAGIC,
    BucketTables,
    default_key_bits,
    default_n_tables,
    draw_positions,
    probe_masks,
    recall_estimate,
)
from hashdup.io.codefile import CodeFile

from .oracles import make


def with_flips(db_bits, rows, n_flips, rng):
    """Copies of ``db_bits[rows]`` with exactly ``n_flips`` distinct bits flipped in each."""
    q = db_bits[rows].copy()
    for r in range(len(q)):
        q[r, rng.choice(q.shape[1], n_flips, replace=False)] ^= True
    return q


def oracle_candidates(bt, db_bits, q_bits, probes):
    """Row sets from the definition: some table's key of the row is within ``probes`` bits of the query's key."""
    pos = bt.positions.astype(np.int64)
    out = []
    for q in q_bits:
        found = np.zeros(len(db_bits), bool)
        for t in range(bt.n_tables):
            found |= (db_bits[:, pos[t]] != q[pos[t]]).sum(axis=1) <= probes
        out.append(np.flatnonzero(found))
    return out


def oracle_knn_on(db_bits, q, cand, k):
    d = (db_bits[cand] != q).sum(axis=1)
    order = sorted(zip(d.tolist(), cand.tolist(), strict=True))[:k]
    D, I = np.full(k, -1), np.full(k, -1)
    D[: len(order)] = [a for a, _ in order]
    I[: len(order)] = [b for _, b in order]
    return D, I


params = st.tuples(st.integers(0, 70), st.integers(0, 12), st.integers(8, 200), st.integers(0, 2**31),
                   st.sampled_from([0.0, 0.3]))


@given(params, st.integers(1, 6), st.integers(1, 12), st.integers(0, 2), st.integers(1, 25))
@settings(max_examples=80, deadline=None)
def test_query_is_exact_on_the_oracle_candidates(p, n_tables, key_bits, probes, k):
    n, nq, n_bits, seed, dup = p
    key_bits = min(key_bits, n_bits)
    db, q = make(n, nq, n_bits, seed, dup)
    codes, Q = bits.pack(db), bits.pack(q)
    bt = BucketTables.build(codes, n_bits, n_tables=n_tables, key_bits=key_bits, random_state=seed)
    expected = oracle_candidates(bt, db, q, probes)
    lims, C = bt.candidates(Q, probes=probes)
    assert lims.shape == (nq + 1,) and lims[0] == 0 and lims[-1] == len(C)
    for qi in range(nq):
        np.testing.assert_array_equal(C[lims[qi] : lims[qi + 1]], expected[qi])
    D, I = bt.query(codes, Q, k, probes=probes)
    assert D.shape == I.shape == (nq, k) and D.dtype == np.int32 and I.dtype == np.int64
    for qi in range(nq):
        Do, Io = oracle_knn_on(db, q[qi], expected[qi], k)
        np.testing.assert_array_equal(D[qi], Do)
        np.testing.assert_array_equal(I[qi], Io)


def test_a_large_batch_runs_in_parallel_chunks_and_stays_exact():
    """Enough queries for the multi-threaded path (chunks of queries, one de-duplication bitset each)."""
    db, q = make(3000, 300, 64, 8, dup_rate=0.2, flip=0.05)
    codes, Q = bits.pack(db), bits.pack(q)
    bt = BucketTables.build(codes, 64, n_tables=3, key_bits=9, random_state=1)
    D, I = bt.query(codes, Q, 7, probes=1)
    lims, C = bt.candidates(Q, probes=1)
    for qi in range(len(q)):
        Do, Io = oracle_knn_on(db, q[qi], C[lims[qi] : lims[qi + 1]], 7)
        np.testing.assert_array_equal(D[qi], Do)
        np.testing.assert_array_equal(I[qi], Io)


@given(params, st.integers(1, 4), st.integers(1, 16), st.integers(0, 2))
@settings(max_examples=40, deadline=None)
def test_exact_copy_is_found_first_and_one_bit_away_with_a_probe(p, n_tables, key_bits, probes):
    n, _, n_bits, seed, dup = p
    if n == 0:
        return
    db, _ = make(n, 0, n_bits, seed, dup)
    codes = bits.pack(db)
    bt = BucketTables.build(codes, n_bits, n_tables=n_tables, key_bits=min(key_bits, n_bits), random_state=seed)
    D, I = bt.query(codes, codes, 3, probes=probes)
    first_equal = np.array([np.flatnonzero((db == row).all(axis=1))[0] for row in db])
    assert (D[:, 0] == 0).all()
    np.testing.assert_array_equal(I[:, 0], first_equal)  # ties by id: the lowest equal row comes first
    if probes >= 1:
        rng = np.random.default_rng(seed)
        q = with_flips(db, np.arange(n), 1, rng)
        D, I = bt.query(codes, bits.pack(q), 1, probes=probes)
        assert (D[:, 0] <= 1).all()


@pytest.mark.parametrize("n_bits, key_bits, probes", [(64, 16, 0), (64, 16, 1), (96, 24, 2), (40, 8, 0)])
def test_disjoint_keys_covering_every_bit_find_everything_within_the_pigeonhole_radius(n_bits, key_bits, probes):
    """With L = n_bits / m, the tables of one permutation partition the bits, so every code within
    L (p + 1) − 1 bits shares a probed bucket with the query: the result equals exact search to that radius."""
    n_tables = n_bits // key_bits
    radius = n_tables * (probes + 1) - 1
    rng = np.random.default_rng(n_bits + probes)
    db, _ = make(400, 0, n_bits, 1)
    q = np.concatenate([with_flips(db, rng.integers(0, 400, 10), f, rng) for f in range(radius + 2)])
    codes, Q = bits.pack(db), bits.pack(q)
    bt = BucketTables.build(codes, n_bits, n_tables=n_tables, key_bits=key_bits, random_state=7)
    assert sorted(bt.positions.ravel().tolist()) == list(range(n_bits))
    lims, _Dr, Ir = scan.radius_scan(codes, Q, radius)
    lims_c, C = bt.candidates(Q, probes=probes)
    for qi in range(len(Q)):
        assert set(Ir[lims[qi] : lims[qi + 1]].tolist()) <= set(C[lims_c[qi] : lims_c[qi + 1]].tolist())


def test_recall_grows_with_tables_and_probes_and_matches_the_estimate():
    rng = np.random.default_rng(0)
    n, n_bits, key_bits, flips = 20000, 64, 14, 6
    db = rng.random((n, n_bits)) < 0.5
    src = rng.integers(0, n, 1500)
    q = with_flips(db, src, flips, rng)
    codes, Q = bits.pack(db), bits.pack(q)
    recall = {}
    for L in (1, 2, 4, 8):
        bt = BucketTables.build(codes, n_bits, n_tables=L, key_bits=key_bits, random_state=3)
        for p in (0, 1, 2):
            _D, I = bt.query(codes, Q, 1, probes=p)
            recall[L, p] = np.mean(I[:, 0] == src)
            # the estimate is for this construction (disjoint keys within a permutation); ± sampling noise
            assert abs(recall[L, p] - recall_estimate(flips, n_bits, key_bits, L, p)) < 0.04, (L, p, recall)
    for p in (0, 1, 2):
        assert [recall[L, p] for L in (1, 2, 4, 8)] == sorted(recall[L, p] for L in (1, 2, 4, 8))
    for L in (1, 2, 4, 8):
        assert [recall[L, p] for p in (0, 1, 2)] == sorted(recall[L, p] for p in (0, 1, 2))
    assert recall[1, 0] < 0.3 and recall[8, 0] > 0.8 and recall[2, 2] > 0.95 and recall[4, 1] > 0.97


def test_recall_estimate_agrees_with_simulation_of_the_key_draw():
    """The exact formula for disjoint keys, checked by sampling flip patterns against drawn keys."""
    rng = np.random.default_rng(1)
    for n_bits, m, L, p, d in [(64, 20, 3, 1, 6), (64, 16, 2, 0, 3), (128, 24, 5, 1, 12), (32, 10, 4, 0, 3)]:
        pos = draw_positions(n_bits, L, m, np.random.default_rng(5)).astype(np.int64)
        F = np.zeros((20000, n_bits), bool)
        np.put_along_axis(F, np.argsort(rng.random(F.shape), axis=1)[:, :d], True, axis=1)
        found = np.zeros(len(F), bool)
        for t in range(L):
            found |= F[:, pos[t]].sum(axis=1) <= p
        assert abs(found.mean() - recall_estimate(d, n_bits, m, L, p)) < 0.015


def test_write_open_round_trip(tmp_path):
    db, q = make(300, 20, 100, 4, dup_rate=0.2)
    codes, Q = bits.pack(db), bits.pack(q)
    CodeFile.write(tmp_path / "c.hdc", codes, 100, bytes(range(16)))
    cf = CodeFile.open(tmp_path / "c.hdc")
    bt = BucketTables.build(cf, n_tables=3, key_bits=7, random_state=2)
    assert bt.fingerprint == bytes(range(16))
    bt.write(tmp_path / "b.hdb")
    back = BucketTables.open(tmp_path / "b.hdb")
    assert (back.n_bits, back.n_rows, back.n_tables, back.key_bits, back.fingerprint) == (
        100, 300, 3, 7, bytes(range(16)))
    for name in ("positions", "offsets", "ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(bt, name))
        assert not getattr(back, name).flags.writeable
    for p in (0, 1, 2):
        for a, b in zip(bt.query(codes, Q, 5, probes=p), back.query(cf, Q, 5, probes=p), strict=True):
            np.testing.assert_array_equal(a, b)
    assert (tmp_path / "b.hdb").stat().st_size % 8 == 0
    assert "b.hdb" in repr(back)


@given(st.integers(0, 30), st.integers(8, 300), st.integers(1, 5), st.integers(1, 9), st.integers(0, 2**31))
@settings(max_examples=30, deadline=None)
def test_file_round_trip_any_shape(n, n_bits, n_tables, key_bits, seed):
    import tempfile
    from pathlib import Path

    db, q = make(n, 4, n_bits, seed)
    bt = BucketTables.build(bits.pack(db), n_bits, n_tables=n_tables, key_bits=min(key_bits, n_bits),
                            random_state=seed)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "b.hdb"
        bt.write(path)
        back = BucketTables.open(path)
        for name in ("positions", "offsets", "ids"):
            np.testing.assert_array_equal(getattr(back, name), getattr(bt, name))
        pairs = zip(bt.query(bits.pack(db), bits.pack(q), 3), back.query(bits.pack(db), bits.pack(q), 3), strict=True)
        for a, b in pairs:
            np.testing.assert_array_equal(a, b)
        del back


def test_header_layout_is_documented(tmp_path):
    db, _ = make(10, 0, 70, 0)
    BucketTables.build(bits.pack(db), 70, n_tables=2, key_bits=3, fingerprint=b"\1" * 16).write(tmp_path / "b")
    data = (tmp_path / "b").read_bytes()
    fields = struct.unpack_from("<8sHHIIIIIQ16s", data)
    assert fields == (MAGIC, 1, HEADER_SIZE, 70, 16, 2, 3, 0, 10, b"\1" * 16)
    # positions (2×3 uint16 → 16 bytes padded), offsets (2×9 uint32 → 72), ids (2×10 uint32 → 80)
    assert len(data) == HEADER_SIZE + 16 + 72 + 80


def _written(tmp_path, n=20, n_bits=64):
    db, _ = make(n, 0, n_bits, 0)
    path = tmp_path / "b.hdb"
    BucketTables.build(bits.pack(db), n_bits, n_tables=2, key_bits=4, random_state=0).write(path)
    return path


@pytest.mark.parametrize(
    "offset, value, message",
    [
        (0, b"HDUPCODE", "magic"),
        (8, struct.pack("<H", 2), "version"),
        (10, struct.pack("<H", 64), "header size"),
        (12, struct.pack("<I", 60), "checksum"),  # same stride, sizes unchanged: only the checksum notices
        (12, struct.pack("<I", 2000), "n_bits"),
        (12, struct.pack("<I", 200), "row stride"),
        (20, struct.pack("<I", 3), "bytes"),
        (20, struct.pack("<I", 0), "n_tables"),
        (24, struct.pack("<I", 5), "bytes"),
        (24, struct.pack("<I", 65), "key_bits"),
        (28, struct.pack("<I", 1), "flags"),
        (32, struct.pack("<Q", 21), "bytes"),
        (40, b"\xff" * 16, "checksum"),
        (56, b"\x00" * 16, "checksum"),
        (HEADER_SIZE + 1, b"\x3f", "checksum"),
        (-5, b"\x7f", "checksum"),
    ],
)
def test_corruption_is_rejected(tmp_path, offset, value, message):
    path = _written(tmp_path)
    data = bytearray(path.read_bytes())
    offset %= len(data)
    data[offset : offset + len(value)] = value
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=message) as e:
        BucketTables.open(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("cut", [0, 7, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 8, -8])
def test_truncated_file_is_rejected(tmp_path, cut):
    path = _written(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: cut % len(data)])
    with pytest.raises(IndexFileError, match=str(path)):
        BucketTables.open(path)


def test_missing_file_and_appended_bytes(tmp_path):
    with pytest.raises(IndexFileError, match="cannot read"):
        BucketTables.open(tmp_path / "nope.hdb")
    path = _written(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0" * 8)
    with pytest.raises(IndexFileError, match="bytes"):
        BucketTables.open(path)


def test_consistent_checksum_but_impossible_content_is_rejected(tmp_path):
    """A file whose checksum is right but whose arrays would make a query read out of bounds."""
    db, _ = make(20, 0, 64, 0)
    good = BucketTables.build(bits.pack(db), 64, n_tables=2, key_bits=4)
    ids = np.array(good.ids)
    ids[1, 3] = 20
    bad = [BucketTables(64, 20, good.positions, good.offsets, ids),
           BucketTables(64, 20, good.positions, good.offsets[:, ::-1].copy(), good.ids),
           BucketTables(64, 20, np.full_like(good.positions, 64), good.offsets, good.ids)]
    for bt, message in zip(bad, ["beyond n_rows", "offsets", "position"], strict=True):
        bt.write(tmp_path / "b.hdb")
        with pytest.raises(IndexFileError, match=message):
            BucketTables.open(tmp_path / "b.hdb")


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_databases(tmp_path, n):
    db, q = make(n, 3, 64, 5)
    codes = bits.pack(db)
    bt = BucketTables.build(codes, 64)
    assert (bt.n_tables, bt.key_bits) == (1, 1)
    D, I = bt.query(codes, bits.pack(q), 4)
    assert D.shape == (3, 4)
    if n == 0:
        assert (I == -1).all() and (D == -1).all()
    else:
        assert (I[:, 0] == 0).all() and (I[:, 1:] == -1).all() and (D[:, 1:] == -1).all()
        np.testing.assert_array_equal(D[:, 0], (q != db[0]).sum(axis=1))
    bt.write(tmp_path / "b.hdb")
    back = BucketTables.open(tmp_path / "b.hdb")
    for a, b in zip(back.query(codes, bits.pack(q), 4), (D, I), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.candidates(np.zeros((0, 8), np.uint8))[0].tolist() == [0]
    assert bt.query(codes, np.zeros((0, 8), np.uint8), 2)[0].shape == (0, 2)


def test_same_random_state_gives_a_byte_identical_file(tmp_path):
    db, _ = make(500, 0, 128, 1)
    codes = bits.pack(db)
    BucketTables.build(codes, 128, random_state=11).write(tmp_path / "a")
    BucketTables.build(codes, 128, random_state=11).write(tmp_path / "b")
    BucketTables.build(codes, 128, random_state=np.random.default_rng(11)).write(tmp_path / "c")
    BucketTables.build(codes, 128, random_state=12).write(tmp_path / "d")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == (tmp_path / "c").read_bytes()
    assert (tmp_path / "a").read_bytes() != (tmp_path / "d").read_bytes()


def test_key_positions_are_drawn_from_permutations():
    pos = draw_positions(64, 7, 20, np.random.default_rng(0))
    assert pos.shape == (7, 20) and pos.dtype == np.uint16
    assert all((np.diff(row.astype(int)) > 0).all() for row in pos)
    assert len(set(pos[:3].ravel().tolist())) == 60  # the three tables of the first permutation are disjoint
    counts = np.bincount(pos.ravel(), minlength=64)
    assert counts.max() - counts.min() <= 2


def test_probe_masks():
    for m, p in [(1, 0), (5, 1), (12, 2), (20, 2), (6, 3), (3, 5)]:
        masks = probe_masks(m, p)
        assert len(masks) == len(set(masks.tolist())) == sum(math.comb(m, i) for i in range(min(p, m) + 1))
        assert all(bin(int(x)).count("1") <= p and int(x) < (1 << m) for x in masks)
        assert masks[0] == 0


def test_defaults():
    assert default_key_bits(0, 64) == default_key_bits(1, 64) == 1
    assert default_key_bits(10**6, 64) == 20 and default_key_bits(10**6, 16) == 16
    assert default_key_bits(10**12, 1024) == 26
    assert default_n_tables(64, 20) == 6 and default_n_tables(64, 64) == 1
    for n_bits in (32, 64, 128, 256):
        for n in (10**3, 10**5, 10**6, 10**7):
            m = default_key_bits(n, n_bits)
            L = default_n_tables(n_bits, m)
            assert recall_estimate(round(6 / 64 * n_bits), n_bits, m, L, 1) >= 0.99
            assert L == 1 or recall_estimate(round(6 / 64 * n_bits), n_bits, m, L - 1, 1) < 0.99


def test_bad_arguments():
    codes = bits.pack(make(10, 0, 64, 0)[0])
    bt = BucketTables.build(codes, 64, n_tables=2, key_bits=3)
    with pytest.raises(ValueError, match="k must"):
        bt.query(codes, codes, 0)
    with pytest.raises(ValueError, match="probes"):
        bt.query(codes, codes, 1, probes=-1)
    with pytest.raises(ValueError, match="codes_db has shape"):
        bt.query(codes[:5], codes, 1)
    with pytest.raises(ValueError, match="queries have 16 bytes"):
        bt.query(codes, np.zeros((1, 16), np.uint8), 1)
    with pytest.raises(ValueError, match="key_bits must be between 1 and 26"):
        BucketTables.build(codes, 64, key_bits=27)
    with pytest.raises(ValueError, match="n_tables"):
        BucketTables.build(codes, 64, n_tables=0)
    with pytest.raises(ValueError, match="bits need"):
        BucketTables.build(codes, 65)
    with pytest.raises(TypeError, match="n_bits is required"):
        BucketTables.build(codes)
    with pytest.raises(TypeError, match="random_state"):
        BucketTables.build(codes, 64, random_state="x")
    with pytest.raises(ValueError, match="lookups per table"):
        probe_masks(26, 5)
