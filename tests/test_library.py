"""An index is a library that grows (hashdup index PATHS adds them; no PATHS scans the index's folders again;
--replace and hashdup forget remove folders explicitly), and keeps its settings when they are not given again."""

from __future__ import annotations

import json
import shutil

import pytest

from .clirun import run_script

run = run_script


@pytest.fixture()
def two(tmp_path, sample_dir, monkeypatch):
    """Two folders of photos (A: 5, B: 4) and an index of A alone, 32 bits; the working folder is tmp_path."""
    photos = sorted((sample_dir / "photos").glob("*.jpg"))
    for name, part in (("A", photos[:5]), ("B", photos[5:9])):
        (tmp_path / name).mkdir()
        for p in part:
            shutil.copy(p, tmp_path / name / p.name)
    monkeypatch.chdir(tmp_path)
    r = run("index", "A", "--bits", "32", "--workers", "1")
    assert r.exit_code == 0, r.output
    return tmp_path


def info():
    r = run("info")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_indexing_another_folder_adds_it_and_keeps_the_first(two):
    r = run("index", "B", "--workers", "1")
    assert r.exit_code == 0, r.output
    assert "4 added, 0 updated, 0 removed, 5 unchanged" in r.stderr and "folders: A, B (new)" in r.stderr
    d = info()
    assert d["indexed"] == 9 and d["roots"] == ["A", "B"]
    assert d["encoder"]["n_bits"] == 32 and "encoder reused" in r.stderr  # the index's own settings


def test_no_paths_scans_the_index_folders_again(two, sample_dir):
    assert run("index", "B", "--workers", "1").exit_code == 0
    shutil.copy(sample_dir / "copies" / "chelsea_q30.jpg", two / "A" / "new.jpg")
    (two / "B" / min(p.name for p in (two / "B").iterdir())).unlink()
    r = run("index", "--workers", "1")
    assert r.exit_code == 0, r.output
    assert "1 added, 0 updated, 1 removed, 8 unchanged" in r.stderr and info()["indexed"] == 9


def test_replace_and_forget_remove_folders_explicitly(two):
    assert run("index", "B", "--workers", "1").exit_code == 0
    r = run("forget", "A")
    assert r.exit_code == 0, r.output
    assert "0 added, 0 updated, 5 removed, 4 unchanged" in r.stderr and info()["roots"] == ["B"]
    assert info()["encoder"]["n_bits"] == 32
    assert run("forget", "nowhere").exit_code == 2
    assert run("forget", "B").exit_code == 2  # would leave nothing
    r = run("index", "A", "--replace", "--workers", "1")
    assert r.exit_code == 0 and "4 removed" in r.stderr and info()["roots"] == ["A"]
    assert run("index", "--replace").exit_code == 2


def test_a_missing_folder_stops_the_run_and_the_index_still_serves(two):
    assert run("index", "B", "--workers", "1").exit_code == 0
    shutil.move(two / "B", two / "B-elsewhere")  # an unplugged drive
    r = run("index", "--workers", "1")
    assert r.exit_code == 1 and "B, indexed before, is missing" in r.output and "hashdup forget" in r.output
    assert info()["indexed"] == 9


def test_a_first_run_needs_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("index")
    assert r.exit_code == 2 and "give the folders to index" in r.output
