"""A full disk is a fault like any other: ENOSPC injected on the write paths of an index run, of dedup's decision
cache and of an action stops (or, for the cache, warns) with one clear line; the previous index still serves and the
manifest stays accurate."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from hashdup.dedup import actions

from .clirun import run_script

run = run_script


def full(path="somewhere"):
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.fixture()
def lib(tmp_path, sample_dir, monkeypatch):
    images = tmp_path / "imgs"
    for sub in ("photos", "copies"):
        shutil.copytree(sample_dir / sub, images / sub)
    monkeypatch.chdir(tmp_path)
    assert run("index", images, "--index", tmp_path / "idx", "--workers", "1", "-q").exit_code == 0
    return tmp_path, images, tmp_path / "idx"


@pytest.mark.parametrize("where", ["hashdup.indexing.build.write_descriptors",
                                   "hashdup.indexing.build.FeatureFile.write",
                                   "hashdup.indexing.build.commit"])
def test_an_index_run_on_a_full_disk_stops_in_one_line_and_the_previous_index_serves(lib, monkeypatch, where):
    _base, images, idx = lib
    before = json.loads(run("dedup", "--index", idx).stdout)
    shutil.copy(images / "photos" / "rocket.jpg", images / "photos" / "rocket2.jpg")  # something new to write

    def no_space(*args, **kwargs):
        raise full(idx / "x")

    with monkeypatch.context() as m:
        m.setattr(where, no_space)
        r = run("index", images, "--index", idx, "--workers", "1", "-q")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [f"hashdup: error: No space left on device: {idx / 'x'}"]
    assert json.loads(run("dedup", "--index", idx).stdout) == before  # the previous generation, whole
    assert json.loads(run("info", "--index", idx).stdout)["indexed"] == 21
    r = run("index", images, "--index", idx, "--workers", "1", "-q")  # room again: the run completes
    assert r.exit_code == 0 and json.loads(run("info", "--index", idx).stdout)["indexed"] == 22


def test_a_decision_cache_that_cannot_be_saved_is_one_warning(lib, monkeypatch):
    _, _, idx = lib
    from hashdup.io import verdicts

    def no_space(*args, **kwargs):
        raise full(idx / "verdicts.hdv")

    monkeypatch.setattr(verdicts._HEADER, "create", no_space)
    monkeypatch.setattr(verdicts._LINKS_HEADER, "create", no_space)
    r = run("dedup", "--index", idx)
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 7
    warnings = [x for x in r.stderr.splitlines() if "warning" in x]
    assert any("verdicts were not saved (No space left on device)" in x for x in warnings)
    assert not (idx / "verdicts.hdv").exists()


def test_an_action_that_meets_a_full_disk_stops_and_its_manifest_is_accurate(lib, monkeypatch):
    base, _images, idx = lib
    real, calls = actions.transfer, []

    def fills_up(src, dst, blake2b):
        calls.append(src)
        if len(calls) == 2:
            raise full(dst)
        return real(src, dst, blake2b)

    with monkeypatch.context() as m:
        m.setattr(actions, "transfer", fills_up)
        r = run("dedup", "--index", idx, "--action", "move", base / "dups", "--yes", "--manifest", base / "m.jsonl")
    rows = json.loads(r.stdout)
    assert r.exit_code == 1 and [x["status"] for x in rows] == ["done", "failed"] + ["skipped"] * 5
    assert all(x["reason"].startswith(actions.NOT_ATTEMPTED) for x in rows[2:])
    errors = [x for x in r.stderr.splitlines() if x.startswith("hashdup: error")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "5 of 7 files not attempted" in errors[0]
    assert Path(rows[1]["path"]).exists() and not Path(rows[0]["path"]).exists()
    entries = {}
    for line in (base / "m.jsonl").read_text().splitlines()[1:]:
        rec = json.loads(line)
        entries.setdefault(rec["n"], {}).update(rec)
    assert [entries[n]["status"] for n in sorted(entries)] == ["done", "failed"] + ["skipped"] * 5
    u = run("undo", base / "m.jsonl")
    assert u.exit_code == 0 and Path(rows[0]["path"]).exists()


def test_a_manifest_that_cannot_be_written_stops_before_the_change(lib, monkeypatch):
    base, _images, idx = lib
    from hashdup.dedup import manifest

    real, lines = manifest.ActionLog.write, []

    def fills_up(self, record):
        lines.append(record)
        if len(lines) == 4:  # entry 2's "started": the change must not happen
            raise full(self.path)
        return real(self, record)

    with monkeypatch.context() as m:
        m.setattr(manifest.ActionLog, "write", fills_up)
        r = run("dedup", "--index", idx, "--action", "move", base / "dups", "--yes", "--manifest", base / "m.jsonl")
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1].startswith("hashdup: error: No space left on device")
    moved = sorted(p.name for p in (base / "dups").rglob("*") if p.is_file())
    assert len(moved) == 1  # entry 1 only
    u = run("undo", base / "m.jsonl")
    assert u.exit_code == 0 and not any(p.is_file() for p in (base / "dups").rglob("*"))
