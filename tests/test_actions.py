"""The dedup actions (move, symlink, hardlink, delete) and ``hashdup undo``, run through the real command line on
real copies of sample_data in a temporary folder: keeper policies, dry runs, refusal of changed files, the manifest
journal and undo."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from click.testing import CliRunner

from hashdup.dedup import KEEP_POLICIES, Group, Member, actions, order_members
from hashdup.io.facts import FileFacts

from .clirun import run_script

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


run = run_script


def digest(path) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


#: Caches dedup keeps in the index folder (hashdup.io.verdicts): hashdup's own files, not the user's.
CACHES = {"verdicts.hdv", "links.hdl"}


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` but dedup's caches: (kind, inode, size, mtime_ns, content hash or link
    target)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.name in CACHES:
            continue
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[str(p.relative_to(folder))] = ("link", os.readlink(p))
        elif stat.S_ISREG(st.st_mode):
            out[str(p.relative_to(folder))] = ("file", st.st_ino, st.st_size, st.st_mtime_ns, digest(p))
        else:
            out[str(p.relative_to(folder))] = ("dir",)
    return out


def content(folder: Path) -> dict[str, tuple]:
    """What undo promises to give back: every regular file's size, modification time and hash (not its inode)."""
    return {k: (v[0], *v[2:]) for k, v in snapshot(folder).items()}


@pytest.fixture
def lib(tmp_path, monkeypatch):
    """sample_data's photos and edited copies in a temporary folder, the copies older than the photos, indexed;
    the working folder is tmp_path, so default manifests land there. Returns (tmp_path, images, index)."""
    images = tmp_path / "imgs"
    for sub in ("photos", "copies"):
        shutil.copytree(SAMPLE / sub, images / sub)
    for i, p in enumerate(sorted(images.rglob("*"))):  # distinct times: copies older than photos
        if p.is_file():
            t = (1_600_000_000 if p.parent.name == "copies" else 1_700_000_000) + i
            os.utime(p, ns=(t * 10**9, t * 10**9 + 123))
    monkeypatch.chdir(tmp_path)
    r = run("index", images, "--index", tmp_path / "idx", "-q")
    assert r.exit_code == 0, r.output
    return tmp_path, images, tmp_path / "idx"


# The actions are tested on the planted groups as code distance alone finds them (radius 8 finds all seven, see
# test_pipeline): the dozens of dedup runs here need not verify pixels each time (tests/test_dedup.py does that).
# Radius 8 is above the default for code distance alone (3 of 64 bits), so acting on it takes --force.
CODES = ("--no-verify", "--radius", "8", "--force")


def groups_of(idx, *extra):
    r = run("dedup", "--index", idx, *CODES, *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def act(idx, *args):
    r = run("dedup", "--index", idx, *CODES, *args)
    return r, (json.loads(r.stdout) if r.stdout else None)


def manifests(folder: Path) -> list[Path]:
    return sorted(folder.glob("hashdup-actions-*.jsonl"))


# -- keeper policies ----------------------------------------------------------------------------------------------

def _oracle_keeper(members, policy):
    """The keeper by the policy's written definition: filter to the best value of each criterion in turn."""
    criteria = {
        "resolution": [lambda m: -m.facts.pixels, lambda m: -m.facts.size, lambda m: m.facts.mtime_ns],
        "original": [lambda m: -m.facts.pixels, lambda m: -m.facts.size, lambda m: m.facts.mtime_ns],  # no descriptors
        "size": [lambda m: -m.facts.size, lambda m: -m.facts.pixels, lambda m: m.facts.mtime_ns],
        "oldest": [lambda m: m.facts.mtime_ns, lambda m: -m.facts.pixels, lambda m: -m.facts.size],
        "newest": [lambda m: -m.facts.mtime_ns, lambda m: -m.facts.pixels, lambda m: -m.facts.size],
        "path": [],
    }[policy] + [lambda m: m.path]
    pool = list(members)
    for c in criteria:
        best = min(c(m) for m in pool)
        pool = [m for m in pool if c(m) == best]
    assert len(pool) == 1
    return pool[0]


@pytest.mark.parametrize("policy", KEEP_POLICIES)
def test_keeper_policy_matches_its_definition(policy):
    rng = random.Random(0)
    for trial in range(300):
        n = rng.randint(1, 6)  # small value ranges, so that ties on the first criteria are common
        members = [Member(i, f"p/{rng.randint(0, 9)}-{i}.jpg", f"/x/{i}",
                          FileFacts(rng.choice([10, 20, 30]), rng.choice([1, 2, 3]), "h", rng.choice([4, 8]),
                                    rng.choice([4, 8]), "JPEG"))
                   for i in range(n)]
        ordered = order_members(members, policy)
        assert ordered[0] is _oracle_keeper(members, policy), (trial, policy)
        assert sorted(m.path for m in ordered[1:]) == [m.path for m in ordered[1:]]
        assert sorted(ordered, key=lambda m: m.id) == sorted(members, key=lambda m: m.id)


def _jpeg(path: Path, px: np.ndarray, quality: int) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(px).save(path, "JPEG", quality=quality)
    return path


def test_encoding_fidelity_reads_jpeg_quality_from_the_header(tmp_path):
    from PIL import Image

    from hashdup.io.fidelity import encoding_fidelity

    px = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for q in (20, 50, 75, 90, 97):
        assert encoding_fidelity(_jpeg(tmp_path / f"q{q}.jpg", px, q)) == pytest.approx(q, abs=1)
    Image.fromarray(px).save(tmp_path / "a.png")
    assert encoding_fidelity(tmp_path / "a.png") == 100
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    assert encoding_fidelity(tmp_path / "b.jpg") == 0 and encoding_fidelity(tmp_path / "missing.jpg") == 0


def test_original_keeper_is_full_size_central_best_encoded_not_a_copy_and_oldest(tmp_path):
    """Each rule of hashdup.dedup.original_keeper decides one case, with descriptors given as points."""
    from hashdup.dedup import original_keeper

    px = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    made = {}

    def m(i, name, point, quality=90, pixels=(64, 48), mtime=10, size=1000):
        path = tmp_path / name
        if quality == 100:
            from PIL import Image

            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(px).save(path)
        else:
            _jpeg(path, px, quality)
        made[i] = np.asarray(point, dtype=float)
        return Member(i, name, str(path), FileFacts(size, mtime, "h", pixels[0], pixels[1], "JPEG"))

    def dist(i, js):
        return np.array([np.linalg.norm(made[i] - made[j]) for j in js])

    def keeper(*members):
        return original_keeper(list(members), dist).path

    o = {"point": (0, 0)}
    # a crop has fewer pixels; a far edit (brightness) is not central even with the best encoding and oldest
    assert keeper(m(0, "o.jpg", **o), m(1, "crop.jpg", (0.1, 0), pixels=(40, 30), mtime=1),
                  m(2, "bright.jpg", (5, 0), quality=98, mtime=1), m(3, "text.jpg", (0, 5), mtime=1)) == "o.jpg"
    # central copies that differ only by their encoding: the best JPEG quality
    assert keeper(m(0, "o.jpg", quality=95, mtime=9, **o), m(1, "q60.jpg", (0.05, 0), quality=60, mtime=1),
                  m(2, "q90.jpg", (0, 0.05), quality=90, mtime=1), m(3, "far.jpg", (3, 3))) == "o.jpg"
    # a lossless conversion next to the JPEG it was made from is not the original
    assert keeper(m(0, "o.jpg", quality=90, mtime=9, **o), m(1, "o.png", (0, 0), quality=100, mtime=1)) == "o.jpg"
    # the same picture at the same quality: not the one named a copy, then the older
    assert keeper(m(0, "copies/o.jpg", mtime=1, **o), m(1, "photos/o.jpg", mtime=9, **o)) == "photos/o.jpg"
    assert keeper(m(0, "a (1).jpg", mtime=1, **o), m(1, "a.jpg", mtime=9, **o)) == "a.jpg"
    assert keeper(m(0, "b.jpg", mtime=5, **o), m(1, "a.jpg", mtime=9, **o)) == "b.jpg"


def test_default_keeper_is_the_original_photo_not_a_copy(lib):
    """sample_data: every planted copy (a re-encode, a downscale, a crop, an EXIF-turned copy, a PNG conversion, a
    byte-identical copy) is in copies/, every original in photos/; the copies are the older files here. Before the
    "original" policy, the EXIF-turned copy, the PNG and the byte-identical copy were kept."""
    _, _, idx = lib
    groups = groups_of(idx)
    assert len(groups) == 7
    assert [g["keep"] for g in groups if not g["keep"].startswith("imgs/photos/")] == []


def test_keep_policies_in_cli_output(lib):
    _, _images, idx = lib
    from PIL import Image

    def pixels(p):
        with Image.open(p) as im:
            return im.size[0] * im.size[1]

    groups = groups_of(idx)
    assert len(groups) == 7 and all(g["keep"] in g["paths"] for g in groups)  # the 7 planted groups
    for g in groups_of(idx, "--keep", "resolution"):  # most pixels, then the largest file
        best = max(g["paths"], key=lambda p: (pixels(p), os.path.getsize(p)))
        assert g["keep"] == best
    assert all(g["keep"].startswith("imgs/copies/") for g in groups_of(idx, "--keep", "oldest"))
    assert all(g["keep"].startswith("imgs/photos/") for g in groups_of(idx, "--keep", "newest"))
    assert all(g["keep"] == min(g["paths"]) for g in groups_of(idx, "--keep", "path"))
    for g in groups_of(idx, "--keep", "size"):
        assert os.path.getsize(g["keep"]) == max(os.path.getsize(p) for p in g["paths"])
    assert run("dedup", "--index", idx, "--keep", "biggest").exit_code == 2


# -- plan ---------------------------------------------------------------------------------------------------------

def _m(i, path):
    return Member(i, path, path, FileFacts(10, 1, "h", 4, 4, "JPEG"))


def test_plan_never_includes_a_keeper_and_names_move_targets_by_root(tmp_path):
    a, b = str(tmp_path / "one" / "photos"), str(tmp_path / "two" / "photos")
    g1 = Group(1, [_m(0, f"{a}/k.jpg"), _m(1, f"{a}/sub/d.jpg"), _m(2, f"{b}/k2.jpg")])
    g2 = Group(2, [_m(2, f"{b}/k2.jpg"), _m(3, f"{b}/d.jpg"), _m(1, f"{a}/sub/d.jpg")])  # overlaps g1
    steps = actions.plan([g1, g2], "move", str(tmp_path / "dups"), roots=[a, b])
    assert [s.path for s in steps] == [f"{a}/sub/d.jpg", f"{b}/d.jpg"]  # k2 is a keeper; sub/d.jpg planned once
    assert [s.target for s in steps] == [str(tmp_path / "dups" / "photos" / "sub" / "d.jpg"),
                                         str(tmp_path / "dups" / "photos-2" / "d.jpg")]
    one_root = actions.plan([g1], "move", str(tmp_path / "dups"), roots=[*[a, b][:1], b])
    assert one_root[0].target.endswith("dups/photos/sub/d.jpg")
    single = Group(1, [_m(0, f"{a}/k.jpg"), _m(1, f"{a}/sub/d.jpg")])
    assert actions.plan([single], "move", str(tmp_path / "d"), roots=[a])[0].target == str(tmp_path / "d/sub/d.jpg")
    links = actions.plan([g1], "symlink")
    assert {s.target for s in links} == {f"{a}/k.jpg"} and all(s.keeper == f"{a}/k.jpg" for s in links)
    assert [s.target for s in actions.plan([g1], "delete")] == [None, None]
    with pytest.raises(ValueError):
        actions.plan([g1], "move")
    with pytest.raises(ValueError):
        actions.plan([g1], "delete", "somewhere")


# -- dry runs and usage errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--action", "move", "dups"], ["--action", "symlink"], ["--action", "hardlink"],
                                  ["--action", "delete"]])
def test_without_yes_nothing_is_touched(lib, args):
    base, _images, idx = lib
    before = snapshot(base)
    r, rows = act(idx, *args)
    assert r.exit_code == 0, r.output
    assert len(rows) == 7 and all(row["status"] == "planned" and row["reason"] is None for row in rows)
    keeps = {g["keep"] for g in groups_of(idx)}
    assert not {row["path"] for row in rows} & keeps and {row["keep"] for row in rows} == keeps
    assert f"dry run: {len(rows)} files would be" in r.stderr and "--yes" in r.stderr
    assert snapshot(base) == before  # no file changed, no manifest, no DIR created
    assert not manifests(base) and not (base / "dups").exists()


@pytest.mark.parametrize("args", [
    ["--action", "move"],                      # move without DIR
    ["dups"],                                  # DIR without move
    ["--action", "symlink", "dups"],
    ["--action", "delete", "dups", "--yes"],
    ["--manifest", "m.jsonl"],                 # a manifest with nothing to journal
    ["--action", "bogus"],
])
def test_usage_errors_exit_2_and_touch_nothing(lib, args):
    base, _, idx = lib
    before = snapshot(base)
    r = run("dedup", "--index", idx, *CODES, *args)
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and snapshot(base) == before


def test_an_existing_manifest_is_never_overwritten(lib):
    base, _, idx = lib
    (base / "m.jsonl").write_text("mine\n")
    before = snapshot(base)
    r = run("dedup", "--index", idx, *CODES, "--action", "delete", "--yes", "--manifest", base / "m.jsonl")
    assert r.exit_code == 2 and "already exists" in r.stderr
    assert snapshot(base) == before


# -- acting -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action", ["move", "symlink", "hardlink", "delete"])
def test_yes_does_exactly_the_plan_and_never_touches_keepers(lib, action, desktop_trash):
    base, _images, idx = lib
    dest = ["dups"] if action == "move" else []
    _, planned = act(idx, "--action", action, *dest)
    before = snapshot(base)
    r, rows = act(idx, "--action", action, *dest, "--yes")
    assert r.exit_code == 0, r.output
    assert [x["path"] for x in rows] == [x["path"] for x in planned]
    if action != "delete":  # a delete's target, once done, is the file's place in the trash
        assert [x["target"] for x in rows] == [x["target"] for x in planned]
    assert all(x["status"] == "done" and x["reason"] is None for x in rows)
    after = snapshot(base)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    (manifest,) = manifests(base)
    journal_files = {p for p in changed if p.startswith(manifest.name)}
    touched = {x["path"] for x in rows}
    targets = {x["target"] for x in rows if action == "move"}
    move_dirs = {str(Path(t).parent) for t in targets} | {"dups"}
    assert changed - journal_files - move_dirs == touched | targets  # nothing else changed: keepers neither
    for x in rows:
        old = before[x["path"]]
        if action == "move":
            assert not os.path.lexists(x["path"]) and after[x["target"]][1:] == old[1:]  # same inode, time, bytes
        elif action == "symlink":
            assert os.readlink(x["path"]) == os.path.abspath(x["keep"]) and digest(x["path"]) == digest(x["keep"])
        elif action == "hardlink":
            assert os.path.samefile(x["path"], x["keep"]) and after[x["path"]] == after[x["keep"]]
        else:  # in the desktop trash, with the same bytes, and a .trashinfo that says where it came from
            assert not os.path.lexists(x["path"])
            trashed = Path(x["target"])
            assert trashed.parent == desktop_trash / "files" and digest(trashed) == old[4]
            info = (desktop_trash / "info" / (trashed.name + ".trashinfo")).read_text().splitlines()
            assert info[0] == "[Trash Info]" and info[1] == "Path=" + quote(os.path.abspath(x["path"]))
            assert info[2].startswith("DeletionDate=") and len(info[2]) == len("DeletionDate=2026-12-04T12:00:00")
    backups = sorted((base / (manifest.name + ".files")).glob("*"))
    if action in ("symlink", "hardlink"):  # the originals are kept for undo
        assert [digest(b) for b in backups] == [before[x["path"]][4] for x in rows]
    else:
        assert backups == []
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert lines[0]["format"] == "hashdup-actions" and lines[0]["action"] == action
    final = {}
    for rec in lines[1:]:
        final.setdefault(rec["n"], {}).update(rec)
    assert [e["status"] for e in final.values()] == ["done"] * 7
    assert [e["blake2b"] for e in final.values()] == [before[x["path"]][4] for x in rows]
    assert "hashdup undo" in r.stderr and "cannot be restored" not in r.stderr


def test_files_changed_after_indexing_are_skipped_the_rest_proceed(lib):
    base, _images, idx = lib
    groups = groups_of(idx)
    dups = [p for g in groups for p in g["paths"] if p != g["keep"]]
    same_time, touched = Path(dups[0]), Path(dups[1])
    keeper_touched = Path(groups[2]["keep"])
    st = same_time.stat()
    data = bytearray(same_time.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes, same modification time
    same_time.write_bytes(bytes(data))
    os.utime(same_time, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(touched)  # same bytes, new time
    os.utime(keeper_touched)  # the keeper of group 3 changed: its duplicate must stay
    _, dry = act(idx, "--action", "delete")  # the cheap dry-run look sees the times, not the flipped byte
    assert {x["path"]: x["status"] for x in dry}[str(touched)] == "skipped"
    before = snapshot(base)
    r, rows = act(idx, "--action", "delete", "--yes")
    assert r.exit_code == 1
    by_path = {x["path"]: x for x in rows}
    assert "content differs" in by_path[str(same_time)]["reason"]
    assert "modification time" in by_path[str(touched)]["reason"]
    third = next(p for p in groups[2]["paths"] if p != groups[2]["keep"])
    assert "keeper" in by_path[third]["reason"]
    skipped = {str(same_time), str(touched), third}
    assert {p for p, x in by_path.items() if x["status"] == "skipped"} == skipped
    for p in skipped:
        assert snapshot(base)[p] == before[p]
    assert all(not os.path.exists(p) for p in set(dups) - skipped)
    assert "skipped" in r.stderr and str(touched) in r.stderr


# -- undo ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action", ["move", "symlink", "hardlink"])
def test_undo_restores_every_file_byte_identical_and_twice_is_harmless(lib, action):
    base, images, idx = lib
    before = content(images)
    dest = ["dups"] if action == "move" else []
    r, _ = act(idx, "--action", action, *dest, "--yes")
    assert r.exit_code == 0 and content(images) != before
    (manifest,) = manifests(base)
    r = run("undo", manifest)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 7 and all(x["status"] == "undone" and x["reason"] is None for x in rows)
    assert content(images) == before  # same files, same bytes, same times
    assert not (base / (manifest.name + ".files")).exists()
    assert action != "move" or list((base / "dups").rglob("*")) == []
    text = manifest.read_text()
    r = run("undo", manifest, "--jsonl")
    assert r.exit_code == 0
    assert [json.loads(x)["reason"] for x in r.stdout.splitlines()] == ["already undone"] * 7
    assert content(images) == before and manifest.read_text() == text


@pytest.mark.parametrize("action", ["move", "symlink", "hardlink"])
def test_undo_never_overwrites(lib, action):
    base, _images, idx = lib
    dest = ["dups"] if action == "move" else []
    _, rows = act(idx, "--action", action, *dest, "--yes")
    (manifest,) = manifests(base)
    occupied = Path(rows[0]["path"])
    if os.path.lexists(occupied):
        occupied.unlink()
    occupied.write_bytes(b"a new file the user put there")
    r = run("undo", manifest)
    assert r.exit_code == 1
    out = {x["path"]: x for x in json.loads(r.stdout)}
    assert out[str(occupied)]["status"] == "skipped" and "not overwritten" in out[str(occupied)]["reason"]
    assert occupied.read_bytes() == b"a new file the user put there"
    assert [x["status"] for x in out.values()].count("undone") == len(rows) - 1  # all but the occupied one
    if action == "move":
        assert digest(rows[0]["target"]) == json.loads(manifest.read_text().splitlines()[1])["blake2b"]
    else:
        assert len(list((base / (manifest.name + ".files")).iterdir())) == 1  # the backup is kept
    occupied.unlink()
    r = run("undo", manifest, "--jsonl")  # the path is free again: the last change can be undone now
    assert r.exit_code == 0 and digest(occupied) == json.loads(manifest.read_text().splitlines()[1])["blake2b"]


def test_delete_then_undo_restores_byte_identical_files_from_the_trash(lib, desktop_trash):
    base, _, idx = lib
    before = snapshot(base)
    r, rows = act(idx, "--action", "delete", "--yes")
    assert r.exit_code == 0 and len(rows) == 7 and "moved to the trash" in r.stderr
    assert len(list((desktop_trash / "files").iterdir())) == 7
    (manifest,) = manifests(base)
    r = run("undo", manifest)
    assert r.exit_code == 0, r.output
    assert all(x["status"] == "undone" for x in json.loads(r.stdout))
    after = snapshot(base)
    assert {p: v[-1] for p, v in after.items() if not p.startswith(manifest.name)} == \
        {p: v[-1] for p, v in before.items()}  # every file back, byte-identical
    assert list((desktop_trash / "files").iterdir()) == [] and list((desktop_trash / "info").iterdir()) == []
    again = run("undo", manifest)  # harmless
    assert all(x["reason"] == "already undone" for x in json.loads(again.stdout))


def test_undo_never_overwrites_and_reports_an_emptied_trash(lib, desktop_trash):
    base, _, idx = lib
    _, rows = act(idx, "--action", "delete", "--yes")
    (manifest,) = manifests(base)
    Path(rows[0]["path"]).write_bytes(b"a new file at the old path")
    os.unlink(rows[1]["target"])  # the trash was emptied of this one
    r = run("undo", manifest)
    out = {x["path"]: x for x in json.loads(r.stdout)}
    assert r.exit_code == 1
    assert out[rows[0]["path"]]["status"] == "skipped" and "not overwritten" in out[rows[0]["path"]]["reason"]
    assert Path(rows[0]["path"]).read_bytes() == b"a new file at the old path"
    assert "no longer in the trash" in out[rows[1]["path"]]["reason"]
    assert [x["status"] for x in out.values()].count("undone") == 5


def test_permanent_delete_needs_yes_and_cannot_be_undone(lib, desktop_trash):
    base, _, idx = lib
    r, rows = act(idx, "--action", "delete", "--permanent")  # without --yes: a dry run
    assert r.exit_code == 0 and all(x["status"] == "planned" and os.path.exists(x["path"]) for x in rows)
    assert act(idx, "--action", "move", "d", "--permanent")[0].exit_code == 2  # only with delete
    r, rows = act(idx, "--action", "delete", "--permanent", "--yes")
    assert r.exit_code == 0 and "deleted permanently" in r.stderr and "cannot be restored" in r.stderr
    assert all(not os.path.lexists(x["path"]) and x["target"] is None for x in rows)
    assert not (desktop_trash / "files").exists() or list((desktop_trash / "files").iterdir()) == []
    (manifest,) = manifests(base)
    assert json.loads(manifest.read_text().splitlines()[0])["permanent"] is True
    r = run("undo", manifest)
    assert r.exit_code == 1 and "cannot be restored" in r.stdout
    assert all(x["status"] == "skipped" for x in json.loads(r.stdout))


def test_a_killed_run_leaves_an_accurate_manifest_that_undo_finishes(lib):
    """A run killed after the backup of entry 1 was made but before its link replaced it (state rebuilt by hand:
    the journal's last line for it is "started"), with a torn line at the end: undo puts everything back."""
    base, images, idx = lib
    before = content(images)
    _, _rows = act(idx, "--action", "symlink", "--yes")
    (manifest,) = manifests(base)
    lines = manifest.read_text().splitlines(keepends=True)
    first_done = next(i for i, x in enumerate(lines) if json.loads(x).get("status") == "done")
    started = json.loads(lines[first_done - 1])
    assert started["status"] == "started" and started["n"] == 1
    manifest.write_text("".join(lines[:first_done] + lines[first_done + 1:]) + '{"n": 7, "stat')
    path, backup = Path(started["path"]), base / started["backup"]
    path.unlink()
    os.link(backup, path)  # the original is both at its path and in the backup folder
    r = run("undo", manifest, "--jsonl")
    assert r.exit_code == 0, r.output
    assert content(images) == before and not (base / (manifest.name + ".files")).exists()
    assert all(json.loads(x) for x in manifest.read_text().splitlines())  # the torn line is gone, appends are whole


def test_undo_refuses_what_is_not_a_manifest(tmp_path):
    p = tmp_path / "photo.jpg"
    shutil.copy(SAMPLE / "photos" / "chelsea.jpg", p)
    data = p.read_bytes()
    r = run("undo", p)
    assert r.exit_code == 1 and "not a hashdup actions manifest" in r.stderr
    assert p.read_bytes() == data  # left exactly as it was
    assert run("undo", tmp_path / "none.jsonl").exit_code == 2


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev,
                    reason="needs a second file system at /dev/shm")
def test_across_file_systems(lib):
    """Moves into another file system are verified copies and undo brings them back; hard links are refused."""
    base, images, idx = lib
    before = content(images)
    shm = Path(os.environ.get("TMPDIR_SHM", "/dev/shm")) / f"hashdup-test-{os.getpid()}-{base.name}"
    try:
        r, rows = act(idx, "--action", "move", shm / "dups", "--yes")
        assert r.exit_code == 0 and all(x["status"] == "done" for x in rows)
        assert all(digest(x["target"]) == before[os.path.relpath(x["path"], images)][3] for x in rows)
        (manifest,) = manifests(base)
        assert run("undo", manifest).exit_code == 0 and content(images) == before
        far = shm / "far"
        far.mkdir()
        shutil.copy2(SAMPLE / "photos" / "chelsea.jpg", far / "chelsea.jpg")
        r = run("index", images, far, "--index", base / "idx2", "-q")
        assert r.exit_code == 0
        r, rows = act(base / "idx2", "--action", "hardlink", "--keep", "path", "--yes", "--manifest", base / "h.jsonl")
        crossing = [x for x in rows if Path(x["keep"]).is_relative_to(far) != Path(x["path"]).is_relative_to(far)]
        assert crossing and all("another file system" in x["reason"] for x in crossing)
        assert r.exit_code == 1
    finally:
        shutil.rmtree(shm, ignore_errors=True)


def test_names_that_are_not_utf8_survive_the_manifest_and_undo(tmp_path, monkeypatch):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = (SAMPLE / "photos" / "chelsea.jpg").read_bytes()
    odd = imgs / os.fsdecode(b"caf\xe9.jpg")
    odd.write_bytes(src)
    (imgs / "b.jpg").write_bytes(src)
    monkeypatch.chdir(tmp_path)
    assert run("index", imgs, "--index", tmp_path / "idx", "-q").exit_code == 0
    before = content(imgs)
    r, rows = act(tmp_path / "idx", "--action", "symlink", "--keep", "path", "--yes", "--manifest", "m.jsonl")
    assert r.exit_code == 0 and os.fsencode(rows[0]["path"]).endswith(b"imgs/caf\xe9.jpg")
    assert os.readlink(odd) == str(imgs / "b.jpg")
    assert run("undo", "m.jsonl").exit_code == 0 and content(imgs) == before
    r, rows = act(tmp_path / "idx", "--action", "move", "dups", "--keep", "path", "--yes", "--manifest", "o.jsonl")
    assert r.exit_code == 0 and not os.path.lexists(odd)
    assert (tmp_path / "dups" / os.fsdecode(b"caf\xe9.jpg")).read_bytes() == src
    assert run("undo", "o.jsonl").exit_code == 0 and content(imgs) == before


def test_cli_choices_match_the_library_and_undo_has_help():
    from hashdup import cli
    from hashdup.cli import dedup_commands as cli_dedup
    from hashdup.dedup import LINKAGES

    assert tuple(cli_dedup.KEEP_POLICIES) == KEEP_POLICIES and tuple(cli_dedup.DEDUP_ACTIONS) == actions.ACTIONS
    assert sorted(cli_dedup.LINKAGES) == sorted(LINKAGES)  # the CLI lists its default first
    text = " ".join(CliRunner().invoke(cli.cli, ["undo", "--help"]).output.split())
    assert "Example" in text and "deleted with --permanent cannot be restored" in text
    text = " ".join(CliRunner().invoke(cli.cli, ["dedup", "--help"]).output.split())
    assert "--yes" in text and "trash" in text and "--permanent" in text


# -- guard rails before work ---------------------------------------------------------------------------------------

def test_an_unwritable_manifest_is_refused_before_any_pair_is_verified(lib):
    base, _, idx = lib
    before = snapshot(base)
    r = run("dedup", "--index", idx, "--action", "delete", "--yes", "--manifest", base / "no" / "such" / "m.jsonl")
    assert r.exit_code == 2 and "--manifest" in r.output and "does not exist" in r.output
    assert not (idx / "verdicts.hdv").exists() and snapshot(base) == before  # nothing verified, nothing changed
    r = run("dedup", "--index", idx, "--action", "move", base / "imgs" / "photos" / "chelsea.jpg", "--yes")
    assert r.exit_code == 2 and not (idx / "verdicts.hdv").exists()


def test_a_wide_radius_without_verification_needs_force_to_act(lib):
    base, _, idx = lib
    before = snapshot(base)
    wide = ["--no-verify", "--radius", "64"]
    r = run("dedup", "--index", idx, *wide, "--action", "delete", "--yes")
    assert r.exit_code == 2 and "--force" in r.output and snapshot(base) == before
    r = run("dedup", "--index", idx, *wide, "--action", "delete")  # the plan, with a warning
    assert r.exit_code == 0 and "warning: group 1 holds 21 of 21 images" in r.stderr
    r = run("dedup", "--index", idx, *wide)
    assert r.exit_code == 0 and "warning" in r.stderr and len(json.loads(r.stdout)) == 1
    r = run("dedup", "--index", idx, *CODES)  # a radius that makes groups of two: no warning
    assert r.exit_code == 0 and "warning" not in r.stderr
    r = run("dedup", "--index", idx, *wide, "--action", "delete", "--yes", "--force")
    assert r.exit_code == 0 and "20 files moved to the trash" in r.stderr


# -- fresh or flagged ----------------------------------------------------------------------------------------------

def test_rows_of_files_that_vanished_or_changed_say_so_and_are_never_acted_on(lib):
    """Before: dedup listed a vanished file and one overwritten with text as duplicates, silently, exit 0."""
    _base, images, idx = lib
    (images / "copies" / "chelsea_q30.jpg").unlink()
    (images / "copies" / "astronaut_half.jpg").write_text("not a photo any more")
    r = run("dedup", "--index", idx, *CODES, "--jsonl")
    assert r.exit_code == 0 and "2 files vanished or changed since indexing" in r.stderr and "hashdup index" in r.stderr
    stale = {p: why for line in r.stdout.splitlines() for p, why in json.loads(line).get("stale", {}).items()}
    assert stale == {"imgs/copies/chelsea_q30.jpg": "the file no longer exists",
                     "imgs/copies/astronaut_half.jpg": "the file changed since it was indexed (size 31191 → 20 bytes)"}
    r = run("dedup", "--index", idx, *CODES, "--table")
    assert "imgs/copies/chelsea_q30.jpg  [the file no longer exists]" in r.stdout
    r = run("query", images / "photos" / "chelsea.jpg", "-k", "1", "--index", idx, "--jsonl")
    assert json.loads(r.stdout.splitlines()[0])["stale"] == "the file no longer exists" and "vanished" in r.stderr
    r, rows = act(idx, "--action", "move", "dups", "--yes")
    skipped = {x["path"] for x in rows if x["status"] == "skipped"}
    assert skipped == set(stale) and r.exit_code == 1


def test_original_keeper_of_a_giant_group_sums_over_a_sample(tmp_path):
    """A component of thousands of images (overlapping crops of a few photos) costs O(n), not O(n²)."""
    from hashdup.dedup.keepers import SPREAD_SAMPLE, original_keeper

    members = [Member(i, f"p/{i:04d}.jpg", str(tmp_path / f"{i}.jpg"), FileFacts(1000, i, "h", 64, 48, "JPEG"))
               for i in range(1000)]
    asked = []

    def dist(i, js):
        asked.append(len(js))
        return np.abs(np.asarray(js, dtype=float) - 500.0) + abs(i - 500.0)

    keeper = original_keeper(members, dist, fidelity=lambda m: 90.0)
    sample = np.linspace(0, 999, SPREAD_SAMPLE).round()
    spread = {i: np.abs(sample - 500).sum() + SPREAD_SAMPLE * abs(i - 500) for i in range(1000)}
    central = [i for i in range(1000) if spread[i] <= 1.15 * min(spread.values())]
    assert keeper.id == min(central)  # equal encodings: the oldest of the central ones
    assert len(asked) == 1000 and max(asked) == SPREAD_SAMPLE
