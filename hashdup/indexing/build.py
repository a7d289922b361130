"""The index path, top to bottom: walk → collect → train → encode → write.

:func:`build` walks the folders (:mod:`hashdup.io.walk`), collects every file's descriptor and local features,
reusing what the previous index and the journal of an interrupted run hold (:mod:`hashdup.indexing.collect`, which
owns both), fits the encoder or reuses the previous one (:mod:`hashdup.indexing.train`), encodes, and writes a new
generation that is committed atomically (:mod:`hashdup.io.store`). The caller holds the writer lock
(:func:`hashdup.pipeline.build_index`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup import __version__
from hashdup.descriptors import Descriptor
from hashdup.descriptors.local import LocalExtractor
from hashdup.encoders import BaseEncoder
from hashdup.errors import HashdupError
from hashdup.indexing.collect import Counts, OnProblem, Progress, collect
from hashdup.indexing.previous import descriptor_settings, reusable_encoder, supervision_settings
from hashdup.indexing.train import codes_reusing, encode_rows, training_set
from hashdup.io.catalogue import FileRecord, write_catalogue
from hashdup.io.codefile import CodeFile
from hashdup.io.featurefile import FeatureFile
from hashdup.io.store import Generation, commit, kill_point, new_generation, write_descriptors
from hashdup.io.walk import display_path, walk
from hashdup.supervision import Supervision


@dataclass(kw_only=True)
class IndexSummary(Counts):
    """What ``hashdup index`` did: the :class:`~hashdup.indexing.collect.Counts` of the files against the previous
    index (``skipped`` including what the walk could not enter), and the run's other facts.

    ``files`` catalogue records, ``indexed`` images; ``links`` symbolic links followed by the walk; ``training``
    what the encoder was fitted on; ``rebuild`` says why nothing of the previous index was reused, ``refit`` why the
    encoder was fitted again (both "" when not applicable); ``stale_lock`` names the holder of a lock left by a
    killed run that was taken over. ``paths`` are the folders (and files) the index now holds, ``new_paths`` those
    this run added.
    """

    index: str
    files: int = 0
    indexed: int = 0
    links: int = 0
    training: str = ""
    seconds: float = 0.0
    encoder_reused: bool = False
    rebuild: str = ""
    refit: str = ""
    stale_lock: str = ""
    paths: list[str] = field(default_factory=list)
    new_paths: list[str] = field(default_factory=list)


@dataclass
class _Fitted:
    """The encoder a run uses and the codes of every row: reused from the previous index, or fitted now."""

    encoder: BaseEncoder
    codes: NDArray[np.uint8]
    reused: bool
    training: str
    fitted_rows: int | None
    refit: str


def build(paths: Sequence[str | os.PathLike[str]], index_dir: Path, desc: Descriptor, enc: BaseEncoder, *,
          hidden: bool, batch_size: int, sup: Supervision, seed: int, refit: bool, extract_options: dict[str, Any],
          progress: Progress, on_problem: OnProblem) -> IndexSummary:
    """Index ``paths`` into ``index_dir`` (see the module docstring); the previous index stays untouched until the
    new generation is committed.

    Raises
    ------
    HashdupError
        When no image could be indexed or the encoder cannot be fitted.
    """
    t0 = time.perf_counter()
    started_ns = time.time_ns()  # before any file is looked at (see hashdup.io.journal.in_doubt)
    found = walk(paths, hidden=hidden)  # 1. walk
    walk_problems = [(display_path(p), reason) for p, reason in found.problems]
    for p, reason in walk_problems:
        on_problem(p, reason)
    local = LocalExtractor()
    settings = descriptor_settings(desc, local)
    sup_settings = supervision_settings(sup)
    with collect(found, index_dir, settings, desc, local, progress=progress, on_problem=on_problem,  # 2. collect
                 batch_size=batch_size, extract_options=extract_options) as got:
        if got.X16.shape[0] == 0:
            where = ", ".join(os.fsdecode(p) for p in paths)
            raise HashdupError(f"no images could be indexed under {where} "
                               f"({len(walk_problems) + len(got.counts.skipped)} skipped, "
                               f"{got.counts.ignored} non-image files ignored)")
        fitted = _fit_and_encode(got, enc, found.roots, desc, sup, sup_settings, seed, refit, progress)  # 3, 4
        # 5. write: the features first, while the previous index is open (reused ones are views of its file)
        gen = new_generation(index_dir)
        FeatureFile.write(gen.path("features"), got.features, frame=local.frame, max_keypoints=local.n_keypoints,
                          thumb_pixels=local.thumb_pixels)
        kill_point("written")
    counts = got.counts
    summary = IndexSummary(index=str(index_dir), links=found.links, files=len(got.records),
                           indexed=int(got.X16.shape[0]), training=fitted.training, encoder_reused=fitted.reused,
                           rebuild=got.previous.reason, refit=fitted.refit,
                           **{**asdict(counts), "skipped": walk_problems + counts.skipped})
    enc = fitted.encoder
    _write_generation(gen, found.roots, got.records, got.X16, fitted.codes, enc, seed, summary, {
        "started_ns": started_ns, "paths": [os.fsdecode(p) for p in paths], "descriptor": settings,
        "supervision": sup_settings,
        "encoder": {"name": enc.name, "n_bits": enc.n_bits, "params": enc.json_params(),
                    "fingerprint": enc.fingerprint().hex(), "training": fitted.training,
                    "fitted_rows": fitted.fitted_rows}})
    got.journal_done()  # its rows are all in the committed generation now
    kill_point("journal-removed")
    summary.seconds = time.perf_counter() - t0
    return summary


def _fit_and_encode(got: Any, enc: BaseEncoder, roots: list[str], desc: Descriptor, sup: Supervision,
                    sup_settings: dict[str, Any], seed: int, refit: bool, progress: Progress) -> _Fitted:
    """3. train (or reuse the previous index's encoder when its settings are the same) and 4. encode."""
    prev = got.previous
    reused, why_refit = reusable_encoder(prev, enc, sup_settings, refit)
    if reused is not None:
        assert prev.manifest is not None and prev.stored is not None  # reusable_encoder returns None otherwise
        return _Fitted(reused, codes_reusing(reused, got.X16, got.source, prev.stored.codes.codes), True,
                       prev.manifest["encoder"].get("training", ""), prev.manifest["encoder"].get("fitted_rows"),
                       why_refit)
    X = got.X16.astype(np.float32)
    training = training_set(enc, X, [r for r in got.records if r.id is not None], roots, desc, sup, seed, progress)
    try:
        enc.fit(training.X, training.y, pairs=training.pairs,
                progress=lambda done, total: progress("training", done, total))
    except ValueError as e:
        raise HashdupError(f"cannot fit the {enc.name} encoder on {training.X.shape[0]} rows: {e}") from e
    del X
    return _Fitted(enc, encode_rows(enc, got.X16), False, training.description, int(training.X.shape[0]), why_refit)


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
