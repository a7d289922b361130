"""Local features computed once and verdicts kept: an incremental index run reuses the features of unchanged
files, a second dedup verifies nothing, and after a file changes only the pairs that touch it are verified again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashdup import pipeline
from hashdup.cli import cli
from hashdup.dedup import verify
from hashdup.dedup.groups import find_groups
from hashdup.descriptors.local import LocalExtractor
from hashdup.errors import IndexFileError
from hashdup.io.verdicts import VerdictStore

from .test_incremental import age


class Count:
    """Counts calls of a method (and keeps their arguments), calling through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
        self.calls: list[tuple] = []
        real = getattr(owner, name)

        def spy(obj, *args, **kw):
            self.calls.append(args)
            return real(obj, *args, **kw)

        monkeypatch.setattr(owner, name, spy)


@pytest.fixture
def library(tmp_path, sample_dir):
    folder = tmp_path / "photos"
    shutil.copytree(sample_dir, folder)
    age(folder)
    return folder, tmp_path / "index"


def features_by_path(index: pipeline.Index) -> dict[str, bytes]:
    ff = index.stored.features
    return {r.path: ff[r.id].to_bytes() for r in index.stored.catalogue.records() if r.id is not None}


def test_features_and_verdicts_are_reused_and_dropped_for_a_changed_file(library, monkeypatch):
    folder, index_dir = library
    pipeline.build_index([folder], index_dir, workers=1)
    idx = pipeline.Index(index_dir)
    before = features_by_path(idx)
    verified = Count(monkeypatch, verify.Verifier, "verify")
    first = [g.to_json() for g in find_groups(idx)]
    assert len(first) == 7 and len(verified.calls) > 0
    verified_first = list(verified.calls)
    store = VerdictStore(index_dir, {})  # other settings: nothing of it is read, but the file exists
    assert len(store) == 0 and store.path.exists()

    verified.calls.clear()
    again = [g.to_json() for g in find_groups(idx)]  # the same index: every verdict is stored
    assert again == first and verified.calls == []
    idx.close()

    # one file changes: the incremental run describes only it, and keeps every other file's features
    changed = folder / "copies" / "chelsea_q30.jpg"
    Image.open(folder / "photos" / "chelsea.jpg").convert("RGB").rotate(2, expand=False).save(changed, quality=40)
    described = Count(monkeypatch, LocalExtractor, "describe")
    summary = pipeline.build_index([folder], index_dir, workers=1)
    assert summary.updated == 1 and len(described.calls) == 1
    idx = pipeline.Index(index_dir)
    after = features_by_path(idx)
    rel = "copies/chelsea_q30.jpg"
    assert after[rel] != before[rel]
    assert {p: f for p, f in after.items() if p != rel} == {p: f for p, f in before.items() if p != rel}

    # only pairs that touch the changed file are verified again
    stored_before = {call[:2] for call in verified_first}
    verified.calls.clear()
    third = [g.to_json() for g in find_groups(idx)]
    new_id = next(r.id for r in idx.stored.catalogue.records() if r.path == rel)
    touching = [c for c in verified.calls if new_id in c[:2]]
    assert touching  # the changed file is compared again
    # every other pair verified now was not verified before (the links changed around the changed file)
    assert not {c[:2] for c in verified.calls if new_id not in c[:2]} & stored_before
    assert len(third) == 7
    hashes = {bytes.fromhex(r.facts.blake2b) for r in idx.stored.catalogue.records() if r.id is not None}
    raw = np.fromfile(index_dir / "verdicts.hdv", dtype=np.uint8)[36 + 16 :]  # after the 52-byte header
    rows = raw.reshape(-1, 48)
    assert all(bytes(r[:16]) in hashes and bytes(r[16:32]) in hashes for r in rows)  # the old hash is gone
    idx.close()


def test_cli_dedup_then_action_and_report_verify_nothing_again(library, monkeypatch, tmp_path):
    folder, index_dir = library
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(folder), "--index", str(index_dir), "-q"]).exit_code == 0
    listed = runner.invoke(cli, ["dedup", "--index", str(index_dir)])
    assert listed.exit_code == 0
    verified = Count(monkeypatch, verify.Verifier, "verify")
    moved = runner.invoke(cli, ["dedup", "--index", str(index_dir), "--action", "move", str(tmp_path / "dups"),
                                "--yes", "--manifest", str(tmp_path / "m.jsonl"), "-q"])
    assert moved.exit_code == 0, moved.output
    report = runner.invoke(cli, ["report", "--index", str(index_dir), "-o", str(tmp_path / "r.html"), "-q"])
    assert report.exit_code == 0, report.output
    assert verified.calls == []
    assert len(json.loads(listed.stdout)) == 7 and len(list((tmp_path / "dups").rglob("*.*"))) == 7


def test_dedup_with_every_decision_stored_does_not_open_the_features(library):
    """A dedup whose pairs are all stored neither opens nor checks the feature file: it gives the same groups with
    that file damaged (a feature file read and checksummed at every reuse would cost seconds at 100,000 images)."""
    folder, index_dir = library
    pipeline.build_index([folder], index_dir, workers=1)
    idx = pipeline.Index(index_dir)
    first = [g.to_json() for g in find_groups(idx)]
    idx.close()
    (features,) = index_dir.glob("features-*.hdf")
    data = bytearray(features.read_bytes())
    data[len(data) // 2] ^= 0xFF
    features.write_bytes(bytes(data))
    idx = pipeline.Index(index_dir)
    assert [g.to_json() for g in find_groups(idx)] == first
    idx.close()
    (index_dir / "verdicts.hdv").unlink()  # nothing stored: the damaged file is now read, and refused
    idx = pipeline.Index(index_dir)
    with pytest.raises(IndexFileError, match="checksum"):
        find_groups(idx)
    idx.close()


def test_info_counts_the_feature_bytes_per_image(library):
    folder, index_dir = library
    pipeline.build_index([folder], index_dir, workers=1)
    idx = pipeline.Index(index_dir)
    info = pipeline.info(idx)
    idx.close()
    feats = info["local_features"]
    assert feats["params"] == LocalExtractor().get_params()
    assert feats["bytes_per_image"] == pytest.approx(info["bytes_on_disk"]["features"] / info["indexed"], abs=0.1)
    assert 0 < feats["bytes_per_image"] <= 16 * 1024


def _dedup_after(index_dir, edit) -> subprocess.CompletedProcess:
    """``hashdup dedup`` (a fresh process) on the index after ``edit(manifest)``, its checksum made right again;
    checks that it failed with nothing on stdout."""
    from hashdup.io import store

    manifest = json.loads((index_dir / "index.json").read_text())
    edit(manifest)
    manifest["checksum"] = store._manifest_checksum(manifest)
    (index_dir / "index.json").write_text(json.dumps(manifest))
    result = subprocess.run([sys.executable, "-m", "hashdup", "dedup", "--index", str(index_dir)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    return result


def test_an_index_without_features_asks_for_a_new_index_run(library):
    folder, index_dir = library
    pipeline.build_index([folder], index_dir, workers=1)
    result = _dedup_after(index_dir, lambda m: m["files"].pop("features"))
    assert "no local features" in result.stderr and "`hashdup index` again" in result.stderr
    summary = pipeline.build_index([folder], index_dir, workers=1)  # an older index is rebuilt, not reused
    assert "no local features" in summary.rebuild and summary.decoded == summary.indexed
    # the old catalogue was read: files counted as before
    assert summary.added == 0 and summary.unchanged == summary.files


def test_features_of_an_older_format_are_rewritten_not_reused(library):
    """An index written before the thumbnails were stored band-passed (feature format 1) is refused by dedup with
    the command that mends it, and the next index run extracts the features again instead of reusing them."""
    folder, index_dir = library
    pipeline.build_index([folder], index_dir, workers=1)
    result = _dedup_after(index_dir, lambda m: m["descriptor"].pop("feature_format"))  # as format 1 wrote it
    assert "stored in format 1" in result.stderr and "`hashdup index` again" in result.stderr
    summary = pipeline.build_index([folder], index_dir, workers=1)
    assert "format 1" in summary.rebuild and summary.decoded == summary.indexed
    idx = pipeline.Index(index_dir)
    assert idx.stored.features[0].thumb.dtype == np.int8 and len(idx.stored.features) == summary.indexed
    idx.close()
