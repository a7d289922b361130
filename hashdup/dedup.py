"""Near-duplicate groups of an index: candidate pairs, verification, linkage and keepers.

The data types here (:class:`Member`, :class:`Group`) are what ``dedup``, ``report`` and the actions of
:mod:`hashdup.actions` share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hashdup.io.catalogue import FileRecord
from hashdup.io.walk import display_path

if TYPE_CHECKING:
    from hashdup.pipeline import Index

Linkage = Literal["single", "complete", "star"]
KeepPolicy = Literal["resolution", "size", "oldest", "newest", "path"]
LINKAGES: tuple[str, ...] = ("single", "complete", "star")
KEEP_POLICIES: tuple[str, ...] = ("resolution", "size", "oldest", "newest", "path")


@dataclass(frozen=True)
class Member:
    """One image of a group, with what the catalogue recorded about its file when it was indexed.

    ``distance`` is the Hamming distance from the keeper's code (0 for the keeper itself), ``match`` how the image
    was linked to its group: "keeper", "identical" (same bytes), "code" (code distance alone), "metric" (descriptor
    distance under the learned metric) or "geometric" (local features agree on a transform).
    """

    id: int
    path: str
    abspath: str
    size: int
    mtime_ns: int
    blake2b: str
    width: int
    height: int
    format: str
    distance: int = 0
    match: str = "keeper"

    @property
    def pixels(self) -> int:
        return self.width * self.height


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

    def to_json(self) -> dict[str, Any]:
        """``{"group", "keep", "paths", "max_distance"}``: paths sorted, the keeper among them."""
        return {"group": self.number, "keep": self.keep.path, "paths": sorted(m.path for m in self.members),
                "max_distance": self.max_distance}


def _keep_key(policy: str):  # noqa: ANN202 - a sort key on Member
    """Sort key putting the keeper first; ties broken by resolution, then size, then age, then path."""
    if policy == "resolution":
        return lambda m: (-m.pixels, -m.size, m.mtime_ns, m.path)
    if policy == "size":
        return lambda m: (-m.size, -m.pixels, m.mtime_ns, m.path)
    if policy == "oldest":
        return lambda m: (m.mtime_ns, -m.pixels, -m.size, m.path)
    if policy == "newest":
        return lambda m: (-m.mtime_ns, -m.pixels, -m.size, m.path)
    if policy == "path":
        return lambda m: (m.path,)
    raise ValueError(f"keep policy must be one of {', '.join(KEEP_POLICIES)}, got {policy!r}")


def order_members(members: Sequence[Member], keep: KeepPolicy = "resolution") -> list[Member]:
    """Members with the keeper first (by ``keep``), the others by path.

    Policies: "resolution" (most pixels, then largest file, then oldest), "size" (largest file), "oldest" and
    "newest" (file modification time), "path" (first path in sort order); each breaks ties like "resolution".
    """
    key = _keep_key(keep)
    first = min(members, key=key)
    return [first, *sorted((m for m in members if m is not first), key=lambda m: m.path)]


def member(index: Index, rec: FileRecord, distance: int = 0, match: str = "keeper") -> Member:
    cat = index.stored.catalogue
    path = cat.abspath(rec)
    return Member(int(rec.id), display_path(path), path, int(rec.size or 0), int(rec.mtime_ns or 0),
                  rec.blake2b or "", int(rec.width or 0), int(rec.height or 0), rec.format or "", distance, match)


def find_groups(index: Index, radius: int | None = None, *, linkage: Linkage = "single",
                keep: KeepPolicy = "resolution", mirror: bool = True, verify: bool = True) -> list[Group]:
    """Group the near-duplicate images of an index.

    Parameters
    ----------
    index : Index
    radius : int, optional
        Hamming radius of the candidate stage (inclusive); default from the code length.
    linkage : {"single", "complete", "star"}
        How linked pairs make groups: connected components ("single"), groups whose members are all linked to
        each other ("complete"), or groups whose members are all linked to the group's keeper ("star").
    keep : {"resolution", "size", "oldest", "newest", "path"}
        Which member is the keeper (see :func:`order_members`).
    mirror : bool
        Also match mirrored images.
    verify : bool
        Decide candidate pairs by the verification stage rather than by code distance alone.

    Returns
    -------
    list of Group
        Numbered from 1, ordered by their first path.
    """
    from hashdup import bits
    from hashdup.index import connected_groups
    from hashdup.pipeline import default_radius

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
    _keep_key(keep)
    radius = default_radius(index.n_bits) if radius is None else radius
    if radius < 0:
        raise ValueError(f"radius must be ≥ 0, got {radius}")
    i, j, _ = index.search.self_join(radius)
    same_i, same_j = index.stored.catalogue.identical_pairs()
    components = connected_groups(len(index), np.concatenate([i, same_i]), np.concatenate([j, same_j]))
    codes = index.stored.codes.codes
    groups = []
    for ids in components:
        recs = index.stored.catalogue.records(ids.tolist())
        members = order_members([member(index, r) for r in recs], keep)
        member_codes = np.asarray(codes[[m.id for m in members]])
        d_keep = bits.hamming(member_codes[:1], member_codes)[0]
        members = [members[0]] + [
            Member(**{**m.__dict__, "distance": int(d), "match": "code"}) for m, d in zip(members[1:], d_keep[1:])]
        max_d = max(int(bits.hamming(member_codes[a : a + 1024], member_codes).max())
                    for a in range(0, len(ids), 1024))  # in blocks: memory stays bounded for huge groups
        groups.append(Group(0, members, max_d))
    groups.sort(key=lambda g: min(m.path for m in g.members))
    for n, g in enumerate(groups, start=1):
        g.number = n
    return groups
