"""The workflows behind the commands: index a folder, answer queries, group near-duplicates, describe an index.

Everything here returns plain data (lists and dicts ready for JSON); ``cli.py`` only parses options and prints.
Descriptors are stored as float16, and every computation (fitting, encoding, queries) uses the stored values, so
an index can be refitted from disk and gives the same codes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup import __version__, bits
from hashdup.descriptors import Descriptor, DescriptorName, make_descriptor
from hashdup.descriptors.local import LocalExtractor
from hashdup.encoders import BaseEncoder, EncoderName, load_encoder, make_encoder
from hashdup.errors import HashdupError, ImageError, IndexFileError
from hashdup.extract import STORED_DTYPE, describe_images  # noqa: F401 - importable from here, as before
from hashdup.index import HammingIndex, connected_groups
from hashdup.io import images
from hashdup.io.catalogue import FileRecord, staleness, write_catalogue
from hashdup.io.codefile import CodeFile
from hashdup.io.featurefile import FeatureFile
from hashdup.io.verdicts import FILENAME as VERDICTS
from hashdup.io.verdicts import LINKS_FILENAME as LINKS
from hashdup.io.journal import Journal
from hashdup.io.store import (Generation, StoredIndex, commit, kill_point, new_generation, write_descriptors,
                              writer_lock)
from hashdup.io.walk import display_path, walk
from hashdup.supervision import (PathIndex, Supervision, Training, edit_pairs, encode_labels, labels_from_csv,
                                 labels_from_dirs, pairs_from_csv)

DEFAULT_INDEX = ".hashdup"
#: Default Hamming radius of ``dedup``, as a fraction of the code length: 3 bits of 64. Measured by bench/radius.py
#: on 42 real photos with edited copies (bench/RESULTS.md): the largest radius whose groups keep precision 1.0 at
#: 64 bits (recall of recompressed, resized and EXIF-rotated copies 0.93-1.0); 8/64 dropped group precision to 0.75.
DEFAULT_RADIUS_FRACTION = 3 / 64

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as work advances; stages are "hashing" (files whose content is checked
again, see :mod:`hashdup.indexing`), "describing" (files), "editing" (self-supervised edits) and "training" (epochs or
sweeps of a learned encoder)."""
OnProblem = Callable[[str, str], None]
"""``on_problem(path, reason)``: called once for every file that is skipped."""


def _ignore(*_: Any) -> None:
    return None


@dataclass
class IndexSummary:
    """What ``hashdup index`` did.

    ``added``, ``updated``, ``removed`` and ``unchanged`` count catalogue records (indexed or skipped files) against
    the previous index; ``decoded`` files were read and described by this run, ``resumed`` ones taken from the
    journal of an interrupted run, ``rehashed`` ones hashed to confirm their content (see :mod:`hashdup.indexing`).
    ``rebuild`` says why nothing of the previous index was reused, ``refit`` why the encoder was fitted again
    (both "" when not applicable); ``stale_lock`` names the holder of a lock left by a killed run that was taken over.
    ``paths`` are the folders (and files) the index now holds, ``new_paths`` those this run added.
    """

    index: str
    files: int = 0
    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    exact_duplicates: int = 0
    ignored: int = 0
    links: int = 0
    training: str = ""
    seconds: float = 0.0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    decoded: int = 0
    resumed: int = 0
    rehashed: int = 0
    encoder_reused: bool = False
    rebuild: str = ""
    refit: str = ""
    stale_lock: str = ""
    paths: list[str] = field(default_factory=list)
    new_paths: list[str] = field(default_factory=list)


def build_index(paths: Sequence[str | os.PathLike[str]], index_dir: str | os.PathLike[str] = DEFAULT_INDEX, *,
                descriptor: DescriptorName = "gist+color", descriptor_params: dict[str, Any] | None = None,
                encoder: EncoderName = "lsh",
                n_bits: int = 64, seed: int = 0, hidden: bool = False, batch_size: int = 32,
                supervision: Supervision = Supervision(), encoder_params: dict[str, Any] | None = None,
                refit: bool = False, progress: Progress = _ignore, on_problem: OnProblem = _ignore,
                workers: int | None = None, dask: Any = None, replace: bool = False) -> IndexSummary:
    """Index folders of images: walk, describe, fit the encoder, encode, and write a new index generation.

    An existing index in ``index_dir`` is updated incrementally (:mod:`hashdup.indexing`): files whose size and
    modification time are unchanged are not read again, new and modified files are described, files no longer found
    are dropped, and the fitted encoder is reused unless ``refit`` or a changed setting asks for a new fit; with
    other descriptor settings everything is described again. Descriptors are journaled as they are computed, so a
    run that is killed loses little: the next one resumes (:mod:`hashdup.io.journal`).

    Parameters
    ----------
    paths : sequence of path-like
        Folders (walked recursively) and single image files, added to those the index already holds (an index is a
        library that grows); empty, the index's own are walked again. See :func:`hashdup.indexing.library_paths`.
    index_dir : path-like, default ".hashdup"
        Index folder; an existing index there is updated and replaced atomically when this run succeeds.
    descriptor : {"gist+color", "gist", "color"}
        Default "gist+color", chosen on bench/neardup.py: a caption moves the GIST far and the colours little,
        a grey copy the reverse, and dedup looks for neighbours in each part.
    descriptor_params : dict, optional
        Keyword parameters of the descriptor.
    encoder : {"lsh", "median", "pca", "itq", "spectral", "itml", "rbm"}
    n_bits : int
        Code length, 8 to 1024.
    seed : int
        ``random_state`` of the encoder (and of the self-supervised edits).
    hidden : bool
        Also index hidden files and folders.
    batch_size : int
        Images described together.
    supervision : Supervision
        Labels, pairs or self-supervised edits for the encoders that learn from them (:mod:`hashdup.supervision`).
    encoder_params : dict, optional
        Further keyword parameters of the encoder.
    refit : bool, default False
        Fit the encoder again even when the previous index's encoder was made with the same settings.
    progress, on_problem : callables
        See :data:`Progress` and :data:`OnProblem`.
    workers : int, optional
        Processes that read, decode and describe files (default: the CPU cores available; 1: this process only).
        The index is the same bytes whatever the number.
    dask : str or distributed.Client, optional
        Read, decode and describe on a Dask cluster instead (``"tcp://scheduler:8786"``); its workers must import
        hashdup and see the same paths. See :func:`hashdup.extract.extract`.
    replace : bool, default False
        Index exactly ``paths``: files under the index's other folders leave it.

    Returns
    -------
    IndexSummary

    Raises
    ------
    HashdupError
        When no image could be indexed or the encoder cannot be fitted; the previous index is then left untouched.
    """
    bits.check_n_bits(n_bits)
    desc = make_descriptor(descriptor, **(descriptor_params or {}))
    enc = make_encoder(encoder, n_bits=n_bits, random_state=seed, **(encoder_params or {}))
    if supervision.explicit and enc.supervision == "none":
        raise HashdupError(f"the {enc.name} encoder does not learn from labels or pairs; use itml or rbm")
    supervision.check()  # the labels or pairs file, before any image is read
    try:  # before any image is read, not after every one was described
        enc.check_n_features(desc.n_features)
    except ValueError as e:
        raise HashdupError(f"{e} (the {desc.name} descriptor has {desc.n_features}); use fewer bits") from None
    extract_options: dict[str, Any] = {"workers": workers, "dask": dask}
    from hashdup.indexing import library_paths

    with writer_lock(index_dir) as lease:
        chosen, new = library_paths(index_dir, paths, replace=replace)
        summary = _build(chosen, Path(index_dir), desc, enc, hidden, batch_size, supervision, seed, refit,
                         extract_options, progress, on_problem)
    summary.paths, summary.new_paths = chosen, new
    summary.stale_lock = lease.stale.describe() if lease.stale else ""
    return summary


def _training(enc: BaseEncoder, X: NDArray[np.float32], ok: list[FileRecord], roots: list[str], desc: Descriptor,
              sup: Supervision, seed: int, progress: Progress) -> Training:
    """The rows, labels and pairs the encoder is fitted on (see :mod:`hashdup.supervision`)."""
    abspaths = [os.path.join(roots[r.root], r.path) for r in ok]
    if sup.labels or sup.labels_from_dirs:
        names = (labels_from_csv(sup.labels, PathIndex(abspaths)) if sup.labels
                 else labels_from_dirs([r.path for r in ok]))
        ids = np.array(sorted(names), dtype=np.int64)
        y = encode_labels([names[i] for i in ids.tolist()])
        if len(set(y.tolist())) < 2:
            raise HashdupError(f"the labels name a single class ({names[int(ids[0])]!r}) for {len(ids)} images; "
                               "supervision needs two classes or more")
        return Training(X[ids], y, None, f"labels: {len(ids)} images in {len(set(y.tolist()))} classes")
    if sup.pairs:
        pairs = pairs_from_csv(sup.pairs, PathIndex(abspaths))
        return Training(X, None, pairs, f"pairs: {int(pairs.similar.sum())} similar, {int((~pairs.similar).sum())} "
                                        "dissimilar")
    if enc.supervision != "none" and sup.self_supervised:
        return edit_pairs(X, abspaths, [r.blake2b for r in ok], desc, describe_images, n_edits=sup.n_edits, seed=seed,
                          progress=lambda done, total: progress("editing", done, total))
    if enc.supervision == "required":
        raise HashdupError(f"the {enc.name} encoder learns from supervision: give --labels, --labels-from-dirs or "
                           "--pairs, or let it train on self-supervised edits (drop --no-self-supervised)")
    return Training(X, None, None, "unsupervised")


def _build(paths: Sequence[str | os.PathLike[str]], index_dir: Path, desc: Descriptor, enc: BaseEncoder, hidden: bool,
           batch_size: int, sup: Supervision, seed: int, refit: bool, extract_options: dict[str, Any],
           progress: Progress, on_problem: OnProblem) -> IndexSummary:
    from hashdup import indexing

    t0 = time.perf_counter()
    started_ns = time.time_ns()  # before any file is looked at (see hashdup.io.journal.in_doubt)
    found = walk(paths, hidden=hidden)
    summary = IndexSummary(index=str(index_dir), links=found.links)
    for p, reason in found.problems:
        summary.skipped.append((display_path(p), reason))
        on_problem(display_path(p), reason)
    local = LocalExtractor()
    settings = indexing.descriptor_settings(desc, local)
    prev = indexing.open_previous(index_dir, settings)
    summary.rebuild = prev.reason
    journal = Journal(index_dir, settings, desc.n_features, commit_every=batch_size,
                      on_commit=lambda: kill_point("journal"))
    try:
        records, X16, source, feats = indexing.gather(found, desc, local, prev, journal, summary, progress,
                                                      on_problem, batch_size, extract_options)
        summary.files = len(records)
        summary.indexed = X16.shape[0]
        if summary.indexed == 0:
            where = ", ".join(os.fsdecode(p) for p in paths)
            raise HashdupError(f"no images could be indexed under {where} ({len(summary.skipped)} skipped, "
                               f"{summary.ignored} non-image files ignored)")
        sup_settings = indexing.supervision_settings(sup)
        reused, summary.refit = indexing.reusable_encoder(prev, enc, sup_settings, refit)
        if reused is not None:
            enc, summary.encoder_reused = reused, True
            summary.training = prev.manifest["encoder"].get("training", "")  # type: ignore[index]
            fitted_rows = prev.manifest["encoder"].get("fitted_rows")  # type: ignore[index]
            codes = indexing.codes_reusing(enc, X16, source, prev.stored.codes.codes)  # type: ignore[union-attr]
        else:
            X = X16.astype(np.float32)
            training = _training(enc, X, [r for r in records if r.id is not None], found.roots, desc, sup, seed,
                                 progress)
            try:
                enc.fit(training.X, training.y, pairs=training.pairs,
                        progress=lambda done, total: progress("training", done, total))
            except ValueError as e:
                raise HashdupError(f"cannot fit the {enc.name} encoder on {training.X.shape[0]} rows: {e}") from e
            del X
            summary.training, fitted_rows = training.description, int(training.X.shape[0])
            codes = indexing.encode_rows(enc, X16)
        # the features are written before the previous index is closed: reused ones are views of its feature file
        gen = new_generation(index_dir)
        FeatureFile.write(gen.path("features"), feats, frame=local.frame, max_keypoints=local.n_keypoints,
                          thumb_pixels=local.thumb_pixels)
        kill_point("written")
        del feats
    finally:
        journal.close()
        prev.close()
    _write_generation(gen, found.roots, records, X16, codes, enc, seed, summary, {
        "started_ns": started_ns, "paths": [os.fsdecode(p) for p in paths], "descriptor": settings,
        "supervision": sup_settings,
        "encoder": {"name": enc.name, "n_bits": enc.n_bits, "params": enc.json_params(),
                    "fingerprint": enc.fingerprint().hex(), "training": summary.training,
                    "fitted_rows": fitted_rows}})
    journal.remove()  # its rows are all in the committed generation now
    kill_point("journal-removed")
    summary.seconds = time.perf_counter() - t0
    return summary


def _write_generation(gen: Generation, roots: list[str], records: list[FileRecord], X16: NDArray[np.float16],
                      codes: NDArray[np.uint8], enc: BaseEncoder, seed: int, summary: IndexSummary,
                      fields: dict[str, Any]) -> None:
    """Write the other files of a new generation whose feature file is written (each flushed to disk under its
    final name), then commit it."""
    from hashdup.index.buckets import BucketTables

    CodeFile.write(gen.path("codes"), codes, enc.n_bits, enc.fingerprint())
    kill_point("written")
    BucketTables.build(codes, enc.n_bits, random_state=seed, fingerprint=enc.fingerprint()).write(gen.path("buckets"))
    kill_point("written")
    write_catalogue(gen.path("catalogue"), roots, records)
    kill_point("written")
    write_descriptors(gen.path("descriptors"), X16)
    kill_point("written")
    enc.save(gen.path("encoder"))
    kill_point("written")
    commit(gen, {"hashdup": __version__, "roots": roots, **fields,
                 "counts": {"files": summary.files, "indexed": summary.indexed,
                            "errors": summary.files - summary.indexed, "exact_duplicates": summary.exact_duplicates}})


class Index:
    """An opened index: the stored files plus the descriptor, encoder and search engine they describe."""

    def __init__(self, index_dir: str | os.PathLike[str] = DEFAULT_INDEX, *, verify: bool = True) -> None:
        self.stored = StoredIndex(index_dir, verify=verify)
        m = self.stored.manifest
        try:
            self.descriptor: Descriptor = make_descriptor(m["descriptor"]["name"], **m["descriptor"]["params"])
        except (TypeError, ValueError) as e:
            raise IndexFileError(str(self.stored.folder / "index.json"), f"bad descriptor settings: {e}") from e
        self.encoder: BaseEncoder = load_encoder(self.stored.path("encoder"))
        if self.encoder.fingerprint() != self.stored.codes.fingerprint:
            raise IndexFileError(str(self.stored.path("encoder")), "encoder does not match the code file's fingerprint")
        widths = {self.descriptor.n_features, m["descriptor"]["n_features"], self.encoder.n_features_in_}
        if len(widths) != 1:
            raise IndexFileError(str(self.stored.path("encoder")),
                                 f"descriptor and encoder disagree on the feature count ({sorted(widths)})")
        self.search = HammingIndex(self.stored.codes)

    @property
    def n_bits(self) -> int:
        return self.stored.codes.n_bits

    def __len__(self) -> int:
        return len(self.search)

    @cached_property
    def buckets(self):  # noqa: ANN201 - hashdup.index.buckets.BucketTables, imported lazily
        """The LSH bucket tables of approximate queries, opened (and checked) on first use."""
        from hashdup.index.buckets import BucketTables

        path = self.stored.path("buckets")
        try:
            tables = BucketTables.open(self.stored.held_path("buckets"))  # the generation this index opened
        except IndexFileError as e:
            raise IndexFileError(str(path), e.problem) from e
        if tables.n_rows != len(self) or tables.fingerprint != self.stored.codes.fingerprint:
            raise IndexFileError(str(path), "bucket tables do not match the code file")
        return tables

    def paths(self, ids: Iterable[int]) -> list[str]:
        cat = self.stored.catalogue
        return [display_path(cat.abspath(r)) for r in cat.records(ids)]

    def close(self) -> None:
        self.stored.close()


def labelled_descriptors(index: Index, *, labels: str | None = None, from_dirs: bool = False
                         ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The stored descriptors of the labelled images of an index and their labels (ints), for ``hashdup eval``."""
    cat = index.stored.catalogue
    recs = cat.records()
    names = (labels_from_csv(labels, PathIndex([cat.abspath(r) for r in recs])) if labels
             else labels_from_dirs([r.path for r in recs]))
    ids = np.array(sorted(names), dtype=np.int64)
    y = encode_labels([names[i] for i in ids.tolist()])
    if len(set(y.tolist())) < 2:
        raise HashdupError("the labels name a single class: nothing to tell apart")
    return np.asarray(index.stored.descriptors[ids], dtype=np.float32), y


def query(index: Index, image_paths: Sequence[str], *, k: int | None = 12, radius: int | None = None,
          approx: bool = False, probes: int = 1, on_problem: OnProblem = _ignore) -> tuple[list[dict[str, Any]], int]:
    """Find indexed images similar to each query image.

    The query images need not be indexed; a query that is itself an indexed file is left out of its own results.
    With ``radius``, every image within that Hamming distance (inclusive) is returned, the ``k`` nearest of them
    when ``k`` is also given; without it, the ``k`` nearest. With ``approx``, only the images that share an LSH
    bucket with the query (``probes`` flipped key bits allowed) are candidates, re-ranked by exact distance: much
    faster on large indexes, and it may miss far neighbours (see bench/RESULTS.md for the recall).

    Returns
    -------
    rows : list of dict
        ``{"query", "rank", "path", "distance"}`` ordered by query (as given), distance, path; ranks start at 1.
    failed : int
        Query images that could not be read (each reported through ``on_problem``).
    """
    if k is None and radius is None:
        raise ValueError("give k, radius or both")
    good: list[tuple[str, int | None]] = []
    pixels = []
    failed = 0
    for q in image_paths:
        try:
            pixels.append(images.load(q, index.descriptor.image_size).pixels)
        except ImageError as e:
            on_problem(q, e.reason)
            failed += 1
            continue
        rec = index.stored.catalogue.find(q)
        good.append((q, rec.id if rec is not None else None))
    codes = index.encoder.encode(describe_images(index.descriptor, pixels))
    if approx:
        want = len(index) if k is None else k + 1  # one more, in case the query itself is indexed
        Dk, Ik = index.buckets.query(index.stored.codes.codes, codes, min(want, max(len(index), 1)), probes=probes)
        keep = (Ik >= 0) & (Dk <= radius) if radius is not None else Ik >= 0
        hits = [(Dk[n][keep[n]], Ik[n][keep[n]]) for n in range(len(good))]
    elif radius is not None:
        lims, D, I = index.search.radius(codes, radius)
        hits = [(D[lims[n] : lims[n + 1]], I[lims[n] : lims[n + 1]]) for n in range(len(good))]
    else:
        Dk, Ik = index.search.knn(codes, k + 1)  # one more, in case the query itself is indexed
        hits = [(Dk[n][Ik[n] >= 0], Ik[n][Ik[n] >= 0]) for n in range(len(good))]
    rows: list[dict[str, Any]] = []
    for (q, self_id), (D, I) in zip(good, hits, strict=True):
        keep = I != self_id if self_id is not None else np.ones(I.shape, bool)
        D, I = D[keep], I[keep]
        if k is not None:
            D, I = D[:k], I[:k]
        cat = index.stored.catalogue
        recs = cat.records(I.tolist())
        found = sorted(zip(D.tolist(), [display_path(cat.abspath(rec)) for rec in recs],
                           [staleness(cat.abspath(rec), rec.size, rec.mtime_ns) for rec in recs], strict=True))
        rows.extend({"query": q, "rank": r, "path": p, "distance": d, **({"stale": s} if s else {})}
                    for r, (d, p, s) in enumerate(found, start=1))
    return rows, failed


def default_radius(n_bits: int) -> int:
    """The default radius of ``dedup --no-verify`` (code distance alone decides) for ``n_bits``-bit codes:
    :data:`DEFAULT_RADIUS_FRACTION` of the bits, rounded down (1 at 32 bits, 3 at 64, 6 at 128). With verification
    (the default) the codes only propose candidates, at :data:`hashdup.pairs.CANDIDATE_RADIUS_FRACTION`."""
    return int(DEFAULT_RADIUS_FRACTION * n_bits)


def dedup(index: Index, radius: int | None = None, **options: Any) -> list[dict[str, Any]]:
    """Groups of near-duplicate images as JSON-ready dicts; see :func:`hashdup.dedup.find_groups` for the
    options and :meth:`hashdup.dedup.Group.to_json` for the fields."""
    from hashdup.dedup import find_groups

    return [g.to_json() for g in find_groups(index, radius, **options)]


def info(index: Index) -> dict[str, Any]:
    """Counts, settings, sizes on disk and skipped files of an index, for ``hashdup info``."""
    m = index.stored.manifest
    cat = index.stored.catalogue
    sizes = {kind: entry["bytes"] for kind, entry in m["files"].items()}
    for kind, name in (("verdicts", VERDICTS), ("links", LINKS)):  # dedup's caches, beside the generations
        if (index.stored.folder / name).is_file():
            sizes[kind] = (index.stored.folder / name).stat().st_size
    manifest_bytes = (index.stored.folder / "index.json").stat().st_size
    return {
        "index": display_path(os.path.abspath(index.stored.folder)),
        "generation": m["generation"],
        "created": m["created"],
        "roots": [display_path(r) for r in m["roots"]],
        "files": cat.count(),
        "indexed": len(index),
        "errors": cat.count("error"),
        "exact_duplicates": m["counts"]["exact_duplicates"],
        "descriptor": {k: m["descriptor"][k] for k in ("name", "params", "n_features", "dtype")},
        "local_features": {"params": m["descriptor"].get("local"),
                           "bytes_per_image": round(sizes.get("features", 0) / max(len(index), 1), 1)},
        "encoder": {k: m["encoder"][k] for k in ("name", "n_bits", "params", "training") if k in m["encoder"]},
        "bytes_on_disk": {**sizes, "manifest": manifest_bytes, "total": sum(sizes.values()) + manifest_bytes},
        "skipped": [{"path": display_path(cat.abspath(r)), "error": r.error} for r in cat.errors()],
    }
