"""File operations that never lose a file: checks that a file is as recorded, moves that never overwrite, links
swapped in atomically with the original kept, and their reversal.

:func:`unchanged` checks that a file is still as recorded; :func:`noreplace` and :func:`transfer` move a file without
ever overwriting; :func:`backup` keeps the original of a file about to be linked, :func:`replace_with_link` swaps in
the link atomically and :func:`restore` puts the original back; :func:`prune` removes the folders a move back leaves
empty. Which changes are allowed, and their journal, are the dedup actions' (:mod:`hashdup.dedup.actions`,
:mod:`hashdup.dedup.manifest`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Callable

from hashdup.io.atomic import file_digest, temp_path

__all__ = ["backup", "noreplace", "prune", "replace_with_link", "restore", "transfer", "unchanged"]


def unchanged(path: str, size: int, mtime_ns: int | None, blake2b: str, what: str, *, content: bool = True,
              follow: bool = False) -> tuple[str | None, os.stat_result | None]:
    """Whether ``path`` is still the regular file that was recorded, and why not.

    Parameters
    ----------
    path : str
    size, mtime_ns, blake2b : int, int or None, str
        What was recorded: bytes, modification time in ns since the epoch (None: not compared) and the hex
        blake2b-128 digest of the content.
    what : str
        How the reason names the file, e.g. "the file", "its keeper".
    content : bool
        Also hash the content (only when size and time match); False for a cheap look.
    follow : bool
        Follow a symbolic link at ``path`` (otherwise a symbolic link is refused).

    Returns
    -------
    reason : str or None
        None when the file is as recorded, else a one-line reason starting with ``what``.
    st : os.stat_result or None
        Its stat, when it could be taken.
    """
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return f"{what} no longer exists", None
    except OSError as e:
        return f"{what} cannot be read: {e.strerror}", None
    if stat.S_ISLNK(st.st_mode):
        return f"{what} is a symbolic link; only regular files are acted on", st
    if not stat.S_ISREG(st.st_mode):
        return f"{what} is no longer a regular file", st
    if st.st_size != size:
        return f"{what} changed since it was indexed (size {size} → {st.st_size} bytes)", st
    if mtime_ns is not None and st.st_mtime_ns != mtime_ns:
        return f"{what} changed since it was indexed (modification time)", st
    if content:
        if not blake2b:
            return f"{what} has no content hash in the index", st
        try:
            if file_digest(path) != blake2b:
                return f"{what} changed since it was indexed (content differs; same size and time)", st
        except OSError as e:
            return f"{what} cannot be read: {e.strerror}", st
    return None, st


def noreplace(src: str, dst: str) -> None:
    """Give ``src`` the name ``dst`` on the same file system, never overwriting.

    A hard link then an unlink, so atomic; on a file system without hard links, a check then a rename.

    Raises
    ------
    FileExistsError
        ``dst`` exists (``src`` is left as it was).
    OSError
        Any other failure, e.g. EXDEV when the two lie on different file systems.
    """
    try:
        os.link(src, dst)  # atomic and never overwrites
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(dst):  # a file system without hard links: check, then rename
            raise FileExistsError(errno.EEXIST, "file exists", dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _move(src: str, dst: str, blake2b: str, place: Callable[[str, str], None], differs: str) -> None:
    """Move ``src`` to ``dst`` with ``place`` (:func:`noreplace` or :func:`os.replace`, both atomic renames); across
    file systems, copy to a temporary file beside ``dst``, check it against ``blake2b``, ``place`` it, then remove
    ``src``. On any failure ``src`` stays and the temporary file is removed."""
    try:
        place(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    tmp = str(temp_path(dst))
    try:
        shutil.copy2(src, tmp)
        if file_digest(tmp) != blake2b:
            raise OSError(errno.EIO, differs, dst)
        place(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    os.unlink(src)


def transfer(src: str, dst: str, blake2b: str) -> None:
    """Move a file to ``dst`` without overwriting; across file systems by a copy checked against ``blake2b``.

    Parameters
    ----------
    src, dst : str
        The file and its new path (whose folder must exist).
    blake2b : str
        The hex blake2b-128 digest the copy must have, when it is a copy.

    Raises
    ------
    FileExistsError
        ``dst`` exists; ``src`` is left as it was.
    OSError
        EIO when the copy differs (it is removed, ``src`` is kept), or the operating system's error.
    """
    _move(src, dst, blake2b, noreplace, "the copy differs from the original")


def backup(src: str, dst: str, blake2b: str) -> None:
    """Put the file ``src`` also at ``dst``: a hard link when possible, else a copy checked against ``blake2b``.

    Creates ``dst``'s folder. ``src`` is not changed.

    Raises
    ------
    FileExistsError
        ``dst`` exists.
    OSError
        EIO when the copy differs (it is removed), or the operating system's error.
    """
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno in (errno.EEXIST,):
            raise
        shutil.copy2(src, dst)
        if file_digest(dst) != blake2b:
            os.unlink(dst)
            raise OSError(errno.EIO, "the backup copy differs from the original", dst) from e


def replace_with_link(path: str, target: str, *, symbolic: bool) -> None:
    """Replace ``path`` atomically by a link to ``target``: made under a temporary name beside it, renamed over it.

    ``path`` is at every moment either the original or the link, never missing. The folder is not flushed to disk
    (the caller does, once it has also dealt with its backup).

    Parameters
    ----------
    path : str
        The file to replace.
    target : str
        What the link points to: its text, for a symbolic link (``symbolic=True``); the file whose inode it shares,
        for a hard link.
    symbolic : bool

    Raises
    ------
    OSError
        The operating system's error; the temporary link is removed and ``path`` is left as it was.
    """
    tmp = str(temp_path(path))
    try:
        if symbolic:
            os.symlink(target, tmp)
        else:
            os.link(target, tmp)
        os.replace(tmp, path)  # atomic: the path is the original or the link, never missing
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def restore(src: str, dst: str, blake2b: str) -> None:
    """Put the backup ``src`` back at ``dst``, replacing what is there (the link made by :func:`replace_with_link`).

    On one file system a rename, so ``dst`` is at every moment the link or the original; across file systems a copy
    checked against ``blake2b``, renamed over ``dst``, then ``src`` is removed. The caller checks first that what is
    at ``dst`` may be replaced.

    Raises
    ------
    OSError
        EIO when the copy differs (``dst`` and ``src`` are left as they were), or the operating system's error.
    """
    _move(src, dst, blake2b, os.replace, "the copy differs from the backup")  # the link or the original, never neither


def prune(folder: str, top: str) -> None:
    """Remove ``folder`` and its parents while they are empty, up to but not including ``top``."""
    top = os.path.normpath(top)
    folder = os.path.normpath(folder)
    while folder != top and os.path.commonpath([top, folder]) == top:
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)
