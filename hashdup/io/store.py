"""The index folder: a manifest naming one consistent generation of files.

Layout of an index folder (default ``./.hashdup/``)::

    index.json                 the manifest: format version, generation, roots, descriptor and encoder
                               settings, counts, the name, size and checksum of every file below, and a
                               checksum of the manifest itself
    writer.lock                held (flock) by the one run allowed to write, naming it (:mod:`hashdup.io.lock`)
    journal.sqlite             only while a run works (or after it was killed): descriptors computed so far, so
                               the next run resumes (:mod:`hashdup.io.journal`); never read by queries
    codes-NNNNNN.hdc           packed codes (:class:`~hashdup.io.codefile.CodeFile`), row i = catalogue id i
    catalogue-NNNNNN.sqlite    one row per file seen (:mod:`hashdup.io.catalogue`)
    descriptors-NNNNNN.npy     float16 descriptors, row i = catalogue id i, memory-mapped on demand
    encoder-NNNNNN.npz         the fitted encoder's arrays and JSON header (no pickle)
    buckets-NNNNNN.hdb         LSH bucket tables for approximate queries (:mod:`hashdup.index.buckets`), opened on
                               demand

A run writes every file of a new generation under a new name (each atomically: temporary file, fsync, rename), then
replaces ``index.json`` atomically (temporary file, fsync, rename, fsync of the folder), then deletes the
generations before the previous one. Whenever a run is killed, ``index.json`` names either the old complete
generation or the new one, so the index always opens. Writers take :func:`writer_lock`, so two runs never write
the same generation.

Readers never lock and always see the last committed generation. The previous generation is kept until the next
commit, so a reader that read the manifest just before a commit still finds its files; a reader that finds a file
missing anyway (two commits in between) reads the manifest again and retries. Once open, a
:class:`StoredIndex` holds every file of its generation open, so the files it reads later (descriptors, bucket
tables) are still that generation's even after commits have deleted them (through ``/proc/self/fd`` on Linux).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from hashdup.errors import IndexFileError, NoIndexError
from hashdup.io.atomic import atomic_open, file_digest, fsync_dir, remove_stale_temps, temp_path
from hashdup.io.catalogue import Catalogue
from hashdup.io.codefile import CodeFile
from hashdup.io.featurefile import VERSION as FEATURE_FORMAT
from hashdup.io.featurefile import FeatureFile
from hashdup.io.lock import LOCK, writer_lock

__all__ = [
    "LOCK",
    "Generation",
    "StoredIndex",
    "commit",
    "kill_point",
    "new_generation",
    "read_manifest",
    "write_descriptors",
    "writer_lock",
]

MANIFEST = "index.json"
#: Largest manifest read; real ones are a few kB (a few more per root folder).
MAX_MANIFEST_BYTES = 16 << 20
FORMAT = "hashdup-index"
VERSION = 1
KINDS = {"codes": "hdc", "catalogue": "sqlite", "descriptors": "npy", "encoder": "npz", "buckets": "hdb",
         "features": "hdf"}
#: Files that carry their own checksum in their header (the manifest records only their size).
SELF_CHECKED = ("codes", "buckets", "features")
_GEN_FILE = re.compile(r"^(codes|catalogue|descriptors|encoder|buckets|features)-(\d{6})\."
                       r"(hdc|sqlite|npy|npz|hdb|hdf)$")
#: Times a reader re-reads the manifest when a file it names vanished under it (a commit in between).
OPEN_ATTEMPTS = 5
_KILL_COUNTS: dict[str, int] = {}


def kill_point(stage: str) -> None:
    """Test hook of the crash tests: with ``HASHDUP_TEST_KILL_AT=stage:n`` in the environment, the process kills
    itself with SIGKILL the ``n``-th time it reaches ``stage`` (no cleanup of any kind runs). Does nothing otherwise.

    Stages: ``journal`` (after a journal commit), ``written`` (after each generation file, in the order features,
    codes, buckets, catalogue, descriptors, encoder), ``manifest-synced`` (the new manifest flushed, not yet renamed),
    ``manifest-renamed`` (renamed, folder not yet flushed, old files all there), ``deleting`` (after each deleted
    old file), ``journal-removed``.
    """
    target = os.environ.get("HASHDUP_TEST_KILL_AT")
    if not target:
        return
    name, _, n = target.partition(":")
    if name != stage:
        return
    _KILL_COUNTS[stage] = _KILL_COUNTS.get(stage, 0) + 1
    if _KILL_COUNTS[stage] == int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)


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
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise IndexFileError(str(path), f"manifest is over {MAX_MANIFEST_BYTES} bytes: not a hashdup manifest")
        manifest = json.loads(raw)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        detail = "nested too deeply" if isinstance(e, RecursionError) else e
        raise IndexFileError(str(path), f"unreadable manifest: {detail}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFileError(str(path), "not a hashdup index manifest")
    if manifest.get("version") != VERSION:
        raise IndexFileError(str(path), f"index format version {manifest.get('version')}, this hashdup reads {VERSION}")
    if manifest.get("checksum") != _manifest_checksum(manifest):
        raise IndexFileError(str(path), "manifest checksum mismatch: the file was edited or is corrupt")
    try:
        for key, expected in _MANIFEST_FIELDS.items():
            value = manifest
            for part in key.split("."):
                value = value[part]
            if not isinstance(value, expected):
                raise TypeError(f"{key} is {type(value).__name__}")
        for kind in KINDS:
            if kind == "features" and kind not in manifest["files"]:  # an older hashdup's index: see features
                continue
            entry = manifest["files"][kind]
            if not isinstance(entry["name"], str) or not isinstance(entry["bytes"], int):
                raise TypeError(f"files.{kind}")
            name = manifest["files"][kind]["name"]
            if name in ("", ".", "..") or os.path.basename(name) != name or "\0" in name:  # files live in the folder
                raise TypeError(f"files.{kind}.name {name!r} is not a file name")
    except (KeyError, TypeError) as e:
        raise IndexFileError(str(path), f"malformed manifest ({e})") from e
    return manifest


_MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "generation": int, "roots": list, "files": dict, "counts": dict,
    "descriptor.name": str, "descriptor.params": dict, "descriptor.n_features": int,
    "encoder.name": str, "encoder.n_bits": int, "encoder.fingerprint": str,
}


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
    """Make ``gen`` the current generation: write the manifest atomically, then delete the files of every
    generation but ``gen`` and the one the replaced manifest named (kept for readers that opened it just before).

    ``fields`` are stored in the manifest next to the format, generation, creation time and the files' sizes and
    checksums, which are computed here from the files on disk (each already flushed to disk by its writer).
    """
    try:
        keep = {gen.number, int(read_manifest(gen.folder)["generation"])}
    except (NoIndexError, IndexFileError):
        keep = {gen.number}
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
    path = gen.folder / MANIFEST
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        kill_point("manifest-synced")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    kill_point("manifest-renamed")
    fsync_dir(gen.folder)
    for p in sorted(gen.folder.iterdir()):
        m = _GEN_FILE.match(p.name)
        if m and int(m.group(2)) not in keep:
            p.unlink(missing_ok=True)
            kill_point("deleting")
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
        self._verify = verify
        self._pins: dict[str, BinaryIO] = {}
        for attempt in range(OPEN_ATTEMPTS):
            self.manifest = read_manifest(self.folder)
            try:
                self._open()
                return
            except (IndexFileError, OSError):
                self.close()
                # a writer committed since the manifest was read, and removed what it named: read it again
                if attempt + 1 == OPEN_ATTEMPTS or read_manifest(self.folder) == self.manifest:
                    raise

    def _pin(self, kind: str, p: Path) -> None:
        """Hold ``p`` open for the life of this object, so that :meth:`path` can still reach it when a later commit
        deletes it (files opened later, such as the descriptors and bucket tables, then stay this generation's)."""
        try:
            self._pins[kind] = open(p, "rb", buffering=0)  # noqa: SIM115 - closed by close() (or collected)
        except FileNotFoundError:
            raise IndexFileError(str(p), f"{kind} file is missing") from None

    def _open(self) -> None:
        verify = self._verify
        files = self.manifest.get("files", {})
        for kind in KINDS:
            entry = files.get(kind)
            if kind == "features" and entry is None:  # an older hashdup's index: dedup asks for a new index run
                continue
            if not isinstance(entry, dict) or "name" not in entry:
                raise IndexFileError(str(self.folder / MANIFEST), f"manifest names no {kind} file")
            p = self.path(kind)
            if not p.is_file():
                raise IndexFileError(str(p), f"{kind} file is missing")
            self._pin(kind, p)
            if p.stat().st_size != entry.get("bytes"):
                raise IndexFileError(str(p),
                                     f"{kind} file is {p.stat().st_size} bytes, manifest says {entry.get('bytes')}")
            if verify and kind in ("catalogue", "encoder") and file_digest(p) != entry.get("blake2b"):
                raise IndexFileError(str(p), f"{kind} file checksum mismatch: the file is corrupt")
        self.codes = CodeFile.open(self.path("codes"), verify=verify)
        enc = self.manifest.get("encoder", {})
        if self.codes.fingerprint.hex() != enc.get("fingerprint"):
            raise IndexFileError(str(self.codes.path), "encoder fingerprint differs from the manifest's")
        if self.codes.n_bits != enc.get("n_bits"):
            raise IndexFileError(str(self.codes.path),
                                 f"{self.codes.n_bits}-bit codes, manifest says {enc.get('n_bits')}")
        self.catalogue = Catalogue(self.path("catalogue"))
        if self.catalogue.count("ok") != self.codes.n_rows:
            raise IndexFileError(str(self.catalogue.path),
                                 f"catalogue lists {self.catalogue.count('ok')} indexed files, code file has "
                                 f"{self.codes.n_rows} rows")

    def path(self, kind: str) -> Path:
        """The file of ``kind`` of the opened generation. Should a later commit have deleted it, the path leads to
        the copy this object holds open, through ``/proc/self/fd`` where the system has it (Linux)."""
        p = self.folder / self.manifest["files"][kind]["name"]
        pin = self._pins.get(kind)
        if pin is None or pin.closed:
            return p
        try:
            st, held = os.stat(p), os.fstat(pin.fileno())
            if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                return p
        except OSError:
            pass
        proc = Path(f"/proc/self/fd/{pin.fileno()}")
        return proc if proc.exists() else p

    def held_path(self, kind: str) -> Path:
        """A path that reaches the very file this object holds open (``/proc/self/fd`` where the system has it), for
        files read after opening: :meth:`path` checks that the name still leads there, but a commit may delete the
        file between that check and the read."""
        pin = self._pins.get(kind)
        if pin is not None and not pin.closed:
            proc = Path(f"/proc/self/fd/{pin.fileno()}")
            if proc.exists():
                return proc
        return self.path(kind)

    @cached_property
    def descriptors(self) -> NDArray[np.floating]:
        """The stored descriptors, memory-mapped, shape (n_rows, n_features); checked on first access."""
        p, held = self.path("descriptors"), self.held_path("descriptors")
        if self._verify and file_digest(held) != self.manifest["files"]["descriptors"].get("blake2b"):
            raise IndexFileError(str(p), "descriptors file checksum mismatch: the file is corrupt")
        try:
            X = np.load(held, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IndexFileError(str(p), f"unreadable descriptors file: {e}") from e
        expected = (self.codes.n_rows, self.manifest["descriptor"]["n_features"])
        if X.shape != expected:
            raise IndexFileError(str(p), f"descriptors have shape {X.shape}, expected {expected}")
        return X

    @cached_property
    def features(self) -> FeatureFile:
        """The stored local features (:mod:`hashdup.io.featurefile`), memory-mapped; checked on first access.

        Raises
        ------
        IndexFileError
            When the file is damaged, or the index was written by an older hashdup, without local features."""
        if "features" not in self.manifest["files"]:
            raise IndexFileError(str(self.folder / MANIFEST), "the index has no local features (written by an older "
                                                              "hashdup): run `hashdup index` again to add them")
        written = self.manifest["descriptor"].get("feature_format", 1)
        if written != FEATURE_FORMAT:
            raise IndexFileError(str(self.path("features")), f"the local features are stored in format {written}, "
                                 f"this hashdup reads format {FEATURE_FORMAT}: run `hashdup index` again to "
                                 "rewrite them")
        try:
            ff = FeatureFile.open(self.held_path("features"), verify=self._verify)
        except IndexFileError as e:  # named by the file's own path, not /proc's
            raise IndexFileError(str(self.path("features")), e.problem) from e
        if ff.n_rows != self.codes.n_rows:
            raise IndexFileError(str(ff.path), f"feature file has {ff.n_rows} images, code file has "
                                               f"{self.codes.n_rows} rows")
        return ff

    def close(self) -> None:
        if hasattr(self, "catalogue"):
            self.catalogue.close()
        for pin in self._pins.values():
            pin.close()
        self._pins.clear()


def write_descriptors(path: str | os.PathLike[str], X: NDArray[np.floating]) -> None:
    """Write descriptors as a ``.npy`` file atomically."""
    with atomic_open(path) as f:
        np.save(f, np.ascontiguousarray(X), allow_pickle=False)
