"""The facts of a file (hashdup/io/facts.py) and the flat forms the catalogue, the journal and an actions manifest
keep of them: the same columns and keys, in the same order, as before the facts had a record of their own."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

from hashdup.dedup.actions import Step
from hashdup.io.catalogue import Catalogue, FileRecord, write_catalogue
from hashdup.io.facts import (
    FileDigest,
    FileFacts,
    FileStat,
    columns,
    from_columns,
    from_keys,
    names,
    stat_of,
    to_keys,
)
from hashdup.io.featurefile import LocalFeatures
from hashdup.io.journal import Journal

FACTS = FileFacts(1234, 1_700_000_000_123_456_789, "0f" * 16, 640, 480, "JPEG")


def test_the_records_grow_one_from_the_other_in_the_column_order():
    assert names(FileStat) == ("size", "mtime_ns")
    assert names(FileDigest) == ("size", "mtime_ns", "blake2b")
    assert names() == names(FileFacts) == ("size", "mtime_ns", "blake2b", "width", "height", "format")
    assert names(FileDigest, "keeper_") == ("keeper_size", "keeper_mtime_ns", "keeper_blake2b")
    assert isinstance(FACTS, FileDigest) and isinstance(FACTS, FileStat)
    assert FACTS.pixels == 640 * 480
    with pytest.raises(AttributeError):  # frozen
        FACTS.size = 1


@pytest.mark.parametrize("facts", [FACTS, FileDigest(1, 2, "ab"), FileStat(1, 2), None])
def test_columns_round_trip(facts):
    values = columns(facts)
    assert len(values) == 6
    assert from_columns(values) == facts and type(from_columns(values)) is type(facts)


def test_from_columns_keeps_the_most_it_can():
    assert from_columns((1, 2, "ab", None, 4, "PNG")) == FileDigest(1, 2, "ab")  # a width missing
    assert from_columns((1, 2, None, 3, 4, "PNG")) == FileStat(1, 2)
    assert from_columns((None, 2, "ab", 3, 4, "PNG")) is None
    assert columns(FileStat(1, 2)) == (1, 2, None, None, None, None)
    assert columns(FACTS, FileDigest) == (1234, 1_700_000_000_123_456_789, "0f" * 16)


def test_keys_round_trip_with_a_prefix():
    keys = to_keys(FACTS, FileDigest, "keeper_")
    assert list(keys) == ["keeper_size", "keeper_mtime_ns", "keeper_blake2b"]
    assert from_keys({**keys, "other": 1}, FileDigest, "keeper_") == FileDigest(FACTS.size, FACTS.mtime_ns,
                                                                                FACTS.blake2b)
    with pytest.raises(KeyError):
        from_keys({"keeper_size": 1, "keeper_mtime_ns": 2}, FileDigest, "keeper_")


def test_stat_of(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    st = os.stat(path)
    assert stat_of(st) == FileStat(5, st.st_mtime_ns)


def test_a_step_is_the_same_manifest_entry_as_before():
    """The keys and their order of a manifest entry (hashdup.dedup.manifest) are those of the flat Step that wrote
    them before; an entry of such a manifest reads back into the same step."""
    step = Step(3, "move", "/a/dup.jpg", "/a/keep.jpg", "/dups/dup.jpg", FACTS, FileDigest(99, 7, "cd" * 16),
                status="started", link=[1, 2])
    entry = step.entry()
    assert list(entry) == ["group", "action", "path", "keeper", "target", "size", "mtime_ns", "blake2b",
                           "keeper_size", "keeper_mtime_ns", "keeper_blake2b", "status", "reason", "backup", "link",
                           "trash"]
    assert json.dumps(entry, separators=(",", ":")) == (
        '{"group":3,"action":"move","path":"/a/dup.jpg","keeper":"/a/keep.jpg","target":"/dups/dup.jpg",'
        f'"size":1234,"mtime_ns":1700000000123456789,"blake2b":"{"0f" * 16}","keeper_size":99,"keeper_mtime_ns":7,'
        f'"keeper_blake2b":"{"cd" * 16}","status":"started","reason":null,"backup":null,"link":[1,2],"trash":null}}')
    back = Step.from_entry(json.loads(json.dumps({"n": 1, **entry})))
    assert back.facts == FileDigest(1234, 1_700_000_000_123_456_789, "0f" * 16)
    assert back.keeper_facts == FileDigest(99, 7, "cd" * 16)
    assert (back.group, back.target, back.status, back.link) == (3, "/dups/dup.jpg", "started", [1, 2])
    without = {k: v for k, v in entry.items() if k != "keeper_mtime_ns"}
    with pytest.raises(KeyError):
        Step.from_entry(without)


def test_catalogue_rows_round_trip(tmp_path):
    records = [FileRecord(0, 0, "a.jpg", FACTS),
               FileRecord(None, 0, "bad.jpg", FileStat(12, 34), status="error", error="truncated"),
               FileRecord(None, 0, "gone.jpg", None, status="error", error="cannot read")]
    write_catalogue(tmp_path / "c.sqlite", ["/root"], records)
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert [r[1] for r in db.execute("PRAGMA table_info(files)")] == [
        "id", "root", "path", "size", "mtime_ns", "blake2b", "width", "height", "format", "status", "error"]
    assert db.execute("SELECT * FROM files ORDER BY path").fetchall() == [
        (0, 0, b"a.jpg", *columns(FACTS), "ok", None), (None, 0, b"bad.jpg", 12, 34, None, None, None, None, "error",
                                                        "truncated"),
        (None, 0, b"gone.jpg", None, None, None, None, None, None, "error", "cannot read")]
    db.close()
    cat = Catalogue(tmp_path / "c.sqlite")
    try:
        assert cat.records() == records[:1]
        assert sorted(cat.by_path().values(), key=lambda r: r.path) == records
    finally:
        cat.close()


def test_journal_rows_round_trip(tmp_path):
    settings = {"local": {"frame": 64, "n_keypoints": 10, "thumb_pixels": 100}}
    feats = LocalFeatures((48, 64), np.zeros((2, 2), np.uint16), np.zeros((2, 32), np.uint8),
                          np.full((6, 8), 7, np.uint8))
    journal = Journal(tmp_path, settings, 4)
    journal.add("/x/a.jpg", FACTS, 55, np.arange(4, dtype=np.float32), feats)
    journal.close()
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("SELECT path, size, mtime_ns, checked_ns, blake2b, width, height, format FROM files").fetchall() \
        == [(b"/x/a.jpg", 1234, 1_700_000_000_123_456_789, 55, "0f" * 16, 640, 480, "JPEG")]
    db.close()
    rows = Journal(tmp_path, settings, 4).rows()
    assert list(rows) == ["/x/a.jpg"]
    row = rows["/x/a.jpg"]
    assert (row.facts, row.checked_ns, row.descriptor.tolist()) == (FACTS, 55, [0.0, 1.0, 2.0, 3.0])
