"""The desktop trash, so that ``hashdup dedup --action delete`` can be undone: the freedesktop.org Trash
specification (version 1.0), which Linux and BSD desktops (GNOME, KDE, Xfce) and their file managers share.

A file is trashed by renaming it into a trash directory on its own file system, beside a ``.trashinfo`` file that
records where it came from and when, so that both ``hashdup undo`` and the desktop's "Restore" put it back:

- the *home trash* ``$XDG_DATA_HOME/Trash`` (``~/.local/share/Trash``), for files on the same file system;
- otherwise the *top-directory trash* of the file's mount point: ``$topdir/.Trash/$uid`` when the administrator
  made ``$topdir/.Trash`` (a real directory with the sticky bit), else ``$topdir/.Trash-$uid``, created with mode
  0700.

A file is never copied across file systems (that would not be a trash but a slow copy), and nothing in a trash is
ever overwritten: the name is reserved by creating its ``.trashinfo`` exclusively (``O_EXCL``), as the
specification asks, before the file is renamed. :func:`reserve` and :func:`commit` are the two halves, so that the
caller can journal the reserved name in between (:mod:`hashdup.dedup.actions`).

On macOS the trash is ``~/.Trash`` (same-volume files only, no ``.trashinfo``); Windows' recycle bin is not
supported (:class:`TrashError`: delete permanently instead).

References
----------
freedesktop.org, "Desktop Trash Can Specification", version 1.0, 2014.
https://specifications.freedesktop.org/trash-spec/trashspec-1.0.html
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from dataclasses import dataclass
from urllib.parse import quote

from hashdup.io.atomic import fsync_dir
from hashdup.io.fileops import noreplace

__all__ = ["TrashError", "Trashed", "cancel", "commit", "put_back", "reserve"]


class TrashError(OSError):
    """No trash can take this file (another platform, no writable trash directory on its file system)."""


@dataclass(frozen=True)
class Trashed:
    """Where a file goes (or went) in a trash: ``path`` in the trash's ``files/``, and its ``info`` file (None on
    macOS, whose trash has none)."""

    path: str
    info: str | None


def _home_trash() -> str:
    if sys.platform == "darwin":
        return os.path.expanduser("~/.Trash")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "Trash")


def _mount_point(path: str) -> str:
    """The top directory of the file system ``path`` is on (the last parent on the same device)."""
    path = os.path.realpath(path)
    dev = os.lstat(path).st_dev
    while True:
        parent = os.path.dirname(path)
        if parent == path or os.lstat(parent).st_dev != dev:
            return path
        path = parent


def _usable(folder: str) -> bool:
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)  # the trash itself private (makedirs' mode covers only the last folder)
        os.makedirs(os.path.join(folder, "files"), mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(folder, "info"), mode=0o700, exist_ok=True)
    except OSError:
        return False
    return os.access(os.path.join(folder, "files"), os.W_OK) and os.access(os.path.join(folder, "info"), os.W_OK)


def _trash_for(path: str) -> tuple[str, str | None]:
    """``(trash directory, top directory)`` for ``path``: the top directory (None for the home trash) is what
    ``Path=`` in the ``.trashinfo`` is relative to."""
    if sys.platform == "win32":
        raise TrashError("the Windows recycle bin is not supported; delete permanently instead (--permanent)")
    dev = os.lstat(os.path.dirname(os.path.abspath(path)) or ".").st_dev
    home = _home_trash()
    home_parent = os.path.dirname(home)
    with contextlib.suppress(OSError):
        os.makedirs(home_parent, exist_ok=True)
    if os.path.isdir(home_parent) and os.lstat(home_parent).st_dev == dev and _usable(home):
        return home, None
    if sys.platform == "darwin":
        raise TrashError("the file is on another volume than the trash; delete permanently instead (--permanent)")
    top = _mount_point(os.path.dirname(os.path.abspath(path)))
    uid = os.getuid()
    admin = os.path.join(top, ".Trash")
    with contextlib.suppress(OSError):
        st = os.lstat(admin)
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and _usable(os.path.join(admin, str(uid))):
            return os.path.join(admin, str(uid)), top
    own = os.path.join(top, f".Trash-{uid}")
    if _usable(own):
        return own, top
    raise TrashError(f"no writable trash on the file system of {path} (tried {home} and {own}); "
                     "delete permanently instead (--permanent)")


def reserve(path: str) -> Trashed:
    """Choose the name ``path`` will have in its trash and reserve it (its ``.trashinfo`` is created, exclusively,
    with the original path and the time); nothing is moved yet. Raises :class:`TrashError` (an ``OSError``)."""
    path = os.path.abspath(path)
    trash, top = _trash_for(path)
    if sys.platform == "darwin":
        stem, ext = os.path.splitext(os.path.basename(path))
        for k in range(1, 10_000):
            name = os.path.basename(path) if k == 1 else f"{stem} {k}{ext}"
            if not os.path.lexists(os.path.join(trash, name)):
                return Trashed(os.path.join(trash, name), None)
        raise TrashError(f"no free name in {trash} for {path}")
    where = path if top is None else os.path.relpath(path, top)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    text = f"[Trash Info]\nPath={quote(os.fsencode(where), safe='/')}\nDeletionDate={stamp}\n".encode()
    stem, ext = os.path.splitext(os.path.basename(path))
    for k in range(1, 10_000):
        name = os.path.basename(path) if k == 1 else f"{stem}.{k}{ext}"
        info = os.path.join(trash, "info", name + ".trashinfo")
        try:
            fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        if os.path.lexists(os.path.join(trash, "files", name)):  # an orphan left by another program: keep looking
            os.unlink(info)
            continue
        return Trashed(os.path.join(trash, "files", name), info)
    raise TrashError(f"no free name in {trash} for {path}")


def commit(path: str, to: Trashed) -> None:
    """Move ``path`` into the trash under its reserved name (a rename: the same file system, never a copy)."""
    noreplace(path, to.path)
    fsync_dir(os.path.dirname(to.path))
    fsync_dir(os.path.dirname(path) or ".")


def cancel(to: Trashed) -> None:
    """Give up a reservation that was not committed (its ``.trashinfo`` is removed)."""
    if to.info is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(to.info)


def put_back(to: Trashed, path: str) -> None:
    """Move a trashed file back to ``path`` (which must not exist: never overwritten) and drop its ``.trashinfo``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    noreplace(to.path, path)
    fsync_dir(os.path.dirname(path) or ".")
    cancel(to)
