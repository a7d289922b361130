"""The catalogue: one SQLite row per file seen by ``hashdup index``."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import quote

from hashdup.errors import IndexFileError
from hashdup.io.atomic import atomic_path
from hashdup.io.facts import FileStat, columns, from_columns, names

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE roots (root INTEGER PRIMARY KEY, path BLOB NOT NULL);
CREATE TABLE files (
    id       INTEGER,              -- row in the code and descriptor files; NULL when the file was skipped
    root     INTEGER NOT NULL REFERENCES roots(root),
    path     BLOB NOT NULL,        -- relative to the root, '/'-separated, raw file-name bytes
    size     INTEGER,              -- bytes
    mtime_ns INTEGER,              -- modification time, ns since the epoch
    blake2b  TEXT,                 -- blake2b-128 of the content, hex
    width    INTEGER,              -- pixels, upright (after EXIF orientation)
    height   INTEGER,
    format   TEXT,                 -- as decoded, e.g. JPEG
    status   TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    error    TEXT                  -- one-line reason when status = 'error'
);
CREATE UNIQUE INDEX files_id ON files(id) WHERE id IS NOT NULL;
CREATE UNIQUE INDEX files_path ON files(root, path);
CREATE INDEX files_hash ON files(blake2b) WHERE id IS NOT NULL;
"""


@dataclass(frozen=True)
class FileRecord:
    """One catalogue row (see the ``files`` table): ``facts`` are a :class:`~hashdup.io.facts.FileFacts` for an
    indexed file, for a skipped one its :class:`~hashdup.io.facts.FileStat` (None when it could not be taken)."""

    id: int | None
    root: int
    path: str
    facts: FileStat | None = None
    status: str = "ok"
    error: str | None = None

    @property
    def indexed_id(self) -> int:
        """:attr:`id` of a file that was indexed (its row in the code and descriptor files).

        Raises
        ------
        ValueError
            For a file that was skipped (``id`` is NULL).
        """
        if self.id is None:
            raise ValueError(f"{self.path!r} (root {self.root}) was not indexed (status {self.status!r}): it has no id")
        return self.id


#: The ``files`` columns, in the order of the table: FileRecord's fields with its facts' fields in place of ``facts``.
_NAMES = tuple(name for f in fields(FileRecord) for name in (names() if f.name == "facts" else (f.name,)))
_COLUMNS = ", ".join(_NAMES)


def _enc(path: str) -> bytes:
    return os.fsencode(path)


def _row_to_record(row: tuple) -> FileRecord:
    id_, root, path, *facts, status, error = row
    return FileRecord(id_, root, os.fsdecode(bytes(path)), from_columns(facts), status, error)


class Catalogue:
    """A read-only view of a catalogue file.

    The database is immutable once written (a new index generation writes a new file), so it is opened with
    SQLite's ``immutable`` flag: no locks, no journal.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise IndexFileError(str(self.path), "catalogue file is missing")
        uri = f"file:{quote(os.fsdecode(self.path.resolve()))}?mode=ro&immutable=1"
        try:
            self.db = sqlite3.connect(uri, uri=True)
            version = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise IndexFileError(str(self.path), f"not a readable catalogue: {e}") from e
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise IndexFileError(str(self.path),
                                 f"catalogue schema {version and version[0]}, expected {SCHEMA_VERSION}")
        self.roots = [os.fsdecode(bytes(p)) for (p,) in self.db.execute("SELECT path FROM roots ORDER BY root")]

    def close(self) -> None:
        self.db.close()

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self.db.execute("SELECT count(*) FROM files").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM files WHERE status = ?", (status,)).fetchone()[0]

    def records(self, ids: Iterable[int] | None = None) -> list[FileRecord]:
        """Records of indexed files, by id (all of them, in id order, when ``ids`` is None)."""
        if ids is None:
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE id IS NOT NULL ORDER BY id")
            return [_row_to_record(r) for r in rows]
        wanted = [int(i) for i in ids]
        found: dict[int, FileRecord] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE id IN ({marks})", chunk):
                rec = _row_to_record(r)
                found[rec.indexed_id] = rec  # WHERE id IN (...): never NULL
        return [found[i] for i in wanted]

    def hashes(self) -> list[str | None]:
        """The blake2b (hex) of every indexed file, by id: one column read, for callers that need no other field."""
        return [h for (h,) in self.db.execute("SELECT blake2b FROM files WHERE id IS NOT NULL ORDER BY id")]

    def by_path(self) -> dict[str, FileRecord]:
        """Every record, indexed or skipped, by absolute path (see :meth:`abspath`)."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM files")
        return {self.abspath(rec): rec for rec in map(_row_to_record, rows)}

    def errors(self) -> list[FileRecord]:
        """Files that were skipped, in path order."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE status = 'error' ORDER BY root, path")
        return [_row_to_record(r) for r in rows]

    def abspath(self, rec: FileRecord) -> str:
        return os.path.join(self.roots[rec.root], rec.path)

    def find(self, path: str) -> FileRecord | None:
        """The record of a file, if it is in the catalogue; symbolic links in ``path`` or in the roots are resolved."""
        wanted = {os.path.abspath(path), os.path.realpath(path)}
        for root, rpath in enumerate(self.roots):
            for root_form in {rpath, os.path.realpath(rpath)}:
                for p in wanted:
                    try:
                        rel = Path(p).relative_to(root_form).as_posix()
                    except ValueError:
                        continue
                    row = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE root = ? AND path = ?",
                                          (root, _enc(rel))).fetchone()
                    if row:
                        return _row_to_record(row)
        return None

    def identical_pairs(self) -> tuple[list[int], list[int]]:
        """Pairs of indexed ids with byte-identical content (each file linked to the first of its hash class)."""
        rows = self.db.execute(
            "SELECT blake2b, id FROM files WHERE id IS NOT NULL AND blake2b IN "
            "(SELECT blake2b FROM files WHERE id IS NOT NULL GROUP BY blake2b HAVING count(*) > 1) "
            "ORDER BY blake2b, id"
        )
        first: dict[str, int] = {}
        i_list, j_list = [], []
        for h, i in rows:
            if h in first:
                i_list.append(first[h])
                j_list.append(i)
            else:
                first[h] = i
        return i_list, j_list


def write_catalogue(path: str | os.PathLike[str], roots: list[str], records: Iterable[FileRecord]) -> None:
    """Write a new catalogue file atomically."""
    with atomic_path(path) as tmp:
        db = sqlite3.connect(tmp)
        try:
            db.execute("PRAGMA journal_mode = OFF")
            db.executescript(_SCHEMA)
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.executemany("INSERT INTO roots VALUES (?, ?)", [(i, _enc(r)) for i, r in enumerate(roots)])
            marks = ",".join("?" * len(_NAMES))
            db.executemany(f"INSERT INTO files ({_COLUMNS}) VALUES ({marks})",
                           ((r.id, r.root, _enc(r.path), *columns(r.facts), r.status, r.error) for r in records))
            db.commit()
        finally:
            db.close()


def staleness(path: str, stat: FileStat | None) -> str | None:
    """Why the file at ``path`` is no longer the one that was indexed with this size and modification time
    (``stat``), as the actions' check words it (:func:`hashdup.io.fileops.unchanged`, a cheap look: size and
    time, the content is not read, a symbolic link is followed); None when both are as recorded, or not known."""
    from hashdup.io.fileops import unchanged

    if stat is None:
        return None
    return unchanged(path, stat.size, stat.mtime_ns, "", "the file", content=False, follow=True)[0]
