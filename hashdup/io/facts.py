"""The facts hashdup records about a file, declared once: its size and modification time, the hash of its content,
and the size and format of the picture in it.

Three records, each the one before with more known:

- :class:`FileStat` — ``size``, ``mtime_ns``: what ``stat`` says; all a skipped file has;
- :class:`FileDigest` — and ``blake2b``: enough to tell that a file still has the content that was indexed (what
  the dedup actions check, and what their manifest keeps);
- :class:`FileFacts` — and ``width``, ``height``, ``format``: an indexed image.

The catalogue row, the extraction result, the journal row, the records of an indexing run, a dedup group's member
and an action's step each hold one of them as ``facts`` (a step also ``keeper_facts``; the bytes read from a file
their ``stat``) instead of declaring the fields again. :func:`columns` and :func:`from_columns` flatten them into
(and back from) the columns of the catalogue and the journal, :func:`to_keys` and :func:`from_keys` into the keys of
an actions manifest, under the fields' own names and in their order, so those files are as they were before these
records existed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar


@dataclass(frozen=True)
class FileStat:
    """What ``stat`` says of a file: ``size`` in bytes, ``mtime_ns`` its modification time in ns since the epoch."""

    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileDigest(FileStat):
    """A file's stat and ``blake2b``, the blake2b-128 of its content (hex)."""

    blake2b: str


@dataclass(frozen=True)
class FileFacts(FileDigest):
    """An indexed image file: its stat, content hash, and ``width`` and ``height`` of the upright picture (after
    EXIF orientation, in pixels) and ``format`` as decoded (e.g. ``"JPEG"``)."""

    width: int
    height: int
    format: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


#: The records, most complete first.
_KINDS: tuple[type[FileStat], ...] = (FileFacts, FileDigest, FileStat)


def stat_of(st: os.stat_result) -> FileStat:
    return FileStat(st.st_size, st.st_mtime_ns)


def names(kind: type[FileStat] = FileFacts, prefix: str = "") -> tuple[str, ...]:
    """The field names of ``kind`` (:class:`FileStat`, :class:`FileDigest` or :class:`FileFacts`) in their order,
    each after ``prefix``."""
    return tuple(prefix + f.name for f in fields(kind))


def columns(facts: FileStat | None, kind: type[FileStat] = FileFacts) -> tuple[Any, ...]:
    """The values of the fields of ``kind`` (see :func:`names`), None for those ``facts`` lacks (all of them when
    ``facts`` is None)."""
    return tuple(getattr(facts, name, None) for name in names(kind))


def from_columns(values: Sequence[Any]) -> FileStat | None:
    """The record that the values of the fields of :class:`FileFacts` (in :func:`names` order, None for unknown)
    make: the most complete one whose fields are all known; None when the size or the time is unknown."""
    for kind in _KINDS:
        n = len(fields(kind))
        if all(v is not None for v in values[:n]):
            return kind(*values[:n])
    return None


Facts = TypeVar("Facts", bound=FileStat)


def to_keys(facts: FileStat | None, kind: type[FileStat] = FileFacts, prefix: str = "") -> dict[str, Any]:
    """:func:`columns` by name: ``{prefix + field name: value}`` for the fields of ``kind``, in their order."""
    return dict(zip(names(kind, prefix), columns(facts, kind), strict=True))


def from_keys(values: Mapping[str, Any], kind: type[Facts], prefix: str = "") -> Facts:
    """The ``kind`` record whose fields are ``values[prefix + field name]``.

    Raises
    ------
    KeyError
        When ``values`` lacks one of them.
    """
    return kind(*(values[key] for key in names(kind, prefix)))
