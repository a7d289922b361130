"""Incremental indexing: what a run can keep from the previous index and from the journal of an interrupted run,
and the extraction of everything else.

For every walked file, in walk order:

1. the previous index has a record at the same absolute path with the same size and mtime: its descriptor row,
   local features and metadata are kept without reading the file (*unchanged*) — unless the mtime lies within the
   file system's timestamp granularity of the moment the previous run started (:func:`hashdup.io.journal.in_doubt`),
   when the file is hashed again and kept only if its content hash is the recorded one;
2. else the journal of an interrupted run has it with the same size and mtime: its descriptor and local features
   are taken from there (*resumed*), under the same doubt rule;
3. else a file that disappeared from the index had the same size and mtime (a move or rename): the file is hashed,
   and if it has that content the old descriptor is kept;
4. else the file is read, decoded, described and its local features computed (:func:`hashdup.extract.extract`),
   and journaled as it arrives.

Files that were skipped with an error are always tried again; records that the walk no longer finds are dropped.
The new generation gets dense ids in walk order, so codes, descriptors, catalogue and bucket tables are all
rewritten; they are small next to decoding the images.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hashdup.descriptors import Descriptor
from hashdup.descriptors.local import LocalExtractor
from hashdup.extract import STORED_DTYPE, Extracted, extract
from hashdup.indexing.previous import Previous, open_previous
from hashdup.io.atomic import file_digest
from hashdup.io.catalogue import FileRecord
from hashdup.io.facts import FileDigest, FileFacts, columns
from hashdup.io.featurefile import LocalFeatures
from hashdup.io.journal import Journal, in_doubt
from hashdup.io.store import kill_point
from hashdup.io.walk import WalkResult, display_path

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as work advances; stages are "hashing" (files whose content is checked
again), "describing" (files), "editing" (self-supervised edits) and "training" (epochs or sweeps of a learned
encoder)."""
OnProblem = Callable[[str, str], None]
"""``on_problem(path, reason)``: called once for every file that is skipped."""


@dataclass
class Counts:
    """What :func:`collect` found, against the previous index.

    ``added``, ``updated``, ``removed`` and ``unchanged`` count catalogue records (indexed or skipped files);
    ``decoded`` files were read and described by this run, ``resumed`` ones taken from the journal of an interrupted
    run, ``rehashed`` ones hashed to confirm their content; ``skipped`` lists ``(path, reason)`` of the files that
    could not be indexed, ``ignored`` counts non-image files, ``exact_duplicates`` byte-identical copies.
    """

    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    exact_duplicates: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    decoded: int = 0
    resumed: int = 0
    rehashed: int = 0


@dataclass
class Collected:
    """Every walked file, described: catalogue ``records`` (walk order, dense ids), float16 descriptors ``X16``
    (row i for id i), ``source`` (for each row the previous index's row with the same descriptor, -1 for none),
    local ``features`` (item i for id i; reused ones are views of the previous index's feature file, valid until
    :func:`collect` closes it), the ``counts``, and the ``previous`` index (its encoder and codes may be reused)."""

    records: list[FileRecord]
    X16: NDArray[np.float16]
    source: NDArray[np.int64]
    features: list[LocalFeatures]
    counts: Counts
    previous: Previous
    journal: Journal

    def journal_done(self) -> None:
        """Remove the journal: call once its rows are all in a committed generation."""
        self.journal.remove()


@contextmanager
def collect(found: WalkResult, index_dir: str | os.PathLike[str], settings: dict[str, Any], desc: Descriptor,
            local: LocalExtractor, *, progress: Progress, on_problem: OnProblem, batch_size: int,
            extract_options: dict[str, Any]) -> Iterator[Collected]:
    """Gather the walked files (see the module docstring) with the previous index of ``index_dir`` (described with
    ``settings``) and the journal of an interrupted run, both opened here and closed when the block ends, however
    it ends. New descriptors are journaled as they are computed, so a killed run loses little.
    """
    prev = open_previous(index_dir, settings)
    try:
        journal = Journal(index_dir, settings, desc.n_features, commit_every=batch_size,
                          on_commit=lambda: kill_point("journal"))
    except BaseException:
        prev.close()
        raise
    try:
        counts = Counts()
        records, X16, source, feats = _gather(found, desc, local, prev, journal, counts, progress, on_problem,
                                              batch_size, extract_options)
        yield Collected(records, X16, source, feats, counts, prev, journal)
    finally:
        journal.close()
        prev.close()


@dataclass(frozen=True)
class _Kept:
    """A file's facts with its descriptor and local features: ``row`` is its id in the previous index (whose files
    hold them, reused without decoding), or a descriptor row (from the journal, or extracted by this run) given
    with its ``local`` features."""

    origin: Literal["previous", "journal", "extracted"]
    facts: FileFacts
    row: int | NDArray[np.float16]
    local: LocalFeatures | None = None  # set when row is a descriptor row


def _gather(found: WalkResult, desc: Descriptor, local: LocalExtractor, prev: Previous, journal: Journal,
           counts: Counts, progress: Progress, on_problem: OnProblem, batch_size: int,
           extract_options: dict[str, Any]
           ) -> tuple[list[FileRecord], NDArray[np.float16], NDArray[np.int64], list[LocalFeatures]]:
    """Catalogue records (walk order, dense ids), the float16 descriptors (row i for id i) of the walked files, for
    each row the previous index's row with the same descriptor (-1 for none), and the local features (item i for id
    i), reusing what the previous index and the journal hold (see the module docstring). Counts go to ``counts``."""
    keys = [found.abspath(f) for f in found.files]
    kept: list[_Kept | None] = [None] * len(keys)
    doubtful: list[tuple[int, list[_Kept]]] = []
    todo: list[int] = []
    journaled = journal.rows()
    walked = set(keys)
    reusable = prev.descriptors is not None
    vanished: dict[tuple[int, int], list[_Kept]] = {}
    if reusable:
        for path, old in prev.records.items():
            gone = _from_record(old) if path not in walked else None
            if gone is not None:
                vanished.setdefault((gone.facts.size, gone.facts.mtime_ns), []).append(gone)
    for i, key in enumerate(keys):
        try:
            st = os.stat(key)
        except OSError:
            todo.append(i)  # extraction reports why
            continue
        sig = (st.st_size, st.st_mtime_ns)
        rec = prev.records.get(key) if reusable else None
        same = _from_record(rec) if rec is not None else None
        row = journaled.get(key)
        checked: int | None
        if same is not None and (same.facts.size, same.facts.mtime_ns) == sig:
            candidate, checked = same, prev.started_ns
        elif row is not None and (row.facts.size, row.facts.mtime_ns) == sig:
            candidate = _Kept("journal", row.facts, row.descriptor, row.local)
            checked = row.checked_ns
        elif sig in vanished:
            doubtful.append((i, vanished[sig]))
            continue
        else:
            todo.append(i)
            continue
        if in_doubt(candidate.facts.mtime_ns, checked):
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
        counts.rehashed += 1
        kept[i] = next((c for c in candidates if c.facts.blake2b == digest), None)
        if kept[i] is None:
            todo.append(i)
    todo.sort()
    extracted = _extract(keys, todo, desc, local, journal, counts, progress, on_problem, batch_size,
                         extract_options)
    return _assemble(found, keys, kept, extracted, desc.n_features, prev, counts)


def _from_record(rec: FileRecord) -> _Kept | None:
    """The previous index's record of a file as a :class:`_Kept`; None for a file it did not index, or whose record
    lacks a fact (a damaged catalogue: the file is described again)."""
    if rec.id is None or not isinstance(rec.facts, FileFacts):
        return None
    return _Kept("previous", rec.facts, rec.id)


def _extract(keys: list[str], todo: list[int], desc: Descriptor, local: LocalExtractor, journal: Journal,
             counts: Counts, progress: Progress, on_problem: OnProblem, batch_size: int,
             extract_options: dict[str, Any]) -> dict[int, _Kept | Extracted]:
    """Extract the files at ``todo`` (walk positions), journaling every described one as it arrives; ignored and
    failed files stay :class:`~hashdup.extract.Extracted`."""
    out: dict[int, _Kept | Extracted] = {}
    checked_ns = time.time_ns()  # before any of them is read
    paths = [keys[i] for i in todo]
    for done, r in enumerate(extract(paths, desc, chunk_size=batch_size, local=local, **extract_options), start=1):
        i = todo[r.position]
        out[i] = r
        if r.error is not None:
            counts.skipped.append((display_path(keys[i]), r.error))
            on_problem(display_path(keys[i]), r.error)
        elif not r.ignored:
            if not isinstance(r.facts, FileFacts) or r.descriptor is None:  # extract() sets both for a described file
                raise RuntimeError(f"extraction returned an incomplete result for {display_path(keys[i])}: {r!r}")
            row = np.asarray(r.descriptor).astype(STORED_DTYPE)
            out[i] = _Kept("extracted", r.facts, row, r.local)
            journal.add(keys[i], r.facts, checked_ns, row, r.local)
            counts.decoded += 1
        progress("describing", done, len(paths))
    journal.commit()
    return out


def _assemble(found: WalkResult, keys: list[str], kept: list[_Kept | None], extracted: dict[int, _Kept | Extracted],
              n_features: int, prev: Previous, counts: Counts
              ) -> tuple[list[FileRecord], NDArray[np.float16], NDArray[np.int64], list[LocalFeatures]]:
    records: list[FileRecord] = []
    feats: list[LocalFeatures] = []
    first_by_hash: dict[str, int] = {}
    from_prev: list[tuple[int, int]] = []
    from_array: list[tuple[int, NDArray[np.float16]]] = []
    copies: list[tuple[int, int]] = []
    n_ok = 0
    for i, f in enumerate(found.files):
        kept_i = kept[i]
        k = kept_i if kept_i is not None else extracted[i]
        if not isinstance(k, _Kept):  # an Extracted that was ignored or failed
            if k.error is not None:
                records.append(FileRecord(None, f.root, f.relpath, k.facts, status="error", error=k.error))
            else:
                counts.ignored += 1
            continue
        counts.resumed += k.origin == "journal"
        records.append(FileRecord(n_ok, f.root, f.relpath, k.facts))
        if isinstance(k.row, np.ndarray):  # journaled or extracted
            assert k.local is not None  # both always come with local features (collect gives a LocalExtractor)
            feats.append(k.local)
        else:  # origin "previous": only a reusable previous index (features and descriptors open) gives those
            assert prev.features is not None
            feats.append(prev.features[int(k.row)])  # a view of the old file
        if k.facts.blake2b in first_by_hash:
            copies.append((n_ok, first_by_hash[k.facts.blake2b]))
            counts.exact_duplicates += 1
        else:
            first_by_hash[k.facts.blake2b] = n_ok
            if isinstance(k.row, np.ndarray):
                from_array.append((n_ok, k.row))
            else:
                from_prev.append((n_ok, int(k.row)))
        n_ok += 1
    X = np.zeros((n_ok, n_features), dtype=STORED_DTYPE)
    source = np.full(n_ok, -1, dtype=np.int64)
    if from_prev:
        assert prev.descriptors is not None  # from_prev rows come only from a reusable previous index
        new, old = np.array(from_prev, dtype=np.int64).T
        X[new] = prev.descriptors[old]
        source[new] = old
    for i, row in from_array:
        X[i] = row
    for i, j in copies:
        X[i], source[i], feats[i] = X[j], source[j], feats[j]
    _count(records, keys, found, kept, prev, counts)
    return records, X, source, feats


def _count(records: list[FileRecord], keys: list[str], found: WalkResult, kept: list[_Kept | None],
           prev: Previous, counts: Counts) -> None:
    """added / updated / removed / unchanged, against the previous catalogue."""
    by_key = {found.abspath(f): i for i, f in enumerate(found.files)}
    now: set[str] = set()
    for r in records:
        key = os.path.join(found.roots[r.root], r.path)
        now.add(key)
        old = prev.records.get(key)
        k = kept[by_key[key]]
        if old is None:
            counts.added += 1
        elif (k is not None and k.origin == "previous" and k.row == old.id) or (
                (old.status, columns(old.facts, FileDigest), old.error)
                == (r.status, columns(r.facts, FileDigest), r.error)):
            counts.unchanged += 1
        else:
            counts.updated += 1
    counts.removed = sum(1 for key in prev.records if key not in now)
