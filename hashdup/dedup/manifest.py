"""The manifest of ``hashdup dedup --action``, which ``hashdup undo`` reads: a journal of the file operations of
:mod:`hashdup.io.fileops`.

(Not the index's own manifest, ``index.json``: see :mod:`hashdup.io.store`.) Which changes are allowed is decided in
:mod:`hashdup.dedup.actions`.

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
a started entry is then updated by ``{"n", "status": "done" | "failed" | "skipped", "reason", "backup", "trash"}``
once the change is made or refused, and ``hashdup undo`` appends ``{"n", "status": "undone", "reason": null}`` for every
change it reverses. An entry still "started" is one a killed run was in the middle of.

A last line without its newline (a write cut short by a kill) is ignored when read and cut off before anything is
appended. While a run writes a manifest it holds an exclusive ``flock`` on it; a second run is refused.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from hashdup.errors import HashdupError
from hashdup.io.atomic import fsync_dir

__all__ = ["FORMAT", "VERSION", "ActionLog", "ManifestError", "default_manifest", "read_actions"]

FORMAT, VERSION = "hashdup-actions", 2
#: Versions read: 1 (no deletes into the trash, no "permanent" in the header) and 2.
READ_VERSIONS = (1, 2)


class ManifestError(HashdupError):
    """A manifest that cannot be read, is not a hashdup manifest, or is in use."""


class ActionLog:
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

    def record(self, n: int, entry: Mapping[str, Any]) -> None:
        """Append entry ``n`` with every field of ``entry`` (see :meth:`hashdup.dedup.actions.Step.entry`)."""
        self.write({"n": n, **entry})

    def backup_path(self, n: int, path: str) -> str:
        """Where entry ``n`` keeps the original of ``path``: ``<manifest>.files/<n:06d>-<file name>``, absolute."""
        return os.path.join(self.path + ".files", f"{n:06d}-{os.path.basename(path)}")

    def close(self) -> None:
        """Close the manifest, releasing its lock."""
        self.f.close()


def read_actions(path: str, text: bytes | None = None) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
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
