"""Stored verdicts of the pixel verification: a dedup run's decisions, kept so that the next ``dedup``, ``dedup
--action … --yes`` or ``report`` does not verify the same pairs again.

A verdict depends only on the two images' local features, which depend only on the files' content and the
local-feature settings, and on the verifier's settings. So verdicts are keyed by the content hashes (blake2b-128,
as in the catalogue) of the two files, in the order they were compared, and by which way round the second was
compared; the file as a whole is keyed by a fingerprint of every setting (local features and verifier). They stay
valid across index generations: an incremental index run changes the hash of every changed file, so only pairs that
touch new or changed files are verified again, and verdicts of files that left the index are dropped when the file
is next written.

The file ``verdicts.hdv`` sits in the index folder beside the generations. Its header's frame (magic, version,
size, checksum) is :mod:`hashdup.io.header`'s; a file that is missing, corrupt, or written under other settings is
an empty store (the verdicts are only a cache), and it is replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hashdup.errors import IndexFileError
from hashdup.io.header import HeaderFormat

FILENAME = "verdicts.hdv"
MAGIC = b"HDUPVERD"
VERSION = 1
# own fields after magic, version, header size: n_rows, settings fingerprint
_HEADER = HeaderFormat(MAGIC, VERSION, "Q16s", kind="verdict file", format_name="verdict file format")
#: One stored verdict, 48 bytes: the two files' content hashes, the way asked (0 either, 1 plain, 2 mirrored), then
#: the verdict.
ROW = np.dtype([("a", "u1", (16,)), ("b", "u1", (16,)), ("way", "u1"), ("same", "u1"), ("mirrored", "u1"),
                ("reason", "u1"), ("inliers", "<u4"), ("ncc", "<f4"), ("overlap", "<f4")])
#: The reasons a verdict can give, by their stored code.
REASONS = ("", "unreadable", "no transform", "too few keypoints", "too few matches", "too few inliers",
           "implausible transform", "too little overlap", "pixels differ", "mirrored, not the whole frame",
           "too few close matches")

Key = tuple[bytes, bytes, int]
Value = tuple[bool, bool, str, int, float, float]  # same, mirrored, reason, inliers, ncc, overlap


def fingerprint(settings: dict[str, Any]) -> bytes:
    """16 bytes that change whenever one of ``settings`` (JSON-able) does."""
    return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=16).digest()


def way_code(mirrored: bool | None) -> int:
    """The stored code of the way a pair was asked to be compared."""
    return 0 if mirrored is None else 1 + int(bool(mirrored))


class VerdictStore:
    """The verdicts of one index folder under one set of settings.

    Parameters
    ----------
    folder : path-like
        The index folder.
    settings : dict
        Every setting verdicts depend on (JSON-able).
    """

    def __init__(self, folder: str | os.PathLike[str], settings: dict[str, Any]) -> None:
        self.error = ""  # why the last save failed
        self.path = Path(folder) / FILENAME
        self.fingerprint = fingerprint(settings)
        self._known: dict[Key, Value] = self._read()
        self.loaded = len(self._known)
        self.added = 0

    def __len__(self) -> int:
        return len(self._known)

    def _read(self) -> dict[Key, Value]:
        try:
            with _HEADER.open(self.path) as f:
                header = _HEADER.read(f, self.path)
                n_rows, fp = header.values
                if fp != self.fingerprint or header.file_size != _HEADER.size + n_rows * ROW.itemsize:
                    return {}
                _HEADER.verify_body(f, self.path, header, n_rows * ROW.itemsize)
                f.seek(_HEADER.size)
                rows = np.frombuffer(f.read(n_rows * ROW.itemsize), dtype=ROW)
        except IndexFileError:
            return {}  # missing, corrupt or of another version: verify again
        out: dict[Key, Value] = {}
        a_bytes, b_bytes = rows["a"].tobytes(), rows["b"].tobytes()  # (not "S16": numpy strips trailing zeros)
        for n, r in enumerate(rows[["way", "same", "mirrored", "reason", "inliers", "ncc", "overlap"]].tolist()):
            way, same, mirrored, reason, inliers, r_ncc, overlap = r
            if reason < len(REASONS):
                key = (a_bytes[16 * n : 16 * n + 16], b_bytes[16 * n : 16 * n + 16], way)
                out[key] = (bool(same), bool(mirrored), REASONS[reason], inliers, r_ncc, overlap)
        return out

    def get(self, a: bytes, b: bytes, way: int) -> Value | None:
        """The stored verdict of files with hashes ``a`` and ``b`` compared that way, if any."""
        return self._known.get((a, b, way))

    def put(self, a: bytes, b: bytes, way: int, value: Value) -> None:
        """Remember a new verdict (written by :meth:`save`)."""
        if (a, b, way) not in self._known:
            self.added += 1
        self._known[(a, b, way)] = value

    def save(self, hashes: Iterable[bytes]) -> bool:
        """Write the verdicts between files whose hashes are in ``hashes`` (the index's files) atomically, if any
        verdict was added. Returns whether the file was written; an index folder this process may not write to
        (read-only file system, no permission, a full disk) is not an error: the verdicts are only a cache, and the
        previous file stays whole (written atomically)."""
        if not self.added:
            return False
        present = set(hashes)
        keys = sorted(k for k in self._known if k[0] in present and k[1] in present)
        rows = np.zeros(len(keys), dtype=ROW)
        if keys:  # column by column: a row at a time took 12 s for the 800,000 verdicts of 100,000 images
            code = {r: n for n, r in enumerate(REASONS)}
            values = [self._known[k] for k in keys]
            rows["a"] = np.frombuffer(b"".join(k[0] for k in keys), np.uint8).reshape(-1, 16)
            rows["b"] = np.frombuffer(b"".join(k[1] for k in keys), np.uint8).reshape(-1, 16)
            rows["way"] = [k[2] for k in keys]
            for field, column in (("same", 0), ("mirrored", 1), ("inliers", 3), ("ncc", 4), ("overlap", 5)):
                rows[field] = [v[column] for v in values]
            rows["reason"] = [code.get(v[2], 0) for v in values]
        try:
            with _HEADER.create(self.path) as out:
                out.write(rows.tobytes())
                out.write_header(len(rows), self.fingerprint)
        except OSError as e:  # read-only, no permission, a full disk: the groups are found all the same
            self.error = f"{e.strerror or e}"
            return False
        self.added = 0
        return True


LINKS_FILENAME = "links.hdl"
_LINKS_HEADER = HeaderFormat(b"HDUPLINK", 1, "Q16s16s", kind="link file", format_name="link file format")


class LinkStore:
    """The decided pairs of the last dedup run (the pairs that connect every group), kept for the next run on the
    same index generation with the same settings: ``dedup --action … --yes`` and ``report`` after ``dedup`` then
    neither search for candidates nor verify anything.

    The file ``links.hdl`` holds, after a :mod:`hashdup.io.header` frame whose own fields are the number of pairs,
    a fingerprint of the generation (its manifest's checksum) and one of the settings, the pairs as little-endian
    int64 ``(i, j)`` rows. Anything else (missing, corrupt, another generation or settings) is no stored links.

    Parameters
    ----------
    folder : path-like
        The index folder.
    generation : str
        What identifies the index generation (its manifest's checksum).
    settings : dict
        Every setting the links depend on (JSON-able).
    """

    def __init__(self, folder: str | os.PathLike[str], generation: str, settings: dict[str, Any]) -> None:
        self.error = ""  # why the last save failed
        self.path = Path(folder) / LINKS_FILENAME
        self.generation = hashlib.blake2b(generation.encode(), digest_size=16).digest()
        self.fingerprint = fingerprint(settings)

    def load(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored ``(i, j)`` arrays, or None."""
        try:
            with _LINKS_HEADER.open(self.path) as f:
                header = _LINKS_HEADER.read(f, self.path)
                n, generation, fp = header.values
                if (generation, fp) != (self.generation, self.fingerprint) or header.file_size != (
                        _LINKS_HEADER.size + 16 * n):
                    return None
                _LINKS_HEADER.verify_body(f, self.path, header, 16 * n)
                f.seek(_LINKS_HEADER.size)
                pairs = np.frombuffer(f.read(16 * n), dtype="<i8").reshape(n, 2).astype(np.int64)
        except IndexFileError:
            return None
        return pairs[:, 0].copy(), pairs[:, 1].copy()

    def save(self, i: np.ndarray, j: np.ndarray) -> bool:
        """Store the pairs atomically; as :meth:`VerdictStore.save`, a folder this process may not write to is not an
        error."""
        pairs = np.ascontiguousarray(np.stack([np.asarray(i), np.asarray(j)], axis=1), dtype="<i8")
        try:
            with _LINKS_HEADER.create(self.path) as out:
                out.write(pairs.tobytes())
                out.write_header(len(pairs), self.generation, self.fingerprint)
        except OSError as e:
            self.error = f"{e.strerror or e}"
            return False
        return True
