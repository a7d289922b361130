"""The compiled scans equal a brute-force oracle and the numpy reference, on every path and awkward input."""

import os
import subprocess
import sys
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashdup import bits
from hashdup.index import kernels, scan
from hashdup.io.codefile import CodeFile

from .oracles import make, oracle_distances, oracle_knn, oracle_radius

COMPILED = (kernels._knn_block, kernels._radius_block, kernels._radius_csr)


def as_lists(lims, D, I):
    return [list(zip(D[lims[q] : lims[q + 1]].tolist(), I[lims[q] : lims[q + 1]].tolist(), strict=True))
            for q in range(len(lims) - 1)]


@contextmanager
def tiny_blocks(on=True):
    """Blocks, groups and query blocks of a few rows, and threads even for tiny inputs: every stitching path runs."""
    if not on:
        yield
        return
    with (mock.patch.object(kernels, "DB_BLOCK_BYTES", 96), mock.patch.object(kernels, "GROUP", 4),
          mock.patch.object(kernels, "QUERY_BLOCK", 2), mock.patch.object(kernels, "MIN_PARALLEL_WORK", 0)):
        yield


# widths of 1 to 5 words, including n_bits that are not a multiple of 64 (zero padding)
params = st.tuples(st.integers(0, 60), st.integers(0, 7), st.integers(1, 320), st.integers(0, 2**31),
                   st.sampled_from([0.0, 0.3, 1.0]), st.sampled_from([1, 2]), st.booleans())


@given(params, st.integers(1, 70))
@settings(max_examples=120, deadline=None)
def test_knn_equals_oracle_and_reference(p, k):
    n, nq, n_bits, seed, dup, threads, tiny = p
    db, q = make(n, nq, n_bits, seed, dup)
    with tiny_blocks(tiny):
        D, I = kernels.knn(bits.pack(db), bits.pack(q), k, threads=threads)
    assert D.shape == I.shape == (nq, k) and D.dtype == np.int32 and I.dtype == np.int64
    Do, Io = oracle_knn(oracle_distances(db, q), k)
    np.testing.assert_array_equal(D, Do)
    np.testing.assert_array_equal(I, Io)
    Dr, Ir = scan.knn_scan(bits.pack(db), bits.pack(q), k)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


@given(params, st.integers(0, 40))
@settings(max_examples=120, deadline=None)
def test_radius_equals_oracle_and_reference(p, r):
    n, nq, n_bits, seed, dup, threads, tiny = p
    db, q = make(n, nq, n_bits, seed, dup)
    with tiny_blocks(tiny):
        lims, D, I = kernels.radius(bits.pack(db), bits.pack(q), r, threads=threads)
    assert lims.shape == (nq + 1,) and lims[0] == 0 and lims[-1] == len(D) == len(I)
    assert lims.dtype == np.int64 and D.dtype == np.int32 and I.dtype == np.int64
    assert as_lists(lims, D, I) == oracle_radius(oracle_distances(db, q), r)
    for got, ref in zip((lims, D, I), scan.radius_scan(bits.pack(db), bits.pack(q), r), strict=True):
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("n_bits", [64, 128, 192, 256, 320, 100])
@pytest.mark.parametrize("threads", [1, 2])
def test_full_size_blocks_equal_reference(n_bits, threads):
    """Thousands of rows: whole vectorised groups and blocks, database ranges split over threads and merged."""
    db, q = make(5000, 40, n_bits, n_bits, dup_rate=0.05, flip=0.02)
    db_codes, q_codes = bits.pack(db), bits.pack(q)
    q_codes[:3] = db_codes[[0, 2500, 4999]]  # exact copies: distance 0 at the first, middle and last row
    with mock.patch.object(kernels, "MIN_PARALLEL_WORK", 0):
        D, I = kernels.knn(bits.as_words(db_codes), bits.as_words(q_codes), 12, threads=threads)
        lims, Dr, Ir = kernels.radius(db_codes, q_codes, n_bits // 5, threads=threads)
    Dref, Iref = scan.knn_scan(db_codes, q_codes, 12)
    np.testing.assert_array_equal(D, Dref)
    np.testing.assert_array_equal(I, Iref)
    assert I[:3, 0].tolist() == [0, 2500, 4999] and (D[:3, 0] == 0).all()
    for got, ref in zip((lims, Dr, Ir), scan.radius_scan(db_codes, q_codes, n_bits // 5), strict=True):
        np.testing.assert_array_equal(got, ref)
    assert lims[-1] > 10  # not only the three exact copies


@pytest.mark.parametrize("threads", [1, 2])
def test_many_queries_split_into_query_blocks(threads):
    db, q = make(700, 300, 64, 5, dup_rate=0.2)
    with tiny_blocks():
        D, I = kernels.knn(bits.pack(db), bits.pack(q), 5, threads=threads)
        lims, Dr, Ir = kernels.radius(bits.pack(db), bits.pack(q), 20, threads=threads)
    Dall = oracle_distances(db, q)
    Do, Io = oracle_knn(Dall, 5)
    np.testing.assert_array_equal(D, Do)
    np.testing.assert_array_equal(I, Io)
    assert as_lists(lims, Dr, Ir) == oracle_radius(Dall, 20)


@pytest.mark.parametrize("threads", [1, 2])
def test_all_codes_equal_tie_by_id(threads):
    codes = np.tile(bits.pack(np.ones((1, 200), bool)), (300, 1))
    with tiny_blocks():
        D, I = kernels.knn(codes, codes[:2], 7, threads=threads)
        lims, Dr, Ir = kernels.radius(codes, codes[:2], 0, threads=threads)
    assert (D == 0).all() and I.tolist() == [list(range(7))] * 2
    assert lims.tolist() == [0, 300, 600] and (Dr == 0).all() and Ir.tolist() == list(range(300)) * 2


def test_decreasing_distances_insert_every_row():
    """Rows ordered from far to near: every row enters the running top k, the worst case of the selection."""
    n_bits = 64
    db = np.zeros((65, n_bits), bool)
    for i in range(65):
        db[i, : 64 - i] = True  # distance to the zero query is 64 - i
    D, I = kernels.knn(bits.pack(db), np.zeros((1, 8), np.uint8), 10)
    assert D.tolist() == [list(range(10))] and I.tolist() == [list(range(64, 54, -1))]


def test_edge_sizes():
    codes = bits.pack(np.eye(3, 16, dtype=bool))
    D, I = kernels.knn(codes, codes, 5)  # k > n pads with -1
    assert (I[:, 3:] == -1).all() and (D[:, 3:] == -1).all() and I[:, 0].tolist() == [0, 1, 2]
    empty = np.zeros((0, 1), np.uint64)
    D, I = kernels.knn(empty, np.zeros((2, 1), np.uint64), 3)
    assert (I == -1).all() and (D == -1).all() and D.shape == (2, 3)
    lims, D, I = kernels.radius(empty, np.zeros((2, 1), np.uint64), 5)
    assert lims.tolist() == [0, 0, 0] and len(D) == len(I) == 0
    D, I = kernels.knn(codes, codes[:0], 2)
    assert D.shape == I.shape == (0, 2)
    lims, D, I = kernels.radius(codes, codes[:0], 2)
    assert lims.tolist() == [0] and len(I) == 0
    lims, D, I = kernels.radius(codes, codes, 10_000)  # a radius beyond the width matches everything
    assert np.diff(lims).tolist() == [3, 3, 3]


@pytest.mark.parametrize("threads", [1, 2])
def test_memory_mapped_code_file(tmp_path, threads):
    db, q = make(3000, 9, 100, 11, dup_rate=0.1)
    CodeFile.write(tmp_path / "c.hdc", bits.pack(db), 100, b"\0" * 16)
    cf = CodeFile.open(tmp_path / "c.hdc")
    words = bits.as_words(cf.codes)
    assert isinstance(cf.codes, np.memmap) and not words.flags.writeable and np.shares_memory(words, cf.codes)
    with mock.patch.object(kernels, "MIN_PARALLEL_WORK", 0):
        D, I = kernels.knn(words, bits.pack(q), 20, threads=threads)
        lims, Dr, Ir = kernels.radius(cf.codes, bits.pack(q), 30, threads=threads)
    Dall = oracle_distances(db, q)
    Do, Io = oracle_knn(Dall, 20)
    np.testing.assert_array_equal(D, Do)
    np.testing.assert_array_equal(I, Io)
    assert as_lists(lims, Dr, Ir) == oracle_radius(Dall, 30)


def test_threads_follow_numba_setting():
    import numba

    db, q = make(2000, 3, 64, 2)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert kernels._n_threads(None) == 1
        D1, I1 = kernels.knn(bits.pack(db), bits.pack(q), 8)
    finally:
        numba.set_num_threads(before)
    with mock.patch.object(kernels, "MIN_PARALLEL_WORK", 0):
        D2, I2 = kernels.knn(bits.pack(db), bits.pack(q), 8, threads=2)
    np.testing.assert_array_equal(D1, D2)
    np.testing.assert_array_equal(I1, I2)


def test_plan_splits_work():
    with mock.patch.object(kernels, "MIN_PARALLEL_WORK", 0):
        dranges, qranges = kernels._plan(1000, 3, 1, 2)  # few queries: the database is split
        assert dranges == [(0, 500), (500, 1000)] and qranges == [(0, 3)]
        dranges, qranges = kernels._plan(1000, 1300, 1, 2)  # many: query blocks, an even number of them
        assert dranges == [(0, 1000)] and len(qranges) % 2 == 0 and qranges[-1][1] == 1300
        assert kernels._plan(3, 1, 1, 8)[0] == [(0, 1), (1, 2), (2, 3)]  # never more ranges than rows
    assert kernels._plan(1000, 3, 1, 2)[0] == [(0, 1000)]  # small problems stay on one thread


def test_bad_arguments():
    codes = np.zeros((4, 8), np.uint8)
    with pytest.raises(ValueError, match="k must"):
        kernels.knn(codes, codes, 0)
    with pytest.raises(ValueError, match="radius must"):
        kernels.radius(codes, codes, -1)
    with pytest.raises(ValueError, match="words per row"):
        kernels.knn(codes, np.zeros((1, 16), np.uint8), 1)
    with pytest.raises(TypeError, match="uint64 words or uint8"):
        kernels.knn(codes.astype(np.int64), codes, 1)
    with pytest.raises(ValueError, match="threads"):
        kernels.knn(codes, codes, 1, threads=0)
    with pytest.raises(ValueError, match="multiple of 8 bytes"):
        kernels.knn(np.zeros((4, 5), np.uint8), np.zeros((1, 5), np.uint8), 1)


def test_kernels_compile_once_and_are_cached(tmp_path):
    """After a call the on-disk cache holds every kernel, and a fresh process loads them instead of compiling."""
    kernels.knn(np.zeros((3, 1), np.uint64), np.zeros((1, 1), np.uint64), 2)
    kernels.radius(np.zeros((3, 1), np.uint64), np.zeros((1, 1), np.uint64), 2)
    for kernel in COMPILED:
        assert kernel._cache._cache_file._index_path.endswith(".nbi")
        assert os.path.exists(kernel._cache._cache_file._index_path), kernel.__name__
        assert len(kernel.signatures) == 1, kernel.signatures  # one signature whatever the caller passed
    script = (
        "import numpy as np\n"
        "from hashdup.index import kernels as K\n"
        "db = np.arange(40, dtype=np.uint8).reshape(5, 8)\n"
        "K.knn(db, db, 2); K.radius(np.asarray(db).view(np.uint64), db, 3)\n"
        "for f in (K._knn_block, K._radius_block, K._radius_csr):\n"
        "    print(f.__name__, sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        _name, hits, misses = line.split()
        assert int(hits) >= 1 and int(misses) == 0, line
