"""The public API of hashdup/__init__.py against the pipeline it wraps; its examples run as doctests (pyproject)."""

from __future__ import annotations

import importlib.metadata
import inspect
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import hashdup
from hashdup import pipeline
from hashdup.dedup import Group, find_groups
from hashdup.errors import HashdupError, IndexFileError, NoIndexError
from hashdup.index import HammingIndex

HEAVY = ("numpy", "scipy", "numba", "cv2", "PIL", "skimage")
FUNCTIONS = ("open_index", "build_index", "paths", "codes", "query", "find_duplicates")


@pytest.fixture(scope="module")
def api_index(built_index: tuple[Path, Path]) -> Iterator[pipeline.Index]:
    idx = hashdup.open_index(built_index[1])
    yield idx
    idx.close()


def test_import_is_light() -> None:
    code = ("import sys, hashdup; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules)); "
            "print(','.join(m for m in sys.modules if m.startswith('hashdup.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, submodules = out.splitlines() + [""] * (2 - len(out.splitlines()))
    assert heavy == "", f"`import hashdup` imports {heavy}"
    assert submodules == "", f"`import hashdup` imports {submodules}"


def test_all_names_exist() -> None:
    assert sorted(hashdup.__all__) == sorted(["HammingIndex", "__version__", *FUNCTIONS])
    for name in hashdup.__all__:
        assert getattr(hashdup, name) is not None
        assert name in dir(hashdup)
    assert hashdup.HammingIndex is HammingIndex
    assert hashdup.__version__ == importlib.metadata.version("hashdup")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = hashdup.nope


@pytest.mark.parametrize("name", FUNCTIONS)
def test_documented_with_examples(name: str) -> None:
    doc = inspect.getdoc(getattr(hashdup, name)) or ""
    for section in ("Parameters", "Returns", "Examples"):
        assert f"\n{section}\n{'-' * len(section)}\n" in doc, f"{name}: no {section} section"
    assert ">>> " in doc


def test_open_index_reaches_what_a_user_needs(api_index: pipeline.Index, built_index: tuple[Path, Path]) -> None:
    idx = api_index
    assert isinstance(idx, pipeline.Index)
    stored = idx.stored
    assert len(idx) == stored.codes.n_rows == stored.catalogue.count("ok") == 21
    assert idx.n_bits == stored.manifest["encoder"]["n_bits"] == 64
    paths = hashdup.paths(idx)
    cat = stored.catalogue
    assert paths == [cat.abspath(r) for r in cat.records()]  # by id; absolute, outside the working folder
    assert len(set(paths)) == len(paths) == len(idx)
    assert all(Path(p).is_relative_to(built_index[0]) for p in paths)
    codes = hashdup.codes(idx)
    assert codes.dtype == np.uint8 and codes.shape == (len(idx), 8)
    assert not codes.flags.writeable
    with pytest.raises(ValueError):
        codes[0, 0] = 1
    np.testing.assert_array_equal(codes, stored.codes.codes)
    D, I = hashdup.HammingIndex(codes, idx.n_bits).knn(codes, 1)
    assert D.ravel().tolist() == [0] * len(idx)  # its own code, or an equal one of a lower id (ties by id)
    np.testing.assert_array_equal(codes[I.ravel()], codes)


def test_open_index_verify_false(built_index: tuple[Path, Path]) -> None:
    idx = hashdup.open_index(built_index[1], verify=False)
    try:
        assert len(idx) == 21
    finally:
        idx.close()


@pytest.mark.parametrize("missing", ["empty", "absent"])
def test_open_a_folder_that_is_not_an_index(tmp_path: Path, missing: str) -> None:
    folder = tmp_path if missing == "empty" else tmp_path / "nowhere"
    with pytest.raises(NoIndexError) as err:
        hashdup.open_index(folder)
    assert isinstance(err.value, HashdupError)
    assert str(err.value) == f"no index at {folder} (no index.json); run `hashdup index DIR` first"


def test_open_a_damaged_index_names_the_file(built_index: tuple[Path, Path], tmp_path: Path) -> None:
    damaged = tmp_path / "index"
    shutil.copytree(built_index[1], damaged)
    (code_file,) = damaged.glob("codes-*")
    code_file.unlink()
    with pytest.raises(IndexFileError, match=r"codes-\d+\.\w+: codes file is missing") as err:
        hashdup.open_index(damaged)
    assert err.value.path == str(code_file)


def test_query_is_pipeline_query(api_index: pipeline.Index, built_index: tuple[Path, Path]) -> None:
    images = built_index[0]
    queries = [str(images / "photos" / "chelsea.jpg"), str(images / "copies" / "coffee_crop.jpg"),
               str(images / "bad" / "notes.jpg"), str(images / "photos" / "rocket.jpg")]
    rows, failed = hashdup.query(api_index, queries)  # the same defaults
    assert (rows, failed) == pipeline.query(api_index, queries)
    assert failed == 1
    assert [r["rank"] for r in rows if r["query"] == queries[0]] == list(range(1, 13))
    first = next(r for r in rows if r["query"] == queries[0])
    assert first == {"query": queries[0], "rank": 1, "path": str(images / "copies" / "chelsea_q30.jpg"),
                     "distance": 1}
    for kwargs in ({"k": 3}, {"k": None, "radius": 10}, {"k": 2, "radius": 30}, {"k": 5, "approx": True}):
        assert hashdup.query(api_index, queries, **kwargs) == pipeline.query(api_index, queries, **kwargs)
    problems: list[tuple[str, str]] = []
    hashdup.query(api_index, queries, on_problem=lambda path, reason: problems.append((path, reason)))
    assert problems == [(queries[2], "not an image (unknown format)")]


def test_query_takes_one_path_or_path_objects(api_index: pipeline.Index, built_index: tuple[Path, Path]) -> None:
    one = built_index[0] / "photos" / "chelsea.jpg"
    expected = pipeline.query(api_index, [str(one)], k=4)
    assert hashdup.query(api_index, str(one), k=4) == expected
    assert hashdup.query(api_index, one, k=4) == expected
    assert hashdup.query(api_index, (p for p in [one]), k=4) == expected


def test_query_needs_k_or_radius(api_index: pipeline.Index, built_index: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="give k, radius or both"):
        hashdup.query(api_index, built_index[0] / "photos" / "chelsea.jpg", k=None)


@pytest.mark.parametrize("options", [{}, {"verify": False}, {"linkage": "single", "keep": "path"},
                                     {"linkage": "complete", "mirror": False}, {"radius": 12, "keep": "resolution"}])
def test_find_duplicates_is_find_groups(api_index: pipeline.Index, options: dict) -> None:
    groups = hashdup.find_duplicates(api_index, **options)
    expected = find_groups(api_index, **options)
    assert all(isinstance(g, Group) for g in groups)
    assert [g.members for g in groups] == [g.members for g in expected]
    assert [g.to_json() for g in groups] == [g.to_json() for g in expected]
    if not options:
        assert len(groups) == 7
        assert all(g.keep.path.split("/")[-2] == "photos" and len(g.duplicates) == 1 for g in groups)


def test_find_duplicates_refuses_bad_options(api_index: pipeline.Index) -> None:
    with pytest.raises(ValueError, match="linkage must be one of"):
        hashdup.find_duplicates(api_index, linkage="average")
    with pytest.raises(TypeError):
        hashdup.find_duplicates(api_index, nope=1)


def test_build_index_is_pipeline_build_index(sample_dir: Path, tmp_path: Path) -> None:
    settings = {"descriptor": "color", "n_bits": 32, "seed": 3, "workers": 1}
    skipped: list[str] = []
    idx = hashdup.build_index([sample_dir / "copies", sample_dir / "bad"], tmp_path / "api", **settings,
                              on_problem=lambda path, reason: skipped.append(path))
    pipeline.build_index([sample_dir / "copies", sample_dir / "bad"], tmp_path / "pipe", **settings)
    ref = pipeline.Index(tmp_path / "pipe")
    try:
        assert isinstance(idx, pipeline.Index)
        assert len(idx) == len(ref) == 7 and idx.n_bits == 32
        assert idx.stored.manifest["descriptor"]["name"] == "color"
        assert hashdup.paths(idx) == hashdup.paths(ref)
        np.testing.assert_array_equal(hashdup.codes(idx), hashdup.codes(ref))
        assert sorted(Path(p).name for p in skipped) == ["notes.jpg", "truncated.jpg"]
    finally:
        idx.close()
        ref.close()


def test_build_index_takes_one_folder_and_updates(sample_dir: Path, tmp_path: Path) -> None:
    idx = hashdup.build_index(str(sample_dir / "copies"), tmp_path / "index", workers=1)
    idx.close()
    idx = hashdup.build_index(sample_dir / "photos", tmp_path / "index", workers=1)  # added to the library
    again = hashdup.open_index(tmp_path / "index")
    try:
        assert len(idx) == 7 + 14
        assert hashdup.paths(idx) == hashdup.paths(again)
    finally:
        idx.close()
        again.close()


def test_build_index_errors(sample_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(HashdupError, match="no images could be indexed"):
        hashdup.build_index([sample_dir / "bad"], tmp_path / "index")
    with pytest.raises(TypeError):
        hashdup.build_index([sample_dir / "copies"], tmp_path / "index", nope=1)
