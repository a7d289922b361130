"""The workflows behind the commands: index a folder, answer queries, group near-duplicates, describe an index.

Everything here returns plain data (lists and dicts ready for JSON); ``cli.py`` only parses options and prints.
Descriptors are stored as float16, and every computation (fitting, encoding, queries) uses the stored values, so
an index can be refitted from disk and gives the same codes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup import bits
from hashdup.descriptors import DescriptorName, make_descriptor
from hashdup.encoders import EncoderName, make_encoder
from hashdup.errors import HashdupError, ImageError
from hashdup.extract import STORED_DTYPE, describe_images  # noqa: F401 - importable from here, as before
from hashdup.indexing.build import IndexSummary, build
from hashdup.indexing.collect import OnProblem, Progress
from hashdup.indexing.previous import library_paths
from hashdup.io import images
from hashdup.io.catalogue import staleness
from hashdup.io.store import writer_lock
from hashdup.io.verdicts import FILENAME as VERDICTS
from hashdup.io.verdicts import LINKS_FILENAME as LINKS
from hashdup.io.walk import display_path
from hashdup.opened import DEFAULT_INDEX, DEFAULT_RADIUS_FRACTION, Index, default_radius  # noqa: F401 - re-exported
from hashdup.supervision import PathIndex, Supervision, encode_labels, labels_from_csv, labels_from_dirs

#: No labels or pairs given (self-supervised edits for the encoders that learn): the default of :func:`build_index`.
UNSUPERVISED = Supervision()


def _ignore(*_: Any) -> None:
    return None


def build_index(paths: Sequence[str | os.PathLike[str]], index_dir: str | os.PathLike[str] = DEFAULT_INDEX, *,
                descriptor: DescriptorName = "gist+color", descriptor_params: dict[str, Any] | None = None,
                encoder: EncoderName = "lsh",
                n_bits: int = 64, seed: int = 0, hidden: bool = False, batch_size: int = 32,
                supervision: Supervision = UNSUPERVISED, encoder_params: dict[str, Any] | None = None,
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
        library that grows); empty, the index's own are walked again. See
        :func:`hashdup.indexing.previous.library_paths`.
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
        See :data:`hashdup.indexing.collect.Progress` and :data:`~hashdup.indexing.collect.OnProblem`.
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
    with writer_lock(index_dir) as lease:
        chosen, new = library_paths(index_dir, paths, replace=replace)
        summary = build(chosen, Path(index_dir), desc, enc, hidden=hidden, batch_size=batch_size, sup=supervision,
                        seed=seed, refit=refit, extract_options={"workers": workers, "dask": dask},
                        progress=progress, on_problem=on_problem)
    summary.paths, summary.new_paths = chosen, new
    summary.stale_lock = lease.stale.describe() if lease.stale else ""
    return summary


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
        assert k is not None  # k or radius was given (checked above) and radius is None
        Dk, Ik = index.search.knn(codes, k + 1)  # one more, in case the query itself is indexed
        hits = [(Dk[n][Ik[n] >= 0], Ik[n][Ik[n] >= 0]) for n in range(len(good))]
    rows: list[dict[str, Any]] = []
    for (q, self_id), (D, I) in zip(good, hits, strict=True):
        keep = self_id != I if self_id is not None else np.ones(I.shape, bool)
        D, I = D[keep], I[keep]
        if k is not None:
            D, I = D[:k], I[:k]
        cat = index.stored.catalogue
        recs = cat.records(I.tolist())
        found = sorted(zip(D.tolist(), [display_path(cat.abspath(rec)) for rec in recs],
                           [staleness(cat.abspath(rec), rec.facts) for rec in recs], strict=True))
        rows.extend({"query": q, "rank": r, "path": p, "distance": d, **({"stale": s} if s else {})}
                    for r, (d, p, s) in enumerate(found, start=1))
    return rows, failed


def dedup(index: Index, radius: int | None = None, **options: Any) -> list[dict[str, Any]]:
    """Groups of near-duplicate images as JSON-ready dicts; see :func:`hashdup.dedup.find_groups` for the
    options and :meth:`hashdup.dedup.Group.to_json` for the fields."""
    from hashdup.dedup.groups import find_groups

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
