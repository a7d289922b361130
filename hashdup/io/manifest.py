"""The manifest of ``hashdup dedup --action``, which ``hashdup undo`` reads, and the file operations it journals.

(Not the index's own manifest, ``index.json``: see :mod:`hashdup.io.store`.)

The operations: :func:`unchanged` checks that a file is still as recorded; :func:`noreplace` and :func:`transfer`
move a file without ever overwriting; :func:`backup` keeps the original of a file about to be linked,
:func:`replace_with_link` swaps in the link atomically and :func:`restore` puts the original back; :func:`prune`
removes the folders a move back leaves empty. Which changes are allowed is decided in :mod:`hashdup.actions`.

Format
------
A manifest is a JSON Lines file (``hashdup-actions-<UTC time>.jsonl`` by default), one compact JSON object per line,
ASCII only: a path that is not valid UTF-8 keeps its raw bytes as ``\\udcXX`` escapes (Python's surrogateescape),
so it round-trips exactly. It is a journal: lines are only appended, each flushed to disk (``fsync``) before the
change it announces is made, so a run killed at any moment leaves an accurate record.

Line 1 is the header::

    {"format": "hashdup-actions", "version": 2, "index": <absolute index folder>,
     "action": "move" | "symlink" | "hardlink" | "delete" | null, "dest": <absolute folder> | null,
     "created": "YYYY-MM-DDTHH:MM:SSZ", "permanent": <bool: deletes unlinked rather than moved to the trash>}

(Version 1, still read, had no ``permanent`` and no ``trash``: its deletes were permanent.)

Every later line describes one state of an entry, numbered ``"n"`` (1, 2, ...); a later line with the same ``n``
updates the fields it names, so an entry is the merge of its lines in order. The first line of an entry carries all
of its fields:

``group`` (int), ``action``, ``path`` (the duplicate, absolute), ``keeper`` (absolute), ``target`` (the move
destination, the keeper for links, null for deletes), ``size``, ``mtime_ns`` (ns since the epoch) and ``blake2b``
(hex, 128 bits) of the duplicate as indexed, ``keeper_size``, ``keeper_mtime_ns``, ``keeper_blake2b`` likewise,
``status``, ``reason`` (a one-line explanation, or null), ``backup`` (for links: where the original was kept,
relative to the manifest's folder, ``<manifest name>.files/<n:06d>-<file name>``), ``link`` (for hard links:
``[st_dev, st_ino]`` of the keeper, which the link shares) and ``trash`` (for deletes into the trash: ``[the
file's path in the trash, its .trashinfo or null]``, reserved before the entry is written; see
:mod:`hashdup.io.trash`).

``status`` is "skipped" (refused before anything changed; ``reason`` says why) or "started" (about to change);
a started entry is then updated by ``{"n", "status": "done" | "failed" | "skipped", "reason", "backup", "trash"}`` once the
change is made or refused, and ``hashdup undo`` appends ``{"n", "status": "undone", "reason": null}`` for every
change it reverses. An entry still "started" is one a killed run was in the middle of.

A last line without its newline (a write cut short by a kill) is ignored when read and cut off before anything is
appended. While a run writes a manifest it holds an exclusive ``flock`` on it; a second run is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from hashdup.errors import HashdupError
from hashdup.io.atomic import file_digest, fsync_dir, temp_path

__all__ = ["FORMAT", "VERSION", "ManifestError", "Journal", "read_manifest", "default_manifest", "noreplace",
           "transfer", "backup", "replace_with_link", "restore", "prune", "unchanged"]

FORMAT, VERSION = "hashdup-actions", 2
#: Versions read: 1 (no deletes into the trash, no "permanent" in the header) and 2.
READ_VERSIONS = (1, 2)


class ManifestError(HashdupError):
    """A manifest that cannot be read, is not a hashdup manifest, or is in use."""


class Journal:
    """A manifest, created or opened for appending, under an exclusive lock.

    Every record is flushed to disk before :meth:`write` returns, so that it precedes the change it announces.

    Parameters
    ----------
    path : str
        The manifest.
    header : dict, optional
        Given: create the manifest (refused with FileExistsError if ``path`` exists) and write ``header`` as its
        first line. Omitted: open an existing manifest for appending; its bytes are then in :attr:`text`.

    Attributes
    ----------
    path : str
        Absolute path of the manifest.
    text : bytes
        The manifest's content when it was opened (empty for a new one).

    Raises
    ------
    ManifestError
        When another process holds the manifest's lock.
    """

    def __init__(self, path: str, header: dict[str, Any] | None = None) -> None:
        import fcntl

        self.path = os.path.abspath(path)
        self.f = open(self.path, "xb" if header else "rb+")  # noqa: SIM115 - closed in close()
        try:
            fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.f.close()
            raise ManifestError(f"{path}: in use by another hashdup run") from None
        self.text = b"" if header else self.f.read()
        if header:
            self.write(header)
            fsync_dir(os.path.dirname(self.path))

    def drop_torn_line(self) -> None:
        """Cut a last line left unfinished by a killed run, so that appends start on a line of their own."""
        self.f.truncate(self.f.seek(self.text.rfind(b"\n") + 1))

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line and flush it to disk."""
        self.f.write(json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n")  # odd names as \udcXX
        self.f.flush()
        os.fsync(self.f.fileno())

    def record(self, n: int, entry: Any, **extra: Any) -> None:
        """Append entry ``n`` with every field of the dataclass instance ``entry`` (and ``extra``)."""
        self.write({"n": n, **asdict(entry), **extra})

    def backup_path(self, n: int, path: str) -> str:
        """Where entry ``n`` keeps the original of ``path``: ``<manifest>.files/<n:06d>-<file name>``, absolute."""
        return os.path.join(self.path + ".files", f"{n:06d}-{os.path.basename(path)}")

    def close(self) -> None:
        """Close the manifest, releasing its lock."""
        self.f.close()


def read_manifest(path: str, text: bytes | None = None) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The header and the merged entries of a manifest.

    Parameters
    ----------
    path : str
        The manifest (named in errors).
    text : bytes, optional
        Its content, when already read; otherwise ``path`` is read.

    Returns
    -------
    header : dict
    entries : dict of int to dict
        Entry number ``n`` to the merge of its lines, in file order. A torn last line (a killed run) is ignored.

    Raises
    ------
    ManifestError
        Not a hashdup actions manifest, another version, a line (other than the last) that is not JSON, or an
        entry without its number.
    """
    if text is None:
        with open(path, "rb") as f:
            text = f.read()
    lines = text.split(b"\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1 and records:  # no newline after it: a write cut short
                break
            if not records:
                raise ManifestError(f"{path}: not a hashdup actions manifest") from None
            raise ManifestError(f"{path}: line {i + 1} is not JSON") from None
    header = records[0] if records else {}
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a hashdup actions manifest")
    if header.get("version") not in READ_VERSIONS:
        raise ManifestError(f"{path}: manifest version {header.get('version')}, expected {VERSION}")
    entries: dict[int, dict[str, Any]] = {}
    for r in records[1:]:
        if not isinstance(r, dict) or not isinstance(r.get("n"), int):
            raise ManifestError(f"{path}: an entry without its number")
        entries.setdefault(r["n"], {}).update(r)
    return header, entries


def default_manifest(folder: str = ".") -> str:
    """``hashdup-actions-<UTC time>.jsonl`` in ``folder``, with a numeric suffix (``-2``, ...) if that name is taken."""
    stem = time.strftime("hashdup-actions-%Y%m%dT%H%M%SZ", time.gmtime())
    stem = stem if folder == "." else os.path.join(folder, stem)
    path, k = stem + ".jsonl", 2
    while os.path.lexists(path):
        path, k = f"{stem}-{k}.jsonl", k + 1
    return path


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
