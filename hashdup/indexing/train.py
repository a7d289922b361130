"""Fitting and encoding: the rows, labels and pairs an encoder learns from (:func:`training_set`), and the codes of
every row, computed or copied from the previous index (:func:`encode_rows`, :func:`codes_reusing`)."""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import NDArray

from hashdup.descriptors import Descriptor
from hashdup.encoders import BaseEncoder, Encoder
from hashdup.errors import HashdupError
from hashdup.extract import describe_images
from hashdup.indexing.collect import Progress
from hashdup.io.catalogue import FileRecord
from hashdup.io.facts import FileDigest
from hashdup.supervision import (
    PathIndex,
    Supervision,
    Training,
    edit_pairs,
    encode_labels,
    labels_from_csv,
    labels_from_dirs,
    pairs_from_csv,
)


def training_set(enc: BaseEncoder, X: NDArray[np.float32], ok: list[FileRecord], roots: list[str], desc: Descriptor,
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
        hashes = [r.facts.blake2b if isinstance(r.facts, FileDigest) else None for r in ok]
        return edit_pairs(X, abspaths, hashes, desc, describe_images, n_edits=sup.n_edits, seed=seed,
                          progress=lambda done, total: progress("editing", done, total))
    if enc.supervision == "required":
        raise HashdupError(f"the {enc.name} encoder learns from supervision: give --labels, --labels-from-dirs or "
                           "--pairs, or let it train on self-supervised edits (drop --no-self-supervised)")
    return Training(X, None, None, "unsupervised")


def encode_rows(enc: Encoder, X: NDArray[np.floating], block: int = 65536) -> NDArray[np.uint8]:
    """Codes of ``X`` encoded in blocks of rows (so float64 copies stay small); equal to ``enc.encode(X)``."""
    if len(X) == 0:
        raise HashdupError("nothing to encode")
    return np.concatenate([enc.encode(np.asarray(X[a : a + block], dtype=np.float32))
                           for a in range(0, len(X), block)])


def codes_reusing(enc: Encoder, X: NDArray[np.floating], source: NDArray[np.int64],
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
