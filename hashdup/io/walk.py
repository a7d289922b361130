"""Finding files: a recursive, deterministic, symlink-loop-safe walk over folders."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
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
    """Everything a walk found: absolute roots, files in walk order, problems (path, reason), and the number of
    paths skipped because they lead to a file already found (symbolic links, hard links, overlapping roots)."""

    roots: list[str]
    files: list[Found] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    links: int = 0

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


def walk(paths: Iterable[str | os.PathLike[str]], *, hidden: bool = False) -> WalkResult:
    """Walk folders (and single files) recursively, in a deterministic order.

    Parameters
    ----------
    paths : iterable of path-like
        Folders to walk or single files to take.
    hidden : bool, default False
        Also enter hidden folders and take hidden files (names starting with ``.``).

    Returns
    -------
    WalkResult
        Files sorted by root, then by path component by component. Each file and folder is taken once: a path that
        leads to one already found (a symbolic or hard link, a symlink loop) is skipped and counted in ``links``.
        Broken symbolic links with image names are listed as files (reading them reports the problem); missing
        roots and unreadable folders are recorded in ``problems``.
    """
    result = WalkResult(roots=[])
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root in normalise_roots(paths):
        if os.path.isfile(root):  # a single file: its folder is the root, its name the relative path
            folder = os.path.dirname(root)
            if folder not in result.roots:
                result.roots.append(folder)
            _add_file(result, result.roots.index(folder), os.path.basename(root), root, seen_files)
        elif os.path.isdir(root):
            result.roots.append(root)
            _walk_dir(result, len(result.roots) - 1, root, "", hidden, seen_dirs, seen_files)
        else:
            result.problems.append((root, "no such file or folder"))
    return result


def _add_file(result: WalkResult, root: int, relpath: str, path: str, seen: set[tuple[int, int]]) -> None:
    try:
        st = os.stat(path)
    except OSError:  # broken link, vanished: listed, and reading it reports the problem
        result.files.append(Found(root, relpath))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        result.links += 1
        return
    seen.add(key)
    result.files.append(Found(root, relpath))


def _walk_dir(result: WalkResult, root: int, folder: str, rel: str, hidden: bool, seen_dirs: set[tuple[int, int]],
              seen_files: set[tuple[int, int]]) -> None:
    """Depth first, in sorted order, with a stack of open listings rather than recursion: folders nested thousands
    deep (the path length is the only limit) cannot exhaust Python's recursion limit."""
    stack = [_listing(result, folder, rel, hidden, seen_dirs)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        entry, relpath = item
        try:
            is_dir = entry.is_dir()
            is_file = not is_dir and entry.is_file()
        except OSError:  # a symlink loop, or vanished while walking
            is_dir = is_file = False
        if is_dir:
            stack.append(_listing(result, entry.path, relpath + "/", hidden, seen_dirs))
        elif is_file or is_image_name(entry.name):  # a FIFO, socket or device named like an image is listed
            _add_file(result, root, relpath, entry.path, seen_files)  # too: reading it reports what it is


def _listing(result: WalkResult, folder: str, rel: str, hidden: bool,
             seen_dirs: set[tuple[int, int]]) -> Iterator[tuple[os.DirEntry[str], str]]:
    """The entries of one folder, sorted by name, with their paths relative to the root; nothing (and a problem
    or a link recorded) for a folder that cannot be read or was already walked."""
    try:
        st = os.stat(folder)
    except OSError as e:
        result.problems.append((folder, f"cannot open folder: {e.strerror or e}"))
        return iter(())
    key = (st.st_dev, st.st_ino)
    if key in seen_dirs:
        result.links += 1
        return iter(())
    seen_dirs.add(key)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        result.problems.append((folder, f"cannot list folder: {e.strerror or e}"))
        return iter(())
    return ((e, f"{rel}{e.name}") for e in entries if hidden or not e.name.startswith("."))


def display_path(path: str, cwd: str | None = None) -> str:
    """A path as hashdup prints it: relative to the working folder when inside it, absolute otherwise."""
    cwd = cwd or os.getcwd()
    p = Path(path)
    try:
        return p.relative_to(cwd).as_posix() if p.is_absolute() else path
    except ValueError:
        return path
