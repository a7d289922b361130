"""The index folder: a manifest naming one consistent generation of files.

Layout of an index folder (default ``./.hashdup/``)::

    index.json                 the manifest: format version, generation, roots, descriptor and encoder
                               settings, counts, the name, size and checksum of every file below, and a
                               checksum of the manifest itself
    writer.lock                held (flock) by the one run allowed to write
    codes-NNNNNN.hdc           packed codes (:class:`~hashdup.io.codefile.CodeFile`), row i = catalogue id i
    catalogue-NNNNNN.sqlite    one row per file seen (:mod:`hashdup.io.catalogue`)
    descriptors-NNNNNN.npy     float16 descriptors, row i = catalogue id i, memory-mapped on demand
    encoder-NNNNNN.npz         the fitted encoder's arrays and JSON header (no pickle)
    buckets-NNNNNN.hdb         LSH bucket tables for approximate queries (:mod:`hashdup.index.buckets`), opened on
                               demand

A run writes every file of a new generation under a new name (each atomically: temporary file, fsync, rename), then
replaces ``index.json`` atomically, then deletes older generations. Whenever a run is killed, ``index.json``
names either the old complete generation or the new one, so the index always opens. Writers take
:func:`writer_lock`, so two runs never write the same generation.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup.errors import HashdupError, IndexFileError, NoIndexError
from hashdup.io.atomic import atomic_open, atomic_write_bytes, file_digest, fsync_dir, remove_stale_temps
from hashdup.io.catalogue import Catalogue
from hashdup.io.codefile import CodeFile

MANIFEST = "index.json"
LOCK = "writer.lock"
FORMAT = "hashdup-index"
VERSION = 1
KINDS = {"codes": "hdc", "catalogue": "sqlite", "descriptors": "npy", "encoder": "npz", "buckets": "hdb"}
#: Files that carry their own checksum in their header (the manifest records only their size).
SELF_CHECKED = ("codes", "buckets")
_GEN_FILE = re.compile(r"^(codes|catalogue|descriptors|encoder|buckets)-(\d{6})\.(hdc|sqlite|npy|npz|hdb)$")


@dataclass(frozen=True)
class Generation:
    """File paths of one index generation."""

    folder: Path
    number: int

    def path(self, kind: str) -> Path:
        return self.folder / f"{kind}-{self.number:06d}.{KINDS[kind]}"


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an index folder's manifest (format, version, its own checksum, the fields every reader uses).

    Raises
    ------
    NoIndexError
        When there is no manifest.
    IndexFileError
        When it is unreadable, of another format or version, edited or truncated.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise NoIndexError(f"no index at {folder} (no {MANIFEST}); run `hashdup index DIR` first")
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise IndexFileError(str(path), f"unreadable manifest: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFileError(str(path), "not a hashdup index manifest")
    if manifest.get("version") != VERSION:
        raise IndexFileError(str(path), f"index format version {manifest.get('version')}, this hashdup reads {VERSION}")
    if manifest.get("checksum") != _manifest_checksum(manifest):
        raise IndexFileError(str(path), "manifest checksum mismatch: the file was edited or is corrupt")
    try:
        for key, kind in _MANIFEST_FIELDS.items():
            value = manifest
            for part in key.split("."):
                value = value[part]
            if not isinstance(value, kind):
                raise TypeError(f"{key} is {type(value).__name__}")
        for kind in KINDS:
            if not isinstance(manifest["files"][kind]["name"], str) or not isinstance(manifest["files"][kind]["bytes"], int):
                raise TypeError(f"files.{kind}")
    except (KeyError, TypeError) as e:
        raise IndexFileError(str(path), f"malformed manifest ({e})") from e
    return manifest


_MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "generation": int, "roots": list, "files": dict, "counts": dict,
    "descriptor.name": str, "descriptor.params": dict, "descriptor.n_features": int,
    "encoder.name": str, "encoder.n_bits": int, "encoder.fingerprint": str,
}


@contextlib.contextmanager
def writer_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the index folder's writer lock (creating the folder): one writing run at a time.

    The lock is an ``flock`` on ``writer.lock``, released by the kernel when the process ends however it ends, so a
    killed run never leaves a stale lock.

    Raises
    ------
    HashdupError
        When another process holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HashdupError(f"another hashdup run is writing the index at {folder}; try again when it ends") from None
        yield
    finally:
        os.close(fd)


def new_generation(folder: str | os.PathLike[str]) -> Generation:
    """Name the files of the next generation (call with :func:`writer_lock` held)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    try:
        current = int(read_manifest(folder)["generation"])
    except (NoIndexError, IndexFileError, KeyError, TypeError, ValueError):
        current = max((int(m.group(2)) for p in folder.iterdir() if (m := _GEN_FILE.match(p.name))), default=0)
    return Generation(folder, current + 1)


def commit(gen: Generation, fields: dict[str, Any]) -> dict[str, Any]:
    """Make ``gen`` the current generation: write the manifest atomically, then delete older generations' files.

    ``fields`` are stored in the manifest next to the format, generation, creation time and the files' sizes and
    checksums, which are computed here from the files on disk.
    """
    files = {}
    for kind in KINDS:
        p = gen.path(kind)
        if not p.is_file():
            raise IndexFileError(str(p), "generation file was not written")
        entry: dict[str, Any] = {"name": p.name, "bytes": p.stat().st_size}
        if kind not in SELF_CHECKED:
            entry["blake2b"] = file_digest(p)
        files[kind] = entry
    manifest = {"format": FORMAT, "version": VERSION, "generation": gen.number,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields, "files": files}
    manifest["checksum"] = _manifest_checksum(manifest)
    atomic_write_bytes(gen.folder / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    for p in gen.folder.iterdir():
        m = _GEN_FILE.match(p.name)
        if m and int(m.group(2)) < gen.number:
            p.unlink(missing_ok=True)
    fsync_dir(gen.folder)
    return manifest


class StoredIndex:
    """An index folder opened for reading, every file checked against the manifest.

    Parameters
    ----------
    folder : path-like
    verify : bool, default True
        Check checksums (the code file's, the catalogue's and the encoder's) and not only sizes.

    Raises
    ------
    NoIndexError
        When the folder has no manifest.
    IndexFileError
        Naming the first file that is missing, has the wrong size or checksum, or disagrees with the others.
    """

    def __init__(self, folder: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self._verify = verify
        files = self.manifest.get("files", {})
        for kind in KINDS:
            entry = files.get(kind)
            if not isinstance(entry, dict) or "name" not in entry:
                raise IndexFileError(str(self.folder / MANIFEST), f"manifest names no {kind} file")
            p = self.path(kind)
            if not p.is_file():
                raise IndexFileError(str(p), f"{kind} file is missing")
            if p.stat().st_size != entry.get("bytes"):
                raise IndexFileError(str(p), f"{kind} file is {p.stat().st_size} bytes, manifest says {entry.get('bytes')}")
            if verify and kind in ("catalogue", "encoder") and file_digest(p) != entry.get("blake2b"):
                raise IndexFileError(str(p), f"{kind} file checksum mismatch: the file is corrupt")
        self.codes = CodeFile.open(self.path("codes"), verify=verify)
        enc = self.manifest.get("encoder", {})
        if self.codes.fingerprint.hex() != enc.get("fingerprint"):
            raise IndexFileError(str(self.codes.path), "encoder fingerprint differs from the manifest's")
        if self.codes.n_bits != enc.get("n_bits"):
            raise IndexFileError(str(self.codes.path), f"{self.codes.n_bits}-bit codes, manifest says {enc.get('n_bits')}")
        self.catalogue = Catalogue(self.path("catalogue"))
        if self.catalogue.count("ok") != self.codes.n_rows:
            raise IndexFileError(str(self.catalogue.path),
                                 f"catalogue lists {self.catalogue.count('ok')} indexed files, code file has "
                                 f"{self.codes.n_rows} rows")

    def path(self, kind: str) -> Path:
        return self.folder / self.manifest["files"][kind]["name"]

    @cached_property
    def descriptors(self) -> NDArray[np.floating]:
        """The stored descriptors, memory-mapped, shape (n_rows, n_features); checked on first access."""
        p = self.path("descriptors")
        if self._verify and file_digest(p) != self.manifest["files"]["descriptors"].get("blake2b"):
            raise IndexFileError(str(p), "descriptors file checksum mismatch: the file is corrupt")
        try:
            X = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IndexFileError(str(p), f"unreadable descriptors file: {e}") from e
        expected = (self.codes.n_rows, self.manifest["descriptor"]["n_features"])
        if X.shape != expected:
            raise IndexFileError(str(p), f"descriptors have shape {X.shape}, expected {expected}")
        return X

    def close(self) -> None:
        self.catalogue.close()


def write_descriptors(path: str | os.PathLike[str], X: NDArray[np.floating]) -> None:
    """Write descriptors as a ``.npy`` file atomically."""
    with atomic_open(path) as f:
        np.save(f, np.ascontiguousarray(X), allow_pickle=False)
