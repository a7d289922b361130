"""Near-duplicate groups of an index: candidate pairs, verification, linkage and keepers.

The data types here (:class:`Member`, :class:`Group`) are what ``dedup``, ``report`` and the actions of
:mod:`hashdup.actions` share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

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
    distance), "geometric" (local features agree on a transform and the aligned pixels agree) or, with single
    linkage, "linked" (joined to the group through other members, not directly to the keeper).
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


def find_groups(index: Index, radius: int | None = None, *, linkage: Linkage = "star",
                keep: KeepPolicy = "resolution", mirror: bool = True, verify: bool = True,
                progress: Callable[[str, int, int], None] | None = None) -> list[Group]:
    """Group the near-duplicate images of an index.

    Two stages (:mod:`hashdup.pairs`): the binary codes propose candidate pairs (within ``radius`` bits, and each
    image's nearest codes), then each pair is decided by the distance of the stored descriptors (mirror-aware),
    and, where that distance is not conclusive, by geometric verification of the two image files
    (:mod:`hashdup.verify`). Byte-identical files are always duplicates.

    Parameters
    ----------
    index : Index
    radius : int, optional
        Hamming radius of the candidate stage (inclusive); default from the code length. Without verification,
        pairs within the radius are the duplicates.
    linkage : {"star", "single", "complete"}
        How decided pairs make groups: "star", every member a duplicate of the group's keeper; "single", connected
        components (chains may join unrelated images through intermediate ones); "complete", every member a
        duplicate of every other.
    keep : {"resolution", "size", "oldest", "newest", "path"}
        Which member is the keeper (see :func:`order_members`).
    mirror : bool
        Also match left-right mirrored images.
    verify : bool
        Decide pairs by descriptors and pixels (the default) rather than by code distance alone.
    progress : callable, optional
        ``progress(stage, done, total)`` as pairs are verified.

    Returns
    -------
    list of Group
        Numbered from 1, ordered by their first path.
    """
    from hashdup.index import connected_groups
    from hashdup.pairs import PairJudge

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
    key = _keep_key(keep)
    judge = PairJudge(index, radius, mirror=mirror, verify=verify, progress=progress)
    try:
        i, j = judge.linked_pairs()
        components = connected_groups(len(index), i, j)
        recs = {r.id: member(index, r) for r in index.stored.catalogue.records(np.unique(np.concatenate(components))
                                                                            .tolist() if components else [])}
        parts = []
        for ids in components:
            if linkage == "single":
                parts.append(ids.tolist())
            else:
                parts.extend(_split(ids.tolist(), recs, key, judge, complete=linkage == "complete", edges=(i, j)))
        ordered_parts = [order_members([recs[m] for m in part], keep) for part in parts]
        judge.prefetch((o[0].id, m.id) for o in ordered_parts for m in o[1:])  # how each member matches its keeper
        groups: list[Group] = []
        for ordered in ordered_parts:
            keeper = ordered[0]
            members = [keeper] + [Member(**{**m.__dict__, "distance": judge.code_distance(keeper.id, m.id),
                                            "match": judge.how(keeper.id, m.id) or "linked"}) for m in ordered[1:]]
            ids_arr = np.array([m.id for m in members])
            groups.append(Group(0, members, judge.max_code_distance(ids_arr)))
    finally:
        judge.close()
    groups.sort(key=lambda g: min(m.path for m in g.members))
    for n, g in enumerate(groups, start=1):
        g.number = n
    return groups


def _split(ids: list[int], recs: dict[int, Member], key: Callable[[Member], Any], judge: Any, *, complete: bool,
           edges: tuple[NDArray[np.int64], NDArray[np.int64]]) -> list[list[int]]:
    """Cut a connected component into star groups (each member linked to the keeper) or complete groups (each
    member linked to every other), keeper first, greedily; what is left is split again.

    Every member still in the component is considered for the keeper's group (restricting them to a few links of
    the keeper lost a quarter of the dev split's recall: the decided pairs only connect, so copies of one original
    often lie several links apart); what is left is split into its connected components along ``edges``.

    In a star group a copy of the keeper's whole frame (identical, within the descriptor's accept distance, or
    verified as the whole picture resized or mirrored) stands in for the keeper: a member linked to such a *twin*
    joins too. A mirrored keeper and a cropped copy of the same original cannot be verified against each other
    (the stored ORB descriptors are not mirror-symmetric), but each is verified against the original."""
    inside = set(ids)
    adjacent: dict[int, list[int]] = {m: [] for m in ids}
    for a, b in zip(edges[0].tolist(), edges[1].tolist(), strict=True):
        if a in inside and b in inside:
            adjacent[a].append(b)
            adjacent[b].append(a)
    parts: list[list[int]] = []
    todo = [ids]
    while todo:
        comp = todo.pop()
        if len(comp) < 2:
            continue
        alive = set(comp)
        keeper = min((recs[m] for m in comp), key=key).id
        others = sorted(alive - {keeper})
        d = judge.distances(keeper, others)  # one batch, for the order
        rest = [others[k] for k in np.argsort(d, kind="stable").tolist()]
        judge.prefetch((keeper, m) for m in rest)  # every one is asked below (the first test of each member)
        group, twins = [keeper], [keeper]
        for m in rest:
            if complete:
                joins = judge.same(keeper, m) and all(judge.same(g, m) for g in group[1:])
            else:
                joins = any(judge.same(t, m) for t in twins)
            if joins:
                group.append(m)
                if not complete and judge.whole_frame(keeper, m):
                    twins.append(m)
        if len(group) > 1:
            parts.append(group)
        alive.difference_update(group)
        if len(group) == 1:  # nothing joined the keeper: the others are split without it
            alive.discard(keeper)
        todo.extend(_components(alive, adjacent))
    return parts


def _components(nodes: set[int], adjacent: dict[int, list[int]]) -> list[list[int]]:
    """Connected components (of two or more) of the graph ``adjacent`` restricted to ``nodes``."""
    out, seen = [], set()
    for start in sorted(nodes):
        if start in seen:
            continue
        seen.add(start)
        comp, stack = [start], [start]
        while stack:
            for n in adjacent[stack.pop()]:
                if n in nodes and n not in seen:
                    seen.add(n)
                    comp.append(n)
                    stack.append(n)
        if len(comp) > 1:
            out.append(sorted(comp))
    return out
