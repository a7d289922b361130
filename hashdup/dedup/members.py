"""The records a dedup run hands on: :class:`Member` (one image of a group, with the file facts the catalogue
recorded) and :class:`Group` (a keeper and its duplicates), shared by ``dedup``, ``report`` and the actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hashdup.errors import IndexFileError
from hashdup.io.catalogue import FileRecord, staleness
from hashdup.io.facts import FileFacts
from hashdup.io.walk import display_path

if TYPE_CHECKING:
    from hashdup.opened import Index


@dataclass(frozen=True)
class Member:
    """One image of a group, with what the catalogue recorded about its file when it was indexed (``facts``).

    ``distance`` is the Hamming distance from the keeper's code (0 for the keeper itself), ``match`` how the image
    was linked to its group: "keeper", "identical" (same bytes), "code" (code distance alone), "metric" (descriptor
    distance), "geometric" (local features agree on a transform and the aligned pixels agree) or, with single
    linkage, "linked" (joined to the group through other members, not directly to the keeper).
    """

    id: int
    path: str
    abspath: str
    facts: FileFacts
    distance: int = 0
    match: str = "keeper"


@dataclass
class Group:
    """A group of near-duplicates; ``members[0]`` is the keeper."""

    number: int
    members: list[Member]
    max_distance: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keep(self) -> Member:
        return self.members[0]

    @property
    def duplicates(self) -> list[Member]:
        return self.members[1:]

    def stale(self) -> dict[str, str]:
        """The members whose file vanished or changed since it was indexed (size, modification time), by path, with
        the reason (:func:`hashdup.io.catalogue.staleness`); looked at once per group."""
        if "stale" not in self.extra:
            found = {m.path: staleness(m.abspath, m.facts) for m in self.members}
            self.extra["stale"] = {p: r for p, r in found.items() if r is not None}
        return self.extra["stale"]

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per member for ``--table``, the keeper first and marked: ``{"group", "keep" ("*" or ""),
        "match", "distance", "path"}``, ``distance`` the Hamming distance from the keeper's code; a stale file's
        path says so (``[vanished]``)."""
        stale = self.stale()
        return [{"group": self.number, "keep": "*" if m is self.keep else "",
                 "match": "" if m is self.keep else m.match,
                 "distance": m.distance, "path": m.path + (f"  [{stale[m.path]}]" if m.path in stale else "")}
                for m in self.members]

    def to_json(self) -> dict[str, Any]:
        """``{"group", "keep", "paths", "max_distance"}``: paths sorted, the keeper among them; ``"stale"``
        (path to reason) too when files of the group vanished or changed since they were indexed."""
        out = {"group": self.number, "keep": self.keep.path, "paths": sorted(m.path for m in self.members),
               "max_distance": self.max_distance}
        if self.stale():
            out["stale"] = self.stale()
        return out


def member(index: Index, rec: FileRecord, distance: int = 0, match: str = "keeper") -> Member:
    """The member for the catalogue record of an indexed file.

    Raises
    ------
    IndexFileError
        When the record lacks some of the file's facts (only a damaged catalogue has such a record).
    """
    cat = index.stored.catalogue
    path = cat.abspath(rec)
    if not isinstance(rec.facts, FileFacts):
        raise IndexFileError(str(cat.path), f"indexed file {rec.indexed_id} lacks some of its recorded facts")
    return Member(rec.indexed_id, display_path(path), path, rec.facts, distance, match)
