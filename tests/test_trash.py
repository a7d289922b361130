"""The desktop trash (hashdup.io.trash, the freedesktop.org Trash specification 1.0) and deletes that a killed run
leaves half done. Every test has its own $XDG_DATA_HOME (tests/conftest.py: desktop_trash)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from hashdup.dedup import actions
from hashdup.dedup.undo import undo
from hashdup.io import trash
from hashdup.io.facts import FileDigest

pytestmark = pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the freedesktop.org trash")


def info_of(t: trash.Trashed) -> dict[str, str]:
    lines = Path(t.info).read_text().splitlines()
    assert lines[0] == "[Trash Info]"
    return dict(line.split("=", 1) for line in lines[1:])


def test_reserve_commit_put_back_round_trip(tmp_path, desktop_trash):
    f = tmp_path / "a b%c é.jpg"
    f.write_bytes(b"pixels")
    t = trash.reserve(str(f))
    assert Path(t.info).parent == desktop_trash / "info" and Path(t.path).parent == desktop_trash / "files"
    assert f.exists() and not os.path.lexists(t.path)  # reserved only
    info = info_of(t)
    assert unquote(info["Path"]) == str(f) and "%20" in info["Path"] and "%25" in info["Path"]
    assert len(info["DeletionDate"]) == 19 and info["DeletionDate"][10] == "T"
    trash.commit(str(f), t)
    assert not f.exists() and Path(t.path).read_bytes() == b"pixels"
    trash.put_back(t, str(f))
    assert f.read_bytes() == b"pixels" and not os.path.lexists(t.path) and not os.path.lexists(t.info)


def test_names_in_the_trash_never_collide_and_nothing_is_overwritten(tmp_path, desktop_trash):
    made = []
    for k in range(3):
        f = tmp_path / str(k) / "same.jpg"
        f.parent.mkdir()
        f.write_bytes(bytes([k]))
        t = trash.reserve(str(f))
        trash.commit(str(f), t)
        made.append(t)
    assert [Path(t.path).name for t in made] == ["same.jpg", "same.2.jpg", "same.3.jpg"]
    assert [Path(t.path).read_bytes() for t in made] == [b"\0", b"\1", b"\2"]
    (desktop_trash / "files" / "orphan.jpg").write_bytes(b"x")  # a file without its .trashinfo is skipped over
    g = tmp_path / "orphan.jpg"
    g.write_bytes(b"mine")
    assert Path(trash.reserve(str(g)).path).name == "orphan.2.jpg"
    back = tmp_path / "0" / "same.jpg"
    back.write_bytes(b"new")  # the path is taken again: put_back refuses, the trashed file stays
    with pytest.raises(FileExistsError):
        trash.put_back(made[0], str(back))
    assert back.read_bytes() == b"new" and Path(made[0].path).read_bytes() == b"\0"


def test_top_directory_trash_when_home_is_another_file_system(tmp_path, monkeypatch):
    """The file's own file system (here: tmp_path as its top directory): $topdir/.Trash/$uid when the administrator
    made a sticky .Trash, else $topdir/.Trash-$uid; Path= is then relative to the top directory."""
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to put the home trash on")
    monkeypatch.setattr(trash, "_home_trash", lambda: str(other / f"hashdup-test-{os.getpid()}" / "Trash"))
    monkeypatch.setattr(trash, "_mount_point", lambda path: str(tmp_path))
    f = tmp_path / "pics" / "x.jpg"
    f.parent.mkdir()
    f.write_bytes(b"x")
    t = trash.reserve(str(f))
    assert Path(t.path).parent == tmp_path / f".Trash-{os.getuid()}" / "files"
    assert info_of(t)["Path"] == "pics/x.jpg"
    assert stat.S_IMODE((tmp_path / f".Trash-{os.getuid()}").stat().st_mode) == 0o700
    trash.cancel(t)
    admin = tmp_path / ".Trash"
    admin.mkdir()
    os.chmod(admin, 0o777)  # without the sticky bit it must not be used
    assert Path(trash.reserve(str(f)).path).parent == tmp_path / f".Trash-{os.getuid()}" / "files"
    os.chmod(admin, 0o1777)
    assert Path(trash.reserve(str(f)).path).parent == admin / str(os.getuid()) / "files"


def _lib_steps(tmp_path: Path, n: int = 2) -> list[actions.Step]:
    steps = []
    for k in range(n):
        f = tmp_path / f"dup{k}.jpg"
        f.write_bytes(f"copy {k}".encode())
        from hashdup.io.atomic import file_digest

        st = f.stat()
        keeper = tmp_path / f"keep{k}.jpg"
        keeper.write_bytes(b"keeper")
        kst = keeper.stat()
        steps.append(actions.Step(k + 1, "delete", str(f), str(keeper), None,
                                  FileDigest(st.st_size, st.st_mtime_ns, file_digest(str(f))),
                                  FileDigest(kst.st_size, kst.st_mtime_ns, file_digest(str(keeper)))))
    return steps


class Killed(BaseException):
    """A kill, as far as the code under test can tell: nothing after it runs."""


@pytest.mark.parametrize("when", ["before the move", "after the move"])
def test_a_delete_killed_half_way_is_undone(tmp_path, desktop_trash, monkeypatch, when):
    steps = _lib_steps(tmp_path)
    real = trash.commit

    def dies(path, to):
        if when == "after the move":
            real(path, to)
        raise Killed

    monkeypatch.setattr(trash, "commit", dies)
    with pytest.raises(Killed):
        actions.apply(steps, str(tmp_path / "m.jsonl"), index=str(tmp_path))
    monkeypatch.setattr(trash, "commit", real)
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lines[-1]["status"] == "started" and lines[-1]["trash"][0].startswith(str(desktop_trash))
    assert (tmp_path / "dup0.jpg").exists() == (when == "before the move")
    (result,) = undo(str(tmp_path / "m.jsonl"))
    assert result.status == "undone", result.reason
    assert (tmp_path / "dup0.jpg").read_bytes() == b"copy 0" and (tmp_path / "dup1.jpg").read_bytes() == b"copy 1"
    assert list((desktop_trash / "files").iterdir()) == [] and list((desktop_trash / "info").iterdir()) == []


def test_no_trash_fails_the_file_and_keeps_it(tmp_path, monkeypatch):
    steps = _lib_steps(tmp_path, 1)

    def refuse(path):
        raise trash.TrashError("no writable trash on the file system of " + path)

    monkeypatch.setattr(trash, "reserve", refuse)
    (done,) = actions.apply(steps, str(tmp_path / "m.jsonl"), index=str(tmp_path))
    assert done.status == "failed" and "no writable trash" in done.reason
    assert (tmp_path / "dup0.jpg").read_bytes() == b"copy 0"


def test_manifests_of_version_1_are_still_read(tmp_path):
    m = tmp_path / "old.jsonl"
    m.write_text(json.dumps({"format": "hashdup-actions", "version": 1, "index": "/x", "action": "delete",
                             "dest": None, "created": "2026-01-01T00:00:00Z"}) + "\n")
    assert undo(str(m)) == []
