"""Encoders: float descriptors to packed binary codes, with scikit-learn's estimator contract.

``make_encoder(name, n_bits=..., random_state=...)`` builds one; ``load_encoder(path)`` reads a saved one.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from hashdup.encoders.base import BaseEncoder, Encoder, Pairs, check_random_state, read_saved
from hashdup.encoders.lsh import LSH
from hashdup.encoders.median import MedianPCA
from hashdup.encoders.pca import PCAHash
from hashdup.errors import IndexFileError

EncoderName = Literal["lsh", "median", "pca"]
ENCODERS: dict[str, type[BaseEncoder]] = {"lsh": LSH, "median": MedianPCA, "pca": PCAHash}


def make_encoder(name: EncoderName | str, **params: Any) -> BaseEncoder:
    """Build an unfitted encoder from its registry name and keyword parameters."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}") from None
    return cls(**params)


def load_encoder(path: str | os.PathLike[str]) -> BaseEncoder:
    """Load an encoder written by :meth:`BaseEncoder.save`, checking its fingerprint."""
    meta, arrays = read_saved(path)
    cls = ENCODERS.get(meta.get("name"))
    if cls is None:
        raise IndexFileError(os.fsdecode(path), f"unknown encoder {meta.get('name')!r}")
    missing = [k for k in cls._fitted if k not in arrays]
    if missing:
        raise IndexFileError(os.fsdecode(path), f"encoder file lacks arrays {missing}")
    enc = cls._from_saved(meta, arrays)
    if enc.fingerprint().hex() != meta.get("fingerprint"):
        raise IndexFileError(os.fsdecode(path), "encoder fingerprint mismatch: the file is corrupt")
    return enc


__all__ = ["ENCODERS", "LSH", "BaseEncoder", "Encoder", "EncoderName", "MedianPCA", "PCAHash", "Pairs",
           "check_random_state", "load_encoder", "make_encoder"]
