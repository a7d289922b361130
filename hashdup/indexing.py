"""Incremental indexing: what a run can keep from the previous index and from the journal of an interrupted run,
and the extraction of everything else.

For every walked file, in walk order:

1. the previous index has a record at the same absolute path with the same size and mtime: its descriptor row,
   local features and metadata are kept without reading the file (*unchanged*) — unless the mtime lies within the file system's
   timestamp granularity of the moment the previous run started (:func:`hashdup.io.journal.in_doubt`), when the
   file is hashed again and kept only if its content hash is the recorded one;
2. else the journal of an interrupted run has it with the same size and mtime: its descriptor and local features
   are taken from there
   (*resumed*), under the same doubt rule;
3. else a file that disappeared from the index had the same size and mtime (a move or rename): the file is hashed,
   and if it has that content the old descriptor is kept;
4. else the file is read, decoded, described and its local features computed (:func:`hashdup.extract.extract`),
   and journaled as it arrives.

Files that were skipped with an error are always tried again; records that the walk no longer finds are dropped.
The new generation gets dense ids in walk order, so codes, descriptors, catalogue and bucket tables are all
rewritten; they are small next to decoding the images.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from hashdup.descriptors import Descriptor
from hashdup.descriptors.local import LocalExtractor
from hashdup.encoders import BaseEncoder, load_encoder
from hashdup.errors import HashdupError, IndexFileError, NoIndexError
from hashdup.extract import STORED_DTYPE, extract
from hashdup.io.atomic import file_digest
from hashdup.io.catalogue import FileRecord
from hashdup.io.featurefile import FeatureFile, LocalFeatures
from hashdup.io.journal import Journal, in_doubt
from hashdup.io.store import StoredIndex
from hashdup.io.walk import WalkResult, display_path
from hashdup.supervision import Supervision

if TYPE_CHECKING:
    from hashdup.pipeline import IndexSummary

Progress = Callable[[str, int, int], None]
OnProblem = Callable[[str, str], None]


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True))


def descriptor_settings(desc: Descriptor, local: LocalExtractor) -> dict[str, Any]:
    """What decides the descriptors and local features: name, parameters, length and stored dtype, and the local
    extractor's parameters (as stored in the manifest)."""
    return _plain({"name": desc.name, "params": desc.get_params(), "n_features": desc.n_features,
                   "dtype": np.dtype(STORED_DTYPE).name, "local": local.get_params()})


def supervision_settings(sup: Supervision) -> dict[str, Any]:
    """The supervision options, label and pair files named by absolute path and content hash."""
    out: dict[str, Any] = asdict(sup)
    for key in ("labels", "pairs"):
        if out[key]:
            out[key] = {"path": os.path.abspath(out[key]), "blake2b": file_digest(out[key])}
    return out


@dataclass
class Previous:
    """The last committed index as this run sees it.

    ``records`` (every catalogue record by absolute path) serve the added / updated / removed / unchanged counts
    whenever the previous catalogue is readable; ``descriptors`` and local ``features`` are set only when they can be
    reused (same descriptor and local-feature settings, every checksum right); otherwise ``reason`` says why not.
    """

    manifest: dict[str, Any] | None = None
    records: dict[str, FileRecord] = field(default_factory=dict)
    descriptors: NDArray[np.floating] | None = None
    features: FeatureFile | None = None
    reason: str = ""
    stored: StoredIndex | None = None

    @property
    def started_ns(self) -> int | None:
        value = (self.manifest or {}).get("started_ns")
        return value if isinstance(value, int) else None

    def close(self) -> None:
        if self.stored is not None:
            self.stored.close()


def open_previous(index_dir: str | os.PathLike[str], settings: dict[str, Any]) -> Previous:
    """Open the current generation of ``index_dir`` for reuse (see :class:`Previous`); never raises for a missing
    or damaged index, which only means that nothing is reused."""
    try:
        stored = StoredIndex(index_dir, verify=True)
    except NoIndexError:
        return Previous(reason="")
    except (IndexFileError, OSError) as e:
        return Previous(reason=f"the previous index is unreadable ({e})")
    prev = Previous(stored.manifest, stored=stored)
    try:
        prev.records = stored.catalogue.by_path()
        old = _plain({k: stored.manifest["descriptor"].get(k) for k in settings})
        if old["name"] != settings["name"]:
            prev.reason = f"the descriptor changed ({old['name']} → {settings['name']})"
        elif old.get("local") != settings.get("local") and {**old, "local": None} == {**settings, "local": None}:
            prev.reason = ("the index has no local features (written by an older hashdup)" if old.get("local") is None
                           else "the local-feature settings changed")
        elif old != settings:
            a, b = old.get("params") or {}, settings["params"]
            changed = [f"{k} {a.get(k)} → {b.get(k)}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
            prev.reason = f"the descriptor settings changed ({', '.join(changed) or 'stored format'})"
        else:
            prev.descriptors = stored.descriptors  # checks the checksum and shape
            prev.features = stored.features
    except (IndexFileError, OSError, ValueError) as e:
        prev.descriptors = prev.features = None
        prev.reason = f"the previous index is unreadable ({e})"
    return prev


def reusable_encoder(prev: Previous, enc: BaseEncoder, supervision: dict[str, Any], refit: bool
                     ) -> tuple[BaseEncoder | None, str]:
    """The previous index's fitted encoder when it was made with the requested settings, else None and the reason
    to fit one ("" for a first index)."""
    if prev.manifest is None or prev.descriptors is None:
        return None, prev.reason
    if refit:
        return None, "--refit was given"
    m = prev.manifest["encoder"]
    params = _plain(enc.json_params())
    old_params = m.get("params", {})
    if m["name"] != enc.name:
        return None, f"the encoder changed ({m['name']} → {enc.name})"
    if m["n_bits"] != enc.n_bits:
        return None, f"the code length changed ({m['n_bits']} → {enc.n_bits} bits)"
    if old_params != params:
        keys = sorted(k for k in params.keys() | old_params.keys() if params.get(k) != old_params.get(k))
        if keys == ["random_state"]:
            return None, f"the seed changed ({old_params.get('random_state')} → {params['random_state']})"
        return None, f"the encoder parameters changed ({', '.join(keys)})"
    if enc.supervision != "none" and prev.manifest.get("supervision") != _plain(supervision):
        return None, "the supervision options or files changed"
    path = prev.stored.path("encoder")  # type: ignore[union-attr]
    try:
        loaded = load_encoder(path)
    except IndexFileError as e:
        return None, f"the previous encoder file is unreadable ({e.problem})"
    if (loaded.fingerprint().hex() != m["fingerprint"] or loaded.name != enc.name
            or loaded.n_features_in_ != prev.descriptors.shape[1]):
        return None, "the previous encoder file does not match its index"
    return loaded, ""


@dataclass(frozen=True)
class _Kept:
    """A file's record, descriptor and local features taken over without decoding: ``row`` is a previous id, or a
    descriptor given with its ``local`` features."""

    origin: str  # "previous" or "journal"
    size: int
    mtime_ns: int
    blake2b: str
    width: int
    height: int
    format: str
    row: int | NDArray[np.float16]
    local: LocalFeatures | None = None


def gather(found: WalkResult, desc: Descriptor, local: LocalExtractor, prev: Previous, journal: Journal,
           summary: IndexSummary, progress: Progress, on_problem: OnProblem, batch_size: int,
           extract_options: dict[str, Any]
           ) -> tuple[list[FileRecord], NDArray[np.float16], NDArray[np.int64], list[LocalFeatures]]:
    """Catalogue records (walk order, dense ids), the float16 descriptors (row i for id i) of the walked files, for
    each row the previous index's row with the same descriptor (-1 for none), and the local features (item i for id
    i), reusing what the previous index and the journal hold (see the module docstring). Counts go to ``summary``
    (an :class:`hashdup.pipeline.IndexSummary`)."""
    keys = [found.abspath(f) for f in found.files]
    kept: list[_Kept | None] = [None] * len(keys)
    doubtful: list[tuple[int, list[_Kept]]] = []
    todo: list[int] = []
    journaled = journal.rows()
    walked = set(keys)
    reusable = prev.descriptors is not None
    vanished: dict[tuple[int | None, int | None], list[_Kept]] = {}
    if reusable:
        for path, rec in prev.records.items():
            if path not in walked and rec.id is not None:
                vanished.setdefault((rec.size, rec.mtime_ns), []).append(_from_record(rec))
    for i, key in enumerate(keys):
        try:
            st = os.stat(key)
        except OSError:
            todo.append(i)  # extraction reports why
            continue
        sig = (st.st_size, st.st_mtime_ns)
        rec = prev.records.get(key) if reusable else None
        row = journaled.get(key)
        if rec is not None and rec.id is not None and (rec.size, rec.mtime_ns) == sig:
            candidate, checked = _from_record(rec), prev.started_ns
        elif row is not None and (row.size, row.mtime_ns) == sig:
            candidate = _Kept("journal", row.size, row.mtime_ns, row.blake2b, row.width, row.height, row.format,
                              row.descriptor, row.local)
            checked = row.checked_ns
        elif sig in vanished:
            doubtful.append((i, vanished[sig]))
            continue
        else:
            todo.append(i)
            continue
        if in_doubt(candidate.mtime_ns, checked):
            doubtful.append((i, [candidate]))
        else:
            kept[i] = candidate
    for done, (i, candidates) in enumerate(doubtful, start=1):
        progress("hashing", done, len(doubtful))
        try:
            digest = file_digest(keys[i])
        except OSError:
            todo.append(i)
            continue
        summary.rehashed += 1
        kept[i] = next((c for c in candidates if c.blake2b == digest), None)
        if kept[i] is None:
            todo.append(i)
    todo.sort()
    extracted = _extract(keys, todo, desc, local, journal, summary, progress, on_problem, batch_size,
                         extract_options)
    return _assemble(found, keys, kept, extracted, desc.n_features, prev, summary)


def _from_record(rec: FileRecord) -> _Kept:
    return _Kept("previous", rec.size, rec.mtime_ns, rec.blake2b, rec.width, rec.height, rec.format,  # type: ignore[arg-type]
                 rec.id)  # type: ignore[arg-type]


def _extract(keys: list[str], todo: list[int], desc: Descriptor, local: LocalExtractor, journal: Journal,
             summary: IndexSummary, progress: Progress, on_problem: OnProblem, batch_size: int,
             extract_options: dict[str, Any]) -> dict[int, Any]:
    """Extract the files at ``todo`` (walk positions), journaling every described one as it arrives."""
    out: dict[int, Any] = {}
    checked_ns = time.time_ns()  # before any of them is read
    paths = [keys[i] for i in todo]
    for done, r in enumerate(extract(paths, desc, chunk_size=batch_size, local=local, **extract_options), start=1):
        i = todo[r.position]
        if r.error is not None:
            summary.skipped.append((display_path(keys[i]), r.error))
            on_problem(display_path(keys[i]), r.error)
        elif not r.ignored:
            r = _Kept("extracted", r.size, r.mtime_ns, r.blake2b, r.width, r.height, r.format,
                      np.asarray(r.descriptor).astype(STORED_DTYPE), r.local)
            journal.add(keys[i], r.size, r.mtime_ns, checked_ns, r.blake2b, r.width, r.height, r.format, r.row,
                        r.local)
            summary.decoded += 1
        out[i] = r
        progress("describing", done, len(paths))
    journal.commit()
    return out


def _assemble(found: WalkResult, keys: list[str], kept: list[_Kept | None], extracted: dict[int, Any],
              n_features: int, prev: Previous, summary: IndexSummary
              ) -> tuple[list[FileRecord], NDArray[np.float16], NDArray[np.int64], list[LocalFeatures]]:
    records: list[FileRecord] = []
    feats: list[LocalFeatures] = []
    first_by_hash: dict[str, int] = {}
    from_prev: list[tuple[int, int]] = []
    from_array: list[tuple[int, NDArray[np.float16]]] = []
    copies: list[tuple[int, int]] = []
    n_ok = 0
    for i, f in enumerate(found.files):
        k = kept[i] if kept[i] is not None else extracted[i]
        if not isinstance(k, _Kept):  # an Extracted that was ignored or failed
            if k.error is not None:
                records.append(FileRecord(None, f.root, f.relpath, k.size, k.mtime_ns, status="error", error=k.error))
            else:
                summary.ignored += 1
            continue
        summary.resumed += k.origin == "journal"
        records.append(FileRecord(n_ok, f.root, f.relpath, k.size, k.mtime_ns, k.blake2b, k.width, k.height,
                                  k.format))
        if k.origin == "previous":
            feats.append(prev.features[int(k.row)])  # type: ignore[index,arg-type]  # a view of the old file
        else:
            feats.append(k.local)  # type: ignore[arg-type]
        if k.blake2b in first_by_hash:
            copies.append((n_ok, first_by_hash[k.blake2b]))
            summary.exact_duplicates += 1
        else:
            first_by_hash[k.blake2b] = n_ok
            if k.origin == "previous":
                from_prev.append((n_ok, int(k.row)))  # type: ignore[arg-type]
            else:
                from_array.append((n_ok, k.row))  # type: ignore[arg-type]
        n_ok += 1
    X = np.zeros((n_ok, n_features), dtype=STORED_DTYPE)
    source = np.full(n_ok, -1, dtype=np.int64)
    if from_prev:
        new, old = np.array(from_prev, dtype=np.int64).T
        X[new] = prev.descriptors[old]  # type: ignore[index]
        source[new] = old
    for i, row in from_array:
        X[i] = row
    for i, j in copies:
        X[i], source[i], feats[i] = X[j], source[j], feats[j]
    _count(records, keys, found, kept, prev, summary)
    return records, X, source, feats


def _count(records: list[FileRecord], keys: list[str], found: WalkResult, kept: list[_Kept | None],
           prev: Previous, summary: IndexSummary) -> None:
    """added / updated / removed / unchanged, against the previous catalogue."""
    by_key = {found.abspath(f): i for i, f in enumerate(found.files)}
    now: set[str] = set()
    for r in records:
        key = os.path.join(found.roots[r.root], r.path)
        now.add(key)
        old = prev.records.get(key)
        k = kept[by_key[key]]
        if old is None:
            summary.added += 1
        elif (k is not None and k.origin == "previous" and k.row == old.id) or (
                (old.status, old.size, old.mtime_ns, old.blake2b, old.error)
                == (r.status, r.size, r.mtime_ns, r.blake2b, r.error)):
            summary.unchanged += 1
        else:
            summary.updated += 1
    summary.removed = sum(1 for key in prev.records if key not in now)


def encode_rows(enc: BaseEncoder, X: NDArray[np.floating], block: int = 65536) -> NDArray[np.uint8]:
    """Codes of ``X`` encoded in blocks of rows (so float64 copies stay small); equal to ``enc.encode(X)``."""
    if len(X) == 0:
        raise HashdupError("nothing to encode")
    return np.concatenate([enc.encode(np.asarray(X[a : a + block], dtype=np.float32))
                           for a in range(0, len(X), block)])


def codes_reusing(enc: BaseEncoder, X: NDArray[np.floating], source: NDArray[np.int64],
                  old_codes: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The codes of ``X`` under the previous index's own encoder: rows with a previous row (``source >= 0``, same
    descriptor) copy its code, the others are encoded. Equal to :func:`encode_rows`, since an encoder gives a row the
    same code whatever else is encoded with it."""
    new = np.flatnonzero(source < 0)
    codes = np.empty((len(X), old_codes.shape[1]), dtype=np.uint8)
    kept = np.flatnonzero(source >= 0)
    codes[kept] = old_codes[source[kept]]
    if len(new):
        codes[new] = encode_rows(enc, X[new])
    return codes


def library_paths(index_dir: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]], *,
                  replace: bool = False) -> tuple[list[str], list[str]]:
    """What a run indexes: ``(paths, new)``, the absolute folders and files to walk and those of them that the
    index did not hold before.

    An index is a library that grows: the paths given are added to those already indexed (a path inside one of
    them is already covered; one that contains some of them takes their place), and with no paths the ones already
    indexed are walked again. ``replace`` indexes exactly the paths given (files elsewhere leave the index). A path
    of the index that no longer exists (an unplugged drive) stops the run rather than dropping its files.

    Raises
    ------
    HashdupError
        No paths and no index yet, or a path of the index is missing.
    """
    from hashdup.io.store import read_manifest
    from hashdup.io.walk import normalise_roots

    try:
        manifest = read_manifest(index_dir)
        before = [os.fsdecode(p) for p in (manifest.get("paths") or manifest.get("roots") or [])]
    except (NoIndexError, IndexFileError, OSError, ValueError):
        before = []
    given = [os.path.abspath(os.fsdecode(p)) for p in paths]
    if not given and not before:
        raise HashdupError(f"no index at {index_dir} yet: give the folders to index (hashdup index DIR)")
    if replace or not before:
        chosen = normalise_roots(given or before)
    else:
        missing = [p for p in before if not os.path.lexists(p)]
        if missing:
            raise HashdupError(f"{missing[0]}, indexed before, is missing (an unplugged drive?): reconnect it, or "
                               f"remove it from the index with `hashdup forget {missing[0]}` (or index again "
                               "with --replace)")
        chosen = normalise_roots(before + given)
    return chosen, [p for p in chosen if p not in before]
