"""The workflows behind the commands: index a folder, answer queries, group near-duplicates, describe an index.

Everything here returns plain data (lists and dicts ready for JSON); ``cli.py`` only parses options and prints.
Descriptors are stored as float16, and every computation (fitting, encoding, queries) uses the stored values, so
an index can be refitted from disk and gives the same codes.
"""

from __future__ import annotations

import hashlib
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
from hashdup.encoders import BaseEncoder, EncoderName, load_encoder, make_encoder
from hashdup.errors import HashdupError, ImageError, IndexFileError
from hashdup.index import HammingIndex, connected_groups
from hashdup.io import images
from hashdup.io.catalogue import FileRecord, write_catalogue
from hashdup.io.codefile import CodeFile
from hashdup.io.store import StoredIndex, commit, new_generation, write_descriptors, writer_lock
from hashdup.io.walk import WalkResult, display_path, walk
from hashdup.supervision import (PathIndex, Supervision, Training, edit_pairs, encode_labels, labels_from_csv,
                                 labels_from_dirs, pairs_from_csv)

DEFAULT_INDEX = ".hashdup"
#: Default Hamming radius of ``dedup``, as a fraction of the code length: 3 bits of 64. Measured by bench/radius.py
#: on 42 real photos with edited copies (bench/RESULTS.md): the largest radius whose groups keep precision 1.0 at
#: 64 bits (recall of recompressed, resized and EXIF-rotated copies 0.93-1.0); 8/64 dropped group precision to 0.75.
DEFAULT_RADIUS_FRACTION = 3 / 64
STORED_DTYPE = np.float16

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as work advances; stages are "describing" (files), "editing"
(self-supervised edits) and "training" (epochs or sweeps of a learned encoder)."""
OnProblem = Callable[[str, str], None]
"""``on_problem(path, reason)``: called once for every file that is skipped."""


def _ignore(*_: Any) -> None:
    return None


@dataclass
class IndexSummary:
    """What ``hashdup index`` did."""

    index: str
    files: int = 0
    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    exact_duplicates: int = 0
    ignored: int = 0
    links: int = 0
    training: str = ""
    seconds: float = 0.0


def describe_images(descriptor: Descriptor, pixels: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
    """Descriptors of decoded images, rounded through the stored dtype (float16)."""
    if not pixels:
        return np.zeros((0, descriptor.n_features), dtype=np.float32)
    return descriptor.describe(np.stack(pixels)).astype(STORED_DTYPE).astype(np.float32)


def _extract(found: WalkResult, descriptor: Descriptor, summary: IndexSummary, progress: Progress,
             on_problem: OnProblem, batch_size: int) -> tuple[list[FileRecord], NDArray[np.float32]]:
    """Read, hash, decode and describe the walked files in order; returns catalogue records and the (n_ok, d)
    descriptors (row i for id i). Files with the same bytes as an earlier one are not decoded again."""
    records: list[FileRecord] = []
    first_by_hash: dict[str, FileRecord] = {}
    copies: list[tuple[int, int]] = []  # (id, id of the earlier file with the same bytes)
    batch_ids: list[int] = []
    batch_pixels: list[NDArray[np.uint8]] = []
    described: list[tuple[list[int], NDArray[np.float32]]] = []
    n_ok = 0
    total = len(found.files)

    def flush() -> None:
        if batch_pixels:
            described.append((list(batch_ids), describe_images(descriptor, batch_pixels)))
            batch_ids.clear()
            batch_pixels.clear()

    for done, f in enumerate(found.files, start=1):
        path, root, rel = found.abspath(f), f.root, f.relpath
        size = mtime = None
        try:
            content = images.read_file(path, only_images=True)
            if content is None:
                summary.ignored += 1
                continue
            size, mtime = content.size, content.mtime_ns
            digest = hashlib.blake2b(content.data, digest_size=16).hexdigest()
            earlier = first_by_hash.get(digest)
            if earlier is not None:
                rec = FileRecord(n_ok, root, rel, size, mtime, digest, earlier.width, earlier.height, earlier.format)
                copies.append((n_ok, earlier.id))  # type: ignore[arg-type]
                summary.exact_duplicates += 1
            else:
                img = images.decode(content.data, descriptor.image_size, name=path)
                rec = FileRecord(n_ok, root, rel, size, mtime, digest, img.width, img.height, img.format)
                first_by_hash[digest] = rec
                batch_ids.append(n_ok)
                batch_pixels.append(img.pixels)
            n_ok += 1
            records.append(rec)
        except ImageError as e:
            records.append(FileRecord(None, root, rel, size, mtime, status="error", error=e.reason))
            summary.skipped.append((display_path(path), e.reason))
            on_problem(display_path(path), e.reason)
        finally:
            if len(batch_pixels) >= batch_size:
                flush()
            progress("describing", done, total)
    flush()
    X = np.zeros((n_ok, descriptor.n_features), dtype=np.float32)
    for ids, rows in described:
        X[ids] = rows
    for i, j in copies:
        X[i] = X[j]
    return records, X


def build_index(paths: Sequence[str | os.PathLike[str]], index_dir: str | os.PathLike[str] = DEFAULT_INDEX, *,
                descriptor: DescriptorName = "gist", descriptor_params: dict[str, Any] | None = None,
                encoder: EncoderName = "lsh",
                n_bits: int = 64, seed: int = 0, hidden: bool = False, batch_size: int = 32,
                supervision: Supervision = Supervision(), encoder_params: dict[str, Any] | None = None,
                progress: Progress = _ignore, on_problem: OnProblem = _ignore) -> IndexSummary:
    """Index folders of images: walk, describe, fit the encoder, encode, and write a new index generation.

    Parameters
    ----------
    paths : sequence of path-like
        Folders (walked recursively) and single image files.
    index_dir : path-like, default ".hashdup"
        Index folder; an existing index there is replaced atomically when this run succeeds.
    descriptor : {"gist", "color", "gist+color"}
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
    progress, on_problem : callables
        See :data:`Progress` and :data:`OnProblem`.

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
    with writer_lock(index_dir):
        return _build(paths, Path(index_dir), desc, enc, hidden, batch_size, supervision, seed, progress, on_problem)


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
           batch_size: int, sup: Supervision, seed: int, progress: Progress, on_problem: OnProblem) -> IndexSummary:
    t0 = time.perf_counter()
    n_bits = enc.n_bits
    found = walk(paths, hidden=hidden)
    summary = IndexSummary(index=str(index_dir), links=found.links)
    for p, reason in found.problems:
        summary.skipped.append((display_path(p), reason))
        on_problem(display_path(p), reason)
    records, X = _extract(found, desc, summary, progress, on_problem, batch_size)
    summary.files = len(records)
    summary.indexed = X.shape[0]
    if summary.indexed == 0:
        where = ", ".join(os.fsdecode(p) for p in paths)
        raise HashdupError(f"no images could be indexed under {where} ({len(summary.skipped)} skipped, "
                           f"{summary.ignored} non-image files ignored)")
    training = _training(enc, X, [r for r in records if r.id is not None], found.roots, desc, sup, seed, progress)
    try:
        enc.fit(training.X, training.y, pairs=training.pairs,
                progress=lambda done, total: progress("training", done, total))
    except ValueError as e:
        raise HashdupError(f"cannot fit the {enc.name} encoder on {training.X.shape[0]} rows: {e}") from e
    summary.training = training.description
    codes = enc.encode(X)
    gen = new_generation(index_dir)
    CodeFile.write(gen.path("codes"), codes, n_bits, enc.fingerprint())
    from hashdup.index.buckets import BucketTables

    BucketTables.build(codes, n_bits, random_state=seed, fingerprint=enc.fingerprint()).write(gen.path("buckets"))
    write_catalogue(gen.path("catalogue"), found.roots, records)
    write_descriptors(gen.path("descriptors"), X.astype(STORED_DTYPE))
    enc.save(gen.path("encoder"))
    commit(gen, {
        "hashdup": __version__,
        "roots": found.roots,
        "descriptor": {"name": desc.name, "params": desc.get_params(), "n_features": desc.n_features,
                       "dtype": np.dtype(STORED_DTYPE).name},
        "encoder": {"name": enc.name, "n_bits": n_bits, "params": enc.json_params(),
                    "fingerprint": enc.fingerprint().hex(), "training": training.description},
        "counts": {"files": summary.files, "indexed": summary.indexed, "errors": summary.files - summary.indexed,
                   "exact_duplicates": summary.exact_duplicates},
    })
    summary.seconds = time.perf_counter() - t0
    return summary


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
        tables = BucketTables.open(path)
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
        found = sorted(zip(D.tolist(), index.paths(I.tolist()), strict=True))
        rows.extend({"query": q, "rank": r, "path": p, "distance": d} for r, (d, p) in enumerate(found, start=1))
    return rows, failed


def default_radius(n_bits: int) -> int:
    """The default ``dedup`` radius for ``n_bits``-bit codes: :data:`DEFAULT_RADIUS_FRACTION` of the bits, rounded
    down (1 at 32 bits, 3 at 64, 6 at 128)."""
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
        "encoder": {k: m["encoder"][k] for k in ("name", "n_bits", "params", "training") if k in m["encoder"]},
        "bytes_on_disk": {**sizes, "manifest": manifest_bytes, "total": sum(sizes.values()) + manifest_bytes},
        "skipped": [{"path": display_path(cat.abspath(r)), "error": r.error} for r in cat.errors()],
    }
