import os

from hashdup.io.walk import display_path, normalise_roots, walk


def touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")


def test_recursive_sorted_and_hidden(tmp_path):
    for rel in ["b/2.jpg", "b/10.jpg", "a.jpg", "c/d/e.png", ".hidden/x.jpg", "b/.y.jpg"]:
        touch(tmp_path / rel)
    got = [f.relpath for f in walk([tmp_path]).files]
    assert got == ["a.jpg", "b/10.jpg", "b/2.jpg", "c/d/e.png"]
    got = [f.relpath for f in walk([tmp_path], hidden=True).files]
    assert got == [".hidden/x.jpg", "a.jpg", "b/.y.jpg", "b/10.jpg", "b/2.jpg", "c/d/e.png"]


def test_symlink_loops_are_entered_once(tmp_path):
    touch(tmp_path / "a" / "1.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    os.symlink(tmp_path, tmp_path / "a" / "up")
    os.symlink("self.jpg", tmp_path / "self.jpg")  # a link to itself
    res = walk([tmp_path])
    assert [f.relpath for f in res.files] == ["a/1.jpg", "self.jpg"]
    assert res.links == 2


def test_each_file_once_whatever_the_links(tmp_path):
    touch(tmp_path / "b.jpg")
    os.symlink(tmp_path / "b.jpg", tmp_path / "a_alias.jpg")
    os.link(tmp_path / "b.jpg", tmp_path / "c_hard.jpg")
    touch(tmp_path / "d.jpg")
    res = walk([tmp_path])
    assert [f.relpath for f in res.files] == ["a_alias.jpg", "d.jpg"] and res.links == 2


def test_nested_and_repeated_roots(tmp_path):
    touch(tmp_path / "x.jpg")
    touch(tmp_path / "sub" / "y.jpg")
    res = walk([tmp_path / "sub", tmp_path])
    assert res.roots == [str(tmp_path)]
    assert [f.relpath for f in res.files] == ["sub/y.jpg", "x.jpg"]
    assert normalise_roots([tmp_path, tmp_path / "sub", tmp_path]) == [str(tmp_path)]
    res = walk([tmp_path / "sub" / "y.jpg", tmp_path / "x.jpg", tmp_path / "sub" / "y.jpg"])
    assert len(res.files) == 2 and len(res.roots) == 2


def test_single_file_and_missing_root(tmp_path):
    touch(tmp_path / "x.jpg")
    touch(tmp_path / "z.jpg")
    res = walk([tmp_path / "x.jpg", tmp_path / "missing", tmp_path / "z.jpg"])
    assert [res.abspath(f) for f in res.files] == [str(tmp_path / "x.jpg"), str(tmp_path / "z.jpg")]
    assert res.roots == [str(tmp_path)]
    assert res.problems == [(str(tmp_path / "missing"), "no such file or folder")]


def test_non_utf8_names(tmp_path):
    name = os.fsdecode(b"caf\xe9.jpg")
    touch(tmp_path / name)
    res = walk([tmp_path])
    assert os.fsencode(res.abspath(res.files[0])) == os.fsencode(str(tmp_path)) + b"/caf\xe9.jpg"


def test_display_path(tmp_path):
    assert display_path(str(tmp_path / "a" / "b.jpg"), cwd=str(tmp_path)) == "a/b.jpg"
    assert display_path("/elsewhere/b.jpg", cwd=str(tmp_path)) == "/elsewhere/b.jpg"
