"""Incremental ``hashdup index``: what a re-run reads again, what it keeps, what it counts, and that its result
equals a fresh index of the same folder (byte for byte when the encoder is fitted again)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashdup import pipeline
from hashdup.cli import cli
from hashdup.encoders import load_encoder
from hashdup.indexing import collect as indexing
from hashdup.io import store
from hashdup.io.facts import columns
from hashdup.io.journal import DOUBT_NS, JOURNAL, in_doubt

from .conftest import SAMPLE

HOUR_NS = 3600 * 10**9


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 distinct small JPEGs cut from sample_data's real photos, a truncated JPEG and a text file."""
    folder = tmp_path_factory.mktemp("template")
    photos = sorted((SAMPLE / "photos").glob("*.jpg"))
    for i, p in enumerate(photos[:12]):
        Image.open(p).convert("RGB").resize((96, 72)).save(folder / f"img{i:02d}.jpg", quality=90)
    (folder / "sub").mkdir()
    shutil.move(folder / "img11.jpg", folder / "sub" / "img11.jpg")
    shutil.copy(SAMPLE / "bad" / "truncated.jpg", folder / "broken.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def age(folder: Path, hours: float = 1.0) -> None:
    """Set every file's mtime ``hours`` in the past (distinct per file), out of the timestamp-doubt window."""
    base = time.time_ns() - int(hours * HOUR_NS)
    for i, p in enumerate(sorted(folder.rglob("*"))):
        if p.is_file():
            os.utime(p, ns=(base + i * 10**9, base + i * 10**9))


def folder_from(template: Path, dest: Path, *, old: bool = True) -> Path:
    shutil.copytree(template, dest)
    if old:
        age(dest)
    return dest


class Spy:
    """Records the paths handed to :func:`hashdup.extract.extract` (the files read and decoded)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = indexing.extract

        def spy(paths, *a, **k):
            paths = list(paths)
            self.paths.extend(paths)
            return real(paths, *a, **k)

        monkeypatch.setattr(indexing, "extract", spy)

    def names(self, root: Path) -> set[str]:
        return {Path(p).relative_to(root).as_posix() for p in self.paths}


def build(imgs: Path, idx: Path, **kw) -> pipeline.IndexSummary:
    return pipeline.build_index([imgs], idx, workers=1, **kw)


def snapshot(idx_dir: Path) -> dict:
    """Everything an index says about each file, by relative path: id, status, hash, code and descriptor bytes."""
    idx = pipeline.Index(idx_dir)
    try:
        codes, X = idx.stored.codes.codes, idx.stored.descriptors
        files = {}
        for r in idx.stored.catalogue.by_path().values():
            ok = r.id is not None
            blake2b, width, height = columns(r.facts)[2:5]  # None for a skipped file
            files[r.path] = (r.id, r.status, r.error, blake2b, width, height,
                             codes[r.id].tobytes() if ok else None, X[r.id].tobytes() if ok else None)
        return {"files": files, "fingerprint": idx.encoder.fingerprint(), "n_bits": idx.n_bits}
    finally:
        idx.close()


def results(idx_dir: Path, imgs: Path, query: Path) -> tuple:
    """dedup groups and a query's rows, paths relative to the image folder."""
    idx = pipeline.Index(idx_dir)
    try:
        def rel(p: str) -> str:
            return Path(p).relative_to(imgs).as_posix()

        groups = [sorted(map(rel, g["paths"])) for g in pipeline.dedup(idx, 8, verify=False)]  # codes only
        rows, _ = pipeline.query(idx, [str(query)], k=5)
        return groups, [(r["rank"], rel(r["path"]), r["distance"]) for r in rows]
    finally:
        idx.close()


def counts(s: pipeline.IndexSummary) -> tuple:
    return s.added, s.updated, s.removed, s.unchanged


# --- the doubt rule -----------------------------------------------------------------------------------------------
def test_doubt_rule():
    read_at = 10 * HOUR_NS
    assert not in_doubt(read_at - DOUBT_NS - 1, read_at)  # modified well before it was read: trusted
    assert in_doubt(read_at - DOUBT_NS + 1, read_at)  # within one granule of the read: a later change may hide
    assert in_doubt(read_at + 5, read_at)  # modified after the read started (or a clock in the future)
    assert in_doubt(0, None)  # read at an unknown time


# --- re-runs ------------------------------------------------------------------------------------------------------
def test_unchanged_rerun_decodes_nothing_and_gives_identical_files(template, tmp_path, monkeypatch):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    first = build(imgs, idx)
    assert counts(first) == (13, 0, 0, 0) and first.decoded == 12 and not first.encoder_reused
    spy = Spy(monkeypatch)
    again = build(imgs, idx)
    # only the skipped file is tried again, and the non-image file sniffed; no image is read
    assert spy.names(imgs) == {"broken.jpg", "notes.txt"}
    assert counts(again) == (0, 0, 0, 13) and (again.decoded, again.rehashed, again.resumed) == (0, 0, 0)
    assert again.encoder_reused and (again.indexed, again.files, again.ignored) == (12, 13, 1)
    for kind in ("codes", "descriptors", "encoder"):  # generation 1 is kept beside generation 2
        assert (idx / f"{kind}-000002.{store.KINDS[kind]}").read_bytes() == \
            (idx / f"{kind}-000001.{store.KINDS[kind]}").read_bytes()
    assert not (idx / JOURNAL).exists()


def test_add_modify_delete_rename_keeps_the_encoder_and_the_unchanged_codes(template, tmp_path, monkeypatch):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    build(imgs, idx)
    before = snapshot(idx)
    old_encoder = load_encoder(store.StoredIndex(idx).path("encoder"))
    photos = sorted((SAMPLE / "photos").glob("*.jpg"))
    Image.open(photos[-1]).resize((90, 70)).save(imgs / "new1.jpg")  # added
    Image.open(photos[-2]).resize((90, 70)).save(imgs / "sub" / "new2.png")  # added
    Image.open(photos[-3]).resize((96, 72)).save(imgs / "img03.jpg")  # modified: new bytes, new mtime
    (imgs / "img05.jpg").unlink()  # deleted
    (imgs / "img07.jpg").rename(imgs / "sub" / "moved07.jpg")  # renamed: same size and mtime
    spy = Spy(monkeypatch)
    s = build(imgs, idx)
    assert spy.names(imgs) == {"new1.jpg", "sub/new2.png", "img03.jpg", "broken.jpg", "notes.txt"}
    assert (s.added, s.updated, s.removed, s.unchanged) == (3, 1, 2, 10)
    assert (s.decoded, s.rehashed) == (3, 1)  # the moved file was hashed, found identical, not decoded
    assert s.encoder_reused and s.refit == ""
    after = snapshot(idx)
    assert after["fingerprint"] == before["fingerprint"]
    for path in ["img00.jpg", "img01.jpg", "img02.jpg", "img04.jpg", "sub/img11.jpg"]:
        assert after["files"][path][3:] == before["files"][path][3:]  # same content, code and descriptor
    assert after["files"]["sub/moved07.jpg"][3:] == before["files"]["img07.jpg"][3:]
    assert "img05.jpg" not in after["files"] and "img07.jpg" not in after["files"]
    assert after["files"]["img03.jpg"][3] != before["files"]["img03.jpg"][3]
    # new rows: the old encoder's codes of descriptors equal to a fresh extraction's
    fresh = tmp_path / "fresh"
    build(imgs, fresh)
    ref = snapshot(fresh)
    for path in ["new1.jpg", "sub/new2.png", "img03.jpg"]:
        assert after["files"][path][7] == ref["files"][path][7]
        x = np.frombuffer(ref["files"][path][7], dtype=np.float16).astype(np.float32)[None]
        assert after["files"][path][6] == old_encoder.encode(x)[0].tobytes()
    # ids are dense in walk order, as in the fresh index
    assert {p: f[0] for p, f in after["files"].items()} == {p: f[0] for p, f in ref["files"].items()}


def test_refit_gives_exactly_a_fresh_index(template, tmp_path):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    build(imgs, idx)
    photos = sorted((SAMPLE / "photos").glob("*.jpg"))
    Image.open(photos[-1]).resize((90, 70)).save(imgs / "new1.jpg")
    shutil.copy(imgs / "img02.jpg", imgs / "sub" / "copy02.jpg")  # byte-identical to an unchanged file
    (imgs / "img09.jpg").unlink()
    s = build(imgs, idx, refit=True)
    assert not s.encoder_reused and s.refit == "--refit was given" and s.exact_duplicates == 1
    fresh = tmp_path / "fresh"
    build(imgs, fresh)
    assert snapshot(idx) == snapshot(fresh)
    assert results(idx, imgs, imgs / "img00.jpg") == results(fresh, imgs, imgs / "img00.jpg")
    # without --refit the encoder (fitted on the old rows) is kept, and the LSH centre differs from a fresh fit
    (imgs / "img08.jpg").unlink()
    assert build(imgs, idx).encoder_reused
    build(imgs, tmp_path / "fresh2")
    assert snapshot(idx)["fingerprint"] != snapshot(tmp_path / "fresh2")["fingerprint"]


@pytest.mark.parametrize("change, reason", [
    ({"n_bits": 128}, "the code length changed (64 → 128 bits)"),
    ({"seed": 7}, "the seed changed (0 → 7)"),
    ({"encoder": "pca", "n_bits": 8}, "the encoder changed (lsh → pca)"),
])
def test_changed_encoder_settings_refit_without_decoding(template, tmp_path, change, reason):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    build(imgs, idx)
    s = build(imgs, idx, **change)
    assert s.refit == reason and not s.encoder_reused and s.decoded == 0 and s.rebuild == ""
    fresh = tmp_path / "fresh"
    build(imgs, fresh, **change)
    assert snapshot(idx) == snapshot(fresh)


def test_changed_descriptor_rebuilds_everything(template, tmp_path):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    build(imgs, idx)
    s = build(imgs, idx, descriptor="color")
    assert s.rebuild == "the descriptor changed (gist+color → color)" and s.decoded == 12 and not s.encoder_reused
    assert counts(s) == (0, 0, 0, 13)  # the files themselves did not change
    s = build(imgs, idx, descriptor="color", descriptor_params={"image_size": 32})
    assert s.rebuild == "the descriptor settings changed (image_size 64 → 32)" and s.decoded == 12
    fresh = tmp_path / "fresh"
    build(imgs, fresh, descriptor="color", descriptor_params={"image_size": 32})
    assert snapshot(idx) == snapshot(fresh)


# --- "content hash when in doubt" ---------------------------------------------------------------------------------
def _same_size_twins(folder: Path) -> tuple[bytes, bytes]:
    """Two different images with the same byte size (uncompressed BMPs of one shape)."""
    photos = sorted((SAMPLE / "photos").glob("*.jpg"))
    out = []
    for p in photos[:2]:
        Image.open(p).convert("RGB").resize((64, 48)).save(folder / "twin.bmp")
        out.append((folder / "twin.bmp").read_bytes())
    assert len(out[0]) == len(out[1]) and out[0] != out[1]
    return out[0], out[1]


@pytest.mark.parametrize("old", [False, True])
def test_same_size_and_mtime_is_caught_only_within_the_timestamp_granularity(template, tmp_path, old):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    a, b = _same_size_twins(imgs)
    (imgs / "twin.bmp").write_bytes(a)
    if old:
        age(imgs)
    mtime = os.stat(imgs / "twin.bmp").st_mtime_ns
    build(imgs, idx)
    before = snapshot(idx)["files"]["twin.bmp"]
    (imgs / "twin.bmp").write_bytes(b)
    os.utime(imgs / "twin.bmp", ns=(mtime, mtime))  # same size, same mtime, other content
    s = build(imgs, idx)
    after = snapshot(idx)["files"]["twin.bmp"]
    if old:  # written long before the run read it: trusted without reading (the documented limit)
        assert (s.updated, s.rehashed, s.decoded) == (0, 0, 0) and after == before
    else:  # written within the granularity of the run's start: hashed, found different, decoded again
        assert s.updated == 1 and s.decoded == 1 and s.rehashed >= 1 and after[3] != before[3]
        fresh = tmp_path / "fresh"
        build(imgs, fresh)
        assert after[7] == snapshot(fresh)["files"]["twin.bmp"][7]


def test_index_without_a_start_time_is_hashed_once(template, tmp_path):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    build(imgs, idx)
    m = json.loads((idx / "index.json").read_text())
    del m["started_ns"]  # as written by an older hashdup
    m["checksum"] = store._manifest_checksum(m)
    (idx / "index.json").write_text(json.dumps(m))
    s = build(imgs, idx)
    assert (s.rehashed, s.decoded, s.unchanged) == (12, 0, 13)
    assert build(imgs, idx).rehashed == 0


def test_fixed_file_is_updated(template, tmp_path):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    assert build(imgs, idx).indexed == 12
    shutil.copy(imgs / "img00.jpg", imgs / "broken.jpg")
    s = build(imgs, idx)
    assert (s.indexed, s.updated, s.decoded, s.exact_duplicates) == (13, 1, 1, 1)


# --- resuming an interrupted run ----------------------------------------------------------------------------------
def test_interrupted_run_resumes_from_the_journal(template, tmp_path, monkeypatch):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    real = indexing.extract

    def interrupted(paths, *a, **k):
        for n, r in enumerate(real(paths, *a, **k)):
            if n == 7:
                raise KeyboardInterrupt
            yield r

    monkeypatch.setattr(indexing, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(imgs, idx, batch_size=4)
    monkeypatch.undo()
    assert (idx / JOURNAL).exists() and not (idx / "index.json").exists()
    spy = Spy(monkeypatch)
    s = build(imgs, idx)
    journaled = {"img00.jpg", "img01.jpg", "img02.jpg", "img03.jpg", "img04.jpg", "img05.jpg"}  # broken.jpg: error
    assert s.resumed == 6 and s.decoded == 6 and not spy.names(imgs) & journaled
    assert not (idx / JOURNAL).exists()
    fresh = tmp_path / "fresh"
    build(imgs, fresh)
    assert snapshot(idx) == snapshot(fresh)


def test_journal_of_other_descriptor_settings_is_not_used(template, tmp_path, monkeypatch):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    real = indexing.extract

    def interrupted(paths, *a, **k):
        for n, r in enumerate(real(paths, *a, **k)):
            if n == 5:
                raise KeyboardInterrupt
            yield r

    monkeypatch.setattr(indexing, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(imgs, idx)
    monkeypatch.undo()
    s = build(imgs, idx, descriptor="color")
    assert s.resumed == 0 and s.decoded == 12


# --- the command line ---------------------------------------------------------------------------------------------
def test_cli_summary_and_refit(template, tmp_path):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    def run(*a: str):  # click's Result
        return CliRunner().invoke(cli, ["index", str(imgs), "--index", str(idx), "--workers", "1", *a])

    assert run().exit_code == 0
    Image.open(sorted((SAMPLE / "photos").glob("*.jpg"))[-1]).resize((90, 70)).save(imgs / "new.jpg")
    (imgs / "img01.jpg").unlink()
    r = run()
    assert r.exit_code == 0, r.output
    assert "1 added, 0 updated, 1 removed, 12 unchanged (1 decoded)" in r.stderr
    assert "encoder reused (--refit to fit it again)" in r.stderr
    r = run("--refit")
    # new.jpg was written within the timestamp granularity of the last run's start: hashed again, not decoded
    assert r.exit_code == 0 and "0 added, 0 updated, 0 removed, 13 unchanged (0 decoded, 1 hashed to confirm)" \
        in r.stderr
    assert "lsh fitted because --refit was given" in r.stderr
    r = run("--descriptor", "color")
    assert r.exit_code == 0 and "nothing reused from the previous index: the descriptor changed (gist+color → color)" \
        in r.stderr


def test_damaged_journal_is_only_lost_work(template, tmp_path):
    imgs, idx = folder_from(template, tmp_path / "imgs"), tmp_path / "idx"
    idx.mkdir()
    (idx / JOURNAL).write_bytes(b"SQLite format 3\x00" + os.urandom(3000))  # a header, then garbage
    s = build(imgs, idx)
    assert (s.indexed, s.decoded, s.resumed) == (12, 12, 0) and not (idx / JOURNAL).exists()
