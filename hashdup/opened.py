"""An opened index: the stored files (:mod:`hashdup.io.store`) with the descriptor, the encoder and the search
engine they describe, checked against each other. What the use cases (:mod:`hashdup.pipeline`) and the dedup wing
(:mod:`hashdup.dedup`) work on."""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import cached_property

from hashdup.descriptors import Descriptor, make_descriptor
from hashdup.encoders import BaseEncoder, load_encoder
from hashdup.errors import IndexFileError
from hashdup.index import HammingIndex
from hashdup.io.store import StoredIndex
from hashdup.io.walk import display_path

DEFAULT_INDEX = ".hashdup"
#: Default Hamming radius of ``dedup``, as a fraction of the code length: 3 bits of 64. Measured by bench/radius.py
#: on 42 real photos with edited copies (bench/RESULTS.md): the largest radius whose groups keep precision 1.0 at
#: 64 bits (recall of recompressed, resized and EXIF-rotated copies 0.93-1.0); 8/64 dropped group precision to 0.75.
DEFAULT_RADIUS_FRACTION = 3 / 64


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
    def buckets(self):
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


def default_radius(n_bits: int) -> int:
    """The default radius of ``dedup --no-verify`` (code distance alone decides) for ``n_bits``-bit codes:
    :data:`DEFAULT_RADIUS_FRACTION` of the bits, rounded down (1 at 32 bits, 3 at 64, 6 at 128). With verification
    (the default) the codes only propose candidates, at :data:`hashdup.dedup.candidates.CANDIDATE_RADIUS_FRACTION`."""
    return int(DEFAULT_RADIUS_FRACTION * n_bits)
