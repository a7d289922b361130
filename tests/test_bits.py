import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hashdup import bits


@given(st.integers(1, 1100).flatmap(lambda nb: hnp.arrays(bool, st.tuples(st.integers(0, 20), st.just(nb)))))
@settings(max_examples=60, deadline=None)
def test_pack_unpack_round_trip(b):
    n_bits = b.shape[1]
    codes = bits.pack(b)
    assert codes.dtype == np.uint8
    assert codes.shape == (b.shape[0], bits.row_bytes(n_bits))
    assert codes.shape[1] % 8 == 0 and codes.shape[1] * 8 >= n_bits > codes.shape[1] * 8 - 64
    np.testing.assert_array_equal(bits.unpack(codes, n_bits), b)
    # padding bits are zero
    assert not bits.unpack(codes, codes.shape[1] * 8)[:, n_bits:].any()


def test_bit_order_is_little_endian():
    b = np.zeros((1, 64), bool)
    b[0, 0] = True
    b[0, 9] = True
    codes = bits.pack(b)
    assert codes[0, 0] == 1 and codes[0, 1] == 2
    assert bits.as_words(codes)[0, 0] == 1 + (1 << 9)


@given(st.integers(1, 300), st.integers(0, 8), st.integers(0, 8), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_hamming_matches_unpacked_count(n_bits, n, m, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random((n, n_bits)) < 0.5, rng.random((m, n_bits)) < 0.5
    D = bits.hamming(bits.pack(a), bits.pack(b))
    expected = (a[:, None, :] != b[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(D, expected)


@pytest.mark.parametrize("bad", [0, 7, 1025, 64.5, True])
def test_check_n_bits_rejects(bad):
    with pytest.raises(ValueError, match="n_bits"):
        bits.check_n_bits(bad)


def test_as_words_rejects_unpadded_rows():
    with pytest.raises(ValueError, match="multiple of 8"):
        bits.as_words(np.zeros((2, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        bits.as_codes(np.zeros((2, 8), np.int64))
