"""Finding files: a recursive, deterministic, symlink-loop-safe walk over folders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hashdup.io.images import is_image_name


@dataclass(frozen=True)
class Found:
    """A file found under one of the walked roots.

    Attributes
    ----------
    root : int
        Position of the root in :attr:`WalkResult.roots`.
    relpath : str
        Path relative to the root, ``/``-separated (undecodable bytes kept as surrogate escapes).
    """

    root: int
    relpath: str


@dataclass
class WalkResult:
    """Everything a walk found: absolute roots, files in walk order, and problems (path, reason)."""

    roots: list[str]
    files: list[Found] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def abspath(self, found: Found) -> str:
        return os.path.join(self.roots[found.root], found.relpath)


def normalise_roots(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Absolute, de-duplicated roots in the order given; a root inside another root is dropped."""
    roots: list[str] = []
    for p in paths:
        a = os.path.abspath(os.fsdecode(p))
        if a not in roots:
            roots.append(a)
    def inside(a: str, b: str) -> bool:
        return a != b and (a + os.sep).startswith(b.rstrip(os.sep) + os.sep)
    return [r for r in roots if not any(inside(r, o) for o in roots)]


def walk(paths: Iterable[str | os.PathLike[str]], *, hidden: bool = False,
         exclude: Iterable[str | os.PathLike[str]] = ()) -> WalkResult:
    """Walk folders (and single files) recursively, in a deterministic order.

    Parameters
    ----------
    paths : iterable of path-like
        Folders to walk or single files to take.
    hidden : bool, default False
        Also enter hidden folders and take hidden files (names starting with ``.``).
    exclude : iterable of path-like
        Folders never entered (the index folder itself).

    Returns
    -------
    WalkResult
        Files sorted by root, then by path component by component; symbolic links to folders are followed once
        (a folder reached twice, e.g. through a symlink loop, is entered only the first time). Broken symbolic links
        with image names are listed as files (reading them reports the problem); unreadable folders are recorded in
        ``problems``.
    """
    result = WalkResult(roots=normalise_roots(paths))
    excluded = {os.path.realpath(os.fsdecode(e)) for e in exclude}
    seen_dirs: set[tuple[int, int]] = set()
    for i, root in enumerate(result.roots):
        if os.path.isfile(root):
            # a single file: its folder is the root, its name the relative path
            result.roots[i] = os.path.dirname(root)
            result.files.append(Found(i, os.path.basename(root)))
        elif os.path.isdir(root):
            _walk_dir(result, i, root, "", hidden, excluded, seen_dirs)
        else:
            result.problems.append((root, "no such file or folder"))
    return result


def _walk_dir(result: WalkResult, root: int, folder: str, rel: str, hidden: bool, excluded: set[str],
              seen: set[tuple[int, int]]) -> None:
    try:
        st = os.stat(folder)
    except OSError as e:
        result.problems.append((folder, f"cannot open folder: {e.strerror or e}"))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen or os.path.realpath(folder) in excluded:
        return
    seen.add(key)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        result.problems.append((folder, f"cannot list folder: {e.strerror or e}"))
        return
    for entry in entries:
        if not hidden and entry.name.startswith("."):
            continue
        relpath = f"{rel}{entry.name}"
        try:
            is_dir = entry.is_dir()
            is_file = not is_dir and entry.is_file()
        except OSError:
            is_dir = is_file = False
        if is_dir:
            _walk_dir(result, root, entry.path, relpath + "/", hidden, excluded, seen)
        elif is_file:
            result.files.append(Found(root, relpath))
        elif entry.is_symlink() and is_image_name(entry.name):
            result.files.append(Found(root, relpath))  # a broken link: reading it reports the problem


def display_path(path: str, cwd: str | None = None) -> str:
    """A path as hashdup prints it: relative to the working folder when inside it, absolute otherwise."""
    cwd = cwd or os.getcwd()
    p = Path(path)
    try:
        return p.relative_to(cwd).as_posix() if p.is_absolute() else path
    except ValueError:
        return path
