import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashdup import bits
from hashdup.errors import IndexFileError
from hashdup.io.codefile import HEADER_SIZE, MAGIC, CodeFile, CodeFileWriter

FP = bytes(range(16))


def _codes(n, n_bits, seed=0):
    rng = np.random.default_rng(seed)
    return bits.pack(rng.random((n, n_bits)) < 0.5)


@given(st.integers(0, 50), st.integers(8, 1024), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_round_trip(tmp_path, n, n_bits, seed):
    codes = _codes(n, n_bits, seed)
    path = tmp_path / "c.hdc"
    CodeFile.write(path, codes, n_bits, FP)
    cf = CodeFile.open(path)
    assert (cf.n_rows, cf.n_bits, cf.row_stride, cf.fingerprint) == (n, n_bits, bits.row_bytes(n_bits), FP)
    np.testing.assert_array_equal(cf.codes, codes)
    assert not cf.codes.flags.writeable
    assert path.stat().st_size == HEADER_SIZE + codes.nbytes


def test_header_layout_is_documented(tmp_path):
    path = tmp_path / "c.hdc"
    CodeFile.write(path, _codes(3, 100), 100, FP)
    head = path.read_bytes()[:HEADER_SIZE]
    magic, version, hsize, n_bits, stride, flags, n_rows = struct.unpack_from("<8sHHIIIQ", head)
    assert (magic, version, hsize, n_bits, stride, flags, n_rows) == (MAGIC, 1, 64, 100, 16, 0, 3)
    assert head[32:48] == FP


def test_streaming_writer_equals_one_shot(tmp_path):
    codes = _codes(10, 64)
    with CodeFileWriter(tmp_path / "a.hdc", 64, FP) as w:
        w.append(codes[:4])
        w.append(codes[4:])
    CodeFile.write(tmp_path / "b.hdc", codes, 64, FP)
    assert (tmp_path / "a.hdc").read_bytes() == (tmp_path / "b.hdc").read_bytes()


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "c.hdc"
    CodeFile.write(path, _codes(2, 64), 64, FP)
    before = path.read_bytes()
    with pytest.raises(RuntimeError), CodeFileWriter(path, 64, FP) as w:
        w.append(_codes(5, 64, 1))
        raise RuntimeError("killed")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.hdc"]


@pytest.mark.parametrize(
    "offset, value, message",
    [
        (0, b"XXXXXXXX", "magic"),
        (8, struct.pack("<H", 2), "version"),
        (10, struct.pack("<H", 32), "header size"),
        (12, struct.pack("<I", 60), "checksum"),  # same stride, different n_bits: only the checksum notices
        (12, struct.pack("<I", 200), "row stride"),
        (16, struct.pack("<I", 16), "row stride"),
        (24, struct.pack("<Q", 5), "bytes"),
        (32, b"\xff" * 16, "checksum"),
        (48, b"\x00" * 16, "checksum"),
        (HEADER_SIZE + 3, b"\x5a", "checksum"),
    ],
)
def test_corruption_is_rejected(tmp_path, offset, value, message):
    path = tmp_path / "c.hdc"
    CodeFile.write(path, _codes(4, 64), 64, FP)
    data = bytearray(path.read_bytes())
    data[offset : offset + len(value)] = value
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=message) as e:
        CodeFile.open(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("cut", [0, 10, HEADER_SIZE, HEADER_SIZE + 12])
def test_truncated_file_is_rejected(tmp_path, cut):
    path = tmp_path / "c.hdc"
    CodeFile.write(path, _codes(4, 64), 64, FP)
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(IndexFileError):
        CodeFile.open(path)


def test_missing_file(tmp_path):
    with pytest.raises(IndexFileError, match="cannot read"):
        CodeFile.open(tmp_path / "nope.hdc")


def test_writer_rejects_wrong_width(tmp_path):
    with pytest.raises(ValueError, match="bytes"), CodeFileWriter(tmp_path / "c.hdc", 64, FP) as w:
        w.append(_codes(2, 128))
