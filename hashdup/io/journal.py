"""The work journal of an indexing run: descriptors and local features saved as they are computed, so a killed run
loses little.

``journal.sqlite`` lives in the index folder while a ``hashdup index`` run is extracting, and is deleted after the
run commits its generation. It is never read by queries: the index is only what the manifest names. A run that is
killed (or fails) leaves it behind, and the next run takes from it every file whose size and modification time
still match (subject to the same timestamp-granularity doubt as the index, see :func:`in_doubt`) instead of
decoding it again. Rows are committed in SQLite transactions (write-ahead log), so a kill at any moment leaves the
journal as of its last commit.

A journal written with other descriptor settings is discarded when opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup.errors import HashdupError
from hashdup.io.facts import FileFacts, columns, names
from hashdup.io.featurefile import LocalFeatures

JOURNAL = "journal.sqlite"
VERSION = 2
#: Modification times closer than this to the moment a file was read may hide a later change of the same size
#: within the file system's timestamp granularity (2 s on FAT, 1 s on some network file systems, a clock tick on
#: others): such files are hashed again before their old descriptor is trusted (git's "racy clean" problem).
DOUBT_NS = 2_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path       BLOB PRIMARY KEY,   -- absolute path, raw bytes
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    checked_ns INTEGER NOT NULL,   -- wall clock (ns) before the file was read: see in_doubt()
    blake2b    TEXT NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    format     TEXT NOT NULL,
    descriptor BLOB NOT NULL,      -- float16, little-endian
    local      BLOB                -- LocalFeatures.to_bytes()
);
"""
#: The columns of a row as read and written here: its own, then its facts' (:func:`hashdup.io.facts.names`).
_ROW_NAMES = ("path", "checked_ns", "descriptor", "local", *names())
_ROW, _MARKS = ", ".join(_ROW_NAMES), ", ".join("?" * len(_ROW_NAMES))


def in_doubt(mtime_ns: int, checked_ns: int | None, granularity_ns: int = DOUBT_NS) -> bool:
    """Whether a file whose size and mtime are unchanged since it was read may still have changed.

    A file read at ``checked_ns`` and modified again within the same timestamp tick keeps its mtime; that is only
    possible when its mtime lies within ``granularity_ns`` of ``checked_ns`` (or after it). ``checked_ns`` None
    (unknown) is always in doubt.
    """
    return checked_ns is None or mtime_ns > checked_ns - granularity_ns


@dataclass(frozen=True)
class JournalRow:
    """A described file as journaled: its facts, when it was read (``checked_ns``, see :func:`in_doubt`), its
    descriptor row and local features."""

    facts: FileFacts
    checked_ns: int
    descriptor: NDArray[np.float16]
    local: LocalFeatures | None = None


class Journal:
    """The journal of one index folder, opened for a run that holds the writer lock.

    Parameters
    ----------
    folder : path-like
        The index folder.
    settings : dict
        JSON-able descriptor settings; rows written under other settings are dropped.
    n_features : int
        Descriptor length; rows of another length are ignored.
    commit_every : int
        Commit after this many new rows (and at least once a second).
    on_commit : callable, optional
        Called after every commit (a test hook).
    """

    def __init__(self, folder: str | os.PathLike[str], settings: dict[str, Any], n_features: int, *,
                 commit_every: int = 32, on_commit: Any = None) -> None:
        self.path = Path(folder) / JOURNAL
        self.n_features = n_features
        self.settings = settings
        self.commit_every = max(1, commit_every)
        self._on_commit = on_commit or (lambda: None)
        self._pending = 0
        self._last = time.monotonic()
        key = json.dumps({"version": VERSION, "settings": settings}, sort_keys=True)
        try:
            try:
                self.db = self._connect(key)
                self._rows = self._read()
            except sqlite3.DatabaseError:  # a damaged journal is only lost work: start again
                self.remove()
                self.db = self._connect(key)
                self._rows = {}
        except sqlite3.Error as e:
            raise HashdupError(f"cannot write the journal {self.path}: {e}") from e

    def _connect(self, key: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
            if row is None or row[0] != key:  # another version or other settings: its rows are no use
                db.execute("BEGIN")
                db.execute("DROP TABLE IF EXISTS files")
                db.execute(_SCHEMA.split(";")[1].strip())
                db.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (key,))
                db.execute("COMMIT")
            db.execute("SELECT count(*) FROM files").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def rows(self) -> dict[str, JournalRow]:
        """Every file journaled when the journal was opened, by absolute path."""
        return self._rows

    def _read(self) -> dict[str, JournalRow]:
        out: dict[str, JournalRow] = {}
        row_bytes = 2 * self.n_features
        for path, checked_ns, blob, local, *facts in self.db.execute(f"SELECT {_ROW} FROM files"):
            if isinstance(blob, bytes) and len(blob) == row_bytes:
                try:
                    feats = LocalFeatures.from_bytes(local)
                except (TypeError, ValueError):  # a damaged row is only lost work: the file is described again
                    continue
                if not self._fits(feats):
                    continue
                out[os.fsdecode(bytes(path))] = JournalRow(FileFacts(*facts), checked_ns,
                                                           np.frombuffer(blob, dtype="<f2"), feats)
        return out

    def _fits(self, feats: LocalFeatures) -> bool:
        """Whether a journaled record fits the run's local-feature settings (the feature file refuses others)."""
        limits = self.settings.get("local") or {}
        return (max(feats.frame_shape) == limits.get("frame") and len(feats.keypoints) <= limits.get("n_keypoints", 0)
                and 0 < feats.thumb.size <= limits.get("thumb_pixels", 0))

    def add(self, path: str, facts: FileFacts, checked_ns: int, descriptor: NDArray[np.floating],
            local: LocalFeatures | None = None) -> None:
        """Journal one described file (its facts, descriptor and local features); commits every ``commit_every``
        rows or once a second.

        Raises
        ------
        HashdupError
            When the journal cannot be written (a full disk).
        """
        blob = np.ascontiguousarray(descriptor, dtype="<f2").tobytes()
        try:
            if self._pending == 0:
                self.db.execute("BEGIN")
            self.db.execute(f"INSERT OR REPLACE INTO files ({_ROW}) VALUES ({_MARKS})",
                            (os.fsencode(path), checked_ns, blob, local.to_bytes() if local is not None else None,
                             *columns(facts)))
        except sqlite3.Error as e:
            raise HashdupError(f"cannot write the journal {self.path}: {e}") from e
        self._pending += 1
        if self._pending >= self.commit_every or time.monotonic() - self._last >= 1.0:
            self.commit()

    def commit(self) -> None:
        if self._pending:
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as e:
                raise HashdupError(f"cannot write the journal {self.path}: {e}") from e
            self._pending = 0
            self._last = time.monotonic()
            self._on_commit()

    def close(self) -> None:
        """Commit what is pending and close (the file stays, for the next run)."""
        with contextlib.suppress(sqlite3.Error, HashdupError):
            self.commit()
        self.db.close()

    def remove(self) -> None:
        """Delete the journal's files (after a committed generation has made them useless)."""
        with contextlib.suppress(sqlite3.Error, AttributeError):
            self.db.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
