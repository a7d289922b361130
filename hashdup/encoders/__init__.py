"""Encoders: float descriptors to packed binary codes, with scikit-learn's estimator contract.

``make_encoder(name, n_bits=..., random_state=...)`` builds one; ``load_encoder(path)`` reads a saved one. Encoder
modules are imported when first used, so the command line starts fast.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Literal

from hashdup.encoders.base import BaseEncoder, Encoder, Pairs, check_random_state, read_saved
from hashdup.errors import IndexFileError

EncoderName = Literal["lsh", "median", "pca", "itq", "spectral", "itml", "rbm"]
#: Registry: name -> "module:class".
ENCODERS: dict[str, str] = {
    "lsh": "hashdup.encoders.lsh:LSH",
    "median": "hashdup.encoders.median:MedianPCA",
    "pca": "hashdup.encoders.pca:PCAHash",
    "itq": "hashdup.encoders.itq:ITQ",
    "spectral": "hashdup.encoders.spectral:SpectralHashing",
    "itml": "hashdup.encoders.itml:ITMLHash",
    "rbm": "hashdup.encoders.rbm:RBMHash",
}


def encoder_class(name: str) -> type[BaseEncoder]:
    """The class registered under ``name``."""
    try:
        module, cls = ENCODERS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}") from None
    return getattr(importlib.import_module(module), cls)


def make_encoder(name: EncoderName | str, **params: Any) -> BaseEncoder:
    """Build an unfitted encoder from its registry name and keyword parameters."""
    return encoder_class(name)(**params)


def load_encoder(path: str | os.PathLike[str]) -> BaseEncoder:
    """Load an encoder written by :meth:`BaseEncoder.save`, checking its fingerprint."""
    meta, arrays = read_saved(path)
    if meta.get("name") not in ENCODERS:
        raise IndexFileError(os.fsdecode(path), f"unknown encoder {meta.get('name')!r}")
    cls = encoder_class(meta["name"])
    missing = [k for k in cls._fitted if k not in arrays]
    if missing:
        raise IndexFileError(os.fsdecode(path), f"encoder file lacks arrays {missing}")
    enc = cls._from_saved(meta, arrays)
    if enc.fingerprint().hex() != meta.get("fingerprint"):
        raise IndexFileError(os.fsdecode(path), "encoder fingerprint mismatch: the file is corrupt")
    return enc


def __getattr__(name: str) -> Any:  # LSH, MedianPCA, ... importable from here, loaded on first use
    for spec in ENCODERS.values():
        module, cls = spec.split(":")
        if cls == name:
            return getattr(importlib.import_module(module), cls)
    raise AttributeError(name)


__all__ = ["ENCODERS", "BaseEncoder", "Encoder", "EncoderName", "Pairs", "check_random_state", "encoder_class",
           "load_encoder", "make_encoder"]
