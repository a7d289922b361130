"""Where learned encoders get their supervision: label and pair files, folder names, or synthetic edits.

* ``--labels FILE.csv``: rows ``path,label`` (a first row ``path,label`` is a header and skipped);
* ``--labels-from-dirs``: the label of an image is the name of its parent folder;
* ``--pairs FILE.csv``: rows ``path_a,path_b,similar`` or ``...,dissimilar``;
* self-supervised edits (no labels needed): ``n_edits`` indexed images are decoded again with a random edit
  (:data:`hashdup.io.edits.EDIT_KINDS`: JPEG recompression, resize, crop, brightness, contrast, blur, small rotation,
  text overlay, mirror, greyscale) and each edit is a *similar* pair with its original; random pairs of indexed
  images with different content are *dissimilar* (``dissimilar_per_similar`` of them per similar pair), except
  pairs closer than 90 % of the edit pairs (likely duplicates already in the library). This teaches a metric which
  changes do not make a different image.

Paths in the files are resolved like command-line paths (relative to the working folder) and must be indexed files.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hashdup.descriptors import Descriptor
from hashdup.encoders import Pairs
from hashdup.errors import HashdupError, ImageError
from hashdup.io import edits, images

#: At most this many edited copies per indexed image (a small library needs no more).
EDITS_PER_IMAGE = 10
#: Random pairs closer than this percentile of the edit pairs' distances are not used as dissimilar pairs.
DUPLICATE_PERCENTILE = 90.0


@dataclass(frozen=True)
class Supervision:
    """Where a learned encoder's supervision comes from (at most one of ``labels``, ``labels_from_dirs``, ``pairs``;
    with none of them, encoders that use supervision get self-supervised edits unless ``self_supervised`` is off)."""

    labels: str | None = None
    labels_from_dirs: bool = False
    pairs: str | None = None
    self_supervised: bool = True
    n_edits: int = 1000

    def __post_init__(self) -> None:
        if sum(bool(x) for x in (self.labels, self.labels_from_dirs, self.pairs)) > 1:
            raise ValueError("give at most one of labels, labels_from_dirs and pairs")
        if self.n_edits < 1:
            raise ValueError(f"n_edits must be ≥ 1, got {self.n_edits}")

    @property
    def explicit(self) -> bool:
        return bool(self.labels or self.labels_from_dirs or self.pairs)

    def check(self) -> None:
        """Raise :class:`HashdupError` now if the labels or pairs file cannot be read or is malformed (its paths are
        matched to the index's files later, once they are found): before any image is read, not after every one was
        described."""
        if self.labels:
            _rows(self.labels, 2)
        if self.pairs:
            for n, (_, _, kind, *_) in _rows(self.pairs, 3):
                if kind.lower() not in ("similar", "dissimilar"):
                    raise HashdupError(f"{os.fsdecode(self.pairs)}:{n}: the third field must be 'similar' or "
                                       f"'dissimilar', got {kind!r}")


@dataclass(frozen=True)
class Training:
    """What an encoder is fitted on: rows ``X``, optional labels ``y`` (one per row), optional ``pairs``; and a
    one-line ``description`` for the manifest and the summary."""

    X: NDArray[np.float32]
    y: NDArray[np.int64] | None
    pairs: Pairs | None
    description: str


class PathIndex:
    """Maps file paths (as a user writes them) to ids of indexed files, resolving symbolic links."""

    def __init__(self, abspaths: Sequence[str | None]) -> None:
        self._ids: dict[str, int] = {}
        for i, p in enumerate(abspaths):
            if p is not None:
                self._ids.setdefault(os.path.abspath(p), i)
                self._ids.setdefault(os.path.realpath(p), i)

    def id_of(self, path: str, where: str) -> int:
        for form in (os.path.abspath(path), os.path.realpath(path)):
            if form in self._ids:
                return self._ids[form]
        raise HashdupError(f"{where}: {path} is not an indexed image")


def _rows(path: str | os.PathLike[str], width: int) -> list[tuple[int, list[str]]]:
    """Non-empty CSV rows (line number, fields) with at least ``width`` fields; a header row is skipped."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(f), start=1)
                    if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise HashdupError(f"cannot read {os.fsdecode(path)}: {e}") from e
    if rows and rows[0][1][:1] in (["path"], ["path_a"]):
        rows = rows[1:]
    for n, r in rows:
        if len(r) < width:
            raise HashdupError(f"{os.fsdecode(path)}:{n}: expected {width} comma-separated fields, got {len(r)}")
    return rows


def encode_labels(names: Sequence[str]) -> NDArray[np.int64]:
    """Label names to ints 0..k-1, in sorted order of the names."""
    classes = sorted(set(names))
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[n] for n in names], dtype=np.int64)


def labels_from_csv(path: str | os.PathLike[str], index: PathIndex) -> dict[int, str]:
    """``{id: label}`` from a ``path,label`` file."""
    out: dict[int, str] = {}
    for n, (p, label, *_) in _rows(path, 2):
        out[index.id_of(p, f"{os.fsdecode(path)}:{n}")] = label
    return out


def labels_from_dirs(relpaths: Sequence[str]) -> dict[int, str]:
    """``{id: parent folder name}`` for indexed files given by their paths relative to the root ("" at the root)."""
    return {i: os.path.basename(os.path.dirname(p)) for i, p in enumerate(relpaths)}


def pairs_from_csv(path: str | os.PathLike[str], index: PathIndex) -> Pairs:
    """Pairs from a ``path_a,path_b,similar|dissimilar`` file."""
    i, j, s = [], [], []
    for n, (a, b, kind, *_) in _rows(path, 3):
        where = f"{os.fsdecode(path)}:{n}"
        if kind.lower() not in ("similar", "dissimilar"):
            raise HashdupError(f"{where}: the third field must be 'similar' or 'dissimilar', got {kind!r}")
        i.append(index.id_of(a, where))
        j.append(index.id_of(b, where))
        s.append(kind.lower() == "similar")
    return Pairs(np.array(i, dtype=np.int64), np.array(j, dtype=np.int64), np.array(s, dtype=bool))


def edit_pairs(X: NDArray[np.float32], abspaths: Sequence[str], hashes: Sequence[str | None], descriptor: Descriptor,
               describe: Callable[[Descriptor, list[NDArray[np.uint8]]], NDArray[np.float32]], *, n_edits: int = 1000,
               dissimilar_per_similar: int = 4, seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> Training:
    """Self-supervised training data: the indexed descriptors plus descriptors of edited copies, with pairs.

    Parameters
    ----------
    X : ndarray, shape (n, d)
        Descriptors of the indexed images (row i = id i).
    abspaths, hashes : sequences of length n
        Files to decode again, and their content hashes (pairs with equal hashes are never dissimilar).
    descriptor, describe
        How to turn decoded pixels into descriptors (``pipeline.describe_images``).
    n_edits : int
        Edited copies to make (each from a different image while there are enough, at most ``EDITS_PER_IMAGE`` per
        image; kinds cycle through all edits).
    dissimilar_per_similar : int
    seed : int

    Returns
    -------
    Training
        ``X`` is the original rows followed by one row per edit; ``pairs`` indexes into it.
    """
    n = len(abspaths)
    rng = np.random.default_rng(seed)
    n_edits = min(n_edits, EDITS_PER_IMAGE * n)
    chosen = rng.permutation(n)[:n_edits] if n_edits <= n else rng.integers(0, n, n_edits)
    rows, sources = [], []
    for k, i in enumerate(chosen.tolist()):
        kind = edits.EDIT_KINDS[k % len(edits.EDIT_KINDS)]
        try:
            content = images.read_file(abspaths[i])
            img = edits.decode_edited(content.data, descriptor.image_size, kind, rng, name=abspaths[i])
        except ImageError:
            continue  # the file changed or vanished since it was described: no pair from it
        rows.append(img.pixels)
        sources.append(i)
        if progress is not None:
            progress(k + 1, len(chosen))
    X_edit = np.concatenate([describe(descriptor, rows[s : s + 64]) for s in range(0, len(rows), 64)]) if rows \
        else np.zeros((0, X.shape[1]), np.float32)
    sim_i = np.array(sources, dtype=np.int64)
    sim_j = n + np.arange(len(sources), dtype=np.int64)
    m = dissimilar_per_similar * len(sources)
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    h = np.array([x or f"#{k}" for k, x in enumerate(hashes)], dtype=object)
    keep = (a != b) & (h[a] != h[b])
    if len(sources):
        # a random pair as close as a typical edit is most likely a duplicate already in the library: calling it
        # dissimilar would teach the metric to tear duplicates apart
        X_all = np.vstack([X, X_edit]).astype(np.float64)
        d_sim = ((X_all[sim_i] - X_all[sim_j]) ** 2).sum(axis=1)
        d_dis = ((X_all[a] - X_all[b]) ** 2).sum(axis=1)
        keep &= d_dis > np.percentile(d_sim, DUPLICATE_PERCENTILE)
    pairs = Pairs(np.concatenate([sim_i, a[keep]]), np.concatenate([sim_j, b[keep]]),
                  np.concatenate([np.ones(len(sim_i), bool), np.zeros(int(keep.sum()), bool)]))
    return Training(np.vstack([X, X_edit]).astype(np.float32), None, pairs,
                    f"self-supervised: {len(sim_i)} edited copies, {int(keep.sum())} dissimilar pairs")
