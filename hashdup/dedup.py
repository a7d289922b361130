"""Near-duplicate groups of an index: candidate pairs, verification, linkage and keepers.

The data types here (:class:`Member`, :class:`Group`) are what ``dedup``, ``report`` and the actions of
:mod:`hashdup.actions` share.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from hashdup.io.catalogue import FileRecord, staleness
from hashdup.io.walk import display_path

if TYPE_CHECKING:
    from hashdup.pipeline import Index

Linkage = Literal["single", "complete", "star"]
KeepPolicy = Literal["original", "resolution", "size", "oldest", "newest", "path"]
LINKAGES: tuple[str, ...] = ("single", "complete", "star")
KEEP_POLICIES: tuple[str, ...] = ("original", "resolution", "size", "oldest", "newest", "path")
#: Members within this fraction of a group's largest pixel count count as full size for the "original" keeper
#: (a crop or a downscale has lost far more; an EXIF-turned copy has the same count).
FULL_SIZE = 0.99
#: Members whose summed descriptor distance to their group is within this fraction of the smallest are as central
#: as the medoid (see :func:`original_keeper`).
SPREAD_SAMPLE = 256  # members a spread is summed over, at most: the keeper of a group of n costs O(n), not O(n²)
CENTRAL = 0.15  # on bench/neardup.py dev, 0.10-0.25 all keep the original (0.02: 0.87, 0.05: 0.99)


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

    def stale(self) -> dict[str, str]:
        """The members whose file vanished or changed since it was indexed (size, modification time), by path, with
        the reason (:func:`hashdup.io.catalogue.staleness`); looked at once per group."""
        if "stale" not in self.extra:
            found = {m.path: staleness(m.abspath, m.size, m.mtime_ns) for m in self.members}
            self.extra["stale"] = {p: r for p, r in found.items() if r is not None}
        return self.extra["stale"]

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per member for ``--table``, the keeper first and marked: ``{"group", "keep" ("*" or ""),
        "match", "distance", "path"}``, ``distance`` the Hamming distance from the keeper's code; a stale file's
        path says so (``[vanished]``)."""
        stale = self.stale()
        return [{"group": self.number, "keep": "*" if m is self.keep else "", "match": "" if m is self.keep else m.match,
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


def _keep_key(policy: str):  # noqa: ANN202 - a sort key on Member
    """Sort key putting the keeper first; ties broken by resolution, then size, then age, then path. The "original"
    policy needs the group's descriptors (:func:`original_keeper`); its key here is the fallback, "resolution"."""
    if policy in ("original", "resolution"):
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


def order_members(members: Sequence[Member], keep: KeepPolicy = "resolution",
                  distances: Callable[[int, list[int]], NDArray[np.float64]] | None = None) -> list[Member]:
    """Members with the keeper first (by ``keep``), the others by path.

    Policies: "original" (see :func:`original_keeper`; needs ``distances``), "resolution" (most pixels, then
    largest file, then oldest), "size" (largest file), "oldest" and "newest" (file modification time), "path" (first
    path in sort order); each breaks ties like "resolution".
    """
    if keep == "original" and distances is not None:
        first = original_keeper(members, distances)
    else:
        first = min(members, key=_keep_key(keep))
    return [first, *sorted((m for m in members if m is not first), key=lambda m: m.path)]


def original_keeper(members: Sequence[Member], distances: Callable[[int, list[int]], NDArray[np.float64]],
                    fidelity: Callable[[Member], float] | None = None) -> Member:
    """The member the others were most likely derived from: the keeper of the "original" policy.

    1. *Full size.* A crop or a downscale loses pixels: only members within :data:`FULL_SIZE` of the group's most
       pixels are considered.
    2. *Central.* Every other usual edit (recompression, blur, a caption, brightness, contrast, a grey or a mirrored
       copy) moves a copy away from the original in descriptor space, each copy independently, so the original is
       near the *medoid*: the candidates whose summed descriptor distance to all members (``distances(i, js)``,
       plain, not mirror-aware: a mirrored copy is an edit) is within :data:`CENTRAL` of the smallest remain. Mild
       re-encodings (an EXIF-turned copy, a lossless conversion, a faint blur) stay as central as the original.
    3. *Most faithful encoding.* Among those, the highest ``fidelity`` (by default
       :func:`hashdup.io.images.encoding_fidelity`: a JPEG's quality from its quantisation table, read from the
       file's header), where a lossless file next to lossy ones of the same picture counts as a conversion of them
       (exports to PNG are common; a camera or a phone writes JPEG or HEIF); then a name that does not say "copy"
       (:func:`looks_like_copy`); then the older file (a copy is made after its original: an EXIF-turned
       re-encode at the original's quality is only told apart by that), then "resolution".

    Measured on bench/neardup.py (bench/RESULTS.md): the original is the keeper of all 116 held-out groups that
    contain one (87 of 87 on dev, where the thresholds were chosen), against 25 of 116 for "resolution".
    """
    from hashdup.io.images import encoding_fidelity

    fidelity = fidelity or (lambda m: encoding_fidelity(m.abspath))
    key = _keep_key("resolution")
    most = max(m.pixels for m in members)
    full = [m for m in members if m.pixels >= FULL_SIZE * most]
    if len(full) == 1:
        return full[0]
    ids = sorted(m.id for m in members)
    if len(ids) > SPREAD_SAMPLE:  # a giant component: the spread over an even sample of it (deterministic)
        ids = [ids[k] for k in np.linspace(0, len(ids) - 1, SPREAD_SAMPLE).round().astype(int)]
    spread = {m.id: float(np.sum(distances(m.id, ids))) for m in full}
    least = min(spread.values())
    central = [m for m in full if spread[m.id] <= (1 + CENTRAL) * least]
    if len(central) == 1:
        return central[0]
    score = {m.id: fidelity(m) for m in central}
    lossless = {m.id for m in central if score[m.id] >= 100.0}
    mixed = 0 < len(lossless) < len(central)
    return min(central, key=lambda m: (mixed and m.id in lossless, -round(score[m.id]), looks_like_copy(m.path),
                                       m.mtime_ns, key(m)))


#: Words by which people and programs name copies: "photo (1).jpg", "photo - Copy.jpg", "Copy of photo.jpg",
#: "photo_copy.jpg", a folder "copies" or "duplicates".
_COPY_NAME = re.compile(r"(?i)(\bcop(y|ies)\b|_cop(y|ies)\b|\(\d+\)$|\bduplicates?\b)")


def looks_like_copy(path: str) -> bool:
    """Whether a file's name, or the name of a folder it is in, says it is a copy (see :data:`_COPY_NAME`)."""
    parts = path.replace("\\", "/").split("/")
    names = [*parts[:-1], parts[-1].rsplit(".", 1)[0]]
    return any(_COPY_NAME.search(n) for n in names)


def member(index: Index, rec: FileRecord, distance: int = 0, match: str = "keeper") -> Member:
    cat = index.stored.catalogue
    path = cat.abspath(rec)
    return Member(int(rec.id), display_path(path), path, int(rec.size or 0), int(rec.mtime_ns or 0),
                  rec.blake2b or "", int(rec.width or 0), int(rec.height or 0), rec.format or "", distance, match)


def find_groups(index: Index, radius: int | None = None, *, linkage: Linkage = "star",
                keep: KeepPolicy = "original", mirror: bool = True, verify: bool = True,
                progress: Callable[[str, int, int], None] | None = None,
                on_problem: Callable[[str], None] | None = None) -> list[Group]:
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
    keep : {"original", "resolution", "size", "oldest", "newest", "path"}
        Which member is the keeper (see :func:`order_members` and :func:`original_keeper`).
    mirror : bool
        Also match left-right mirrored images.
    verify : bool
        Decide pairs by descriptors and pixels (the default) rather than by code distance alone.
    progress : callable, optional
        ``progress(stage, done, total)`` as pairs are verified.
    on_problem : callable, optional
        ``on_problem(message)`` for what does not stop the run: the decisions cache could not be saved (a full disk,
        a read-only index folder).

    Returns
    -------
    list of Group
        Numbered from 1, ordered by their first path.
    """
    from hashdup.index import connected_groups
    from hashdup.pairs import PairJudge

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
    _keep_key(keep)  # a usage error before any work
    judge = PairJudge(index, radius, mirror=mirror, verify=verify, progress=progress)
    distances = judge.plain_distances

    def choose(members: Sequence[Member]) -> Member:
        return order_members(members, keep, distances)[0]

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
                parts.extend(_split(ids.tolist(), recs, choose, judge, complete=linkage == "complete", edges=(i, j)))
        ordered_parts = [order_members([recs[m] for m in part], keep, distances) for part in parts]
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
        for message in judge.problems:
            if on_problem is not None:
                on_problem(message)
    groups.sort(key=lambda g: min(m.path for m in g.members))
    for n, g in enumerate(groups, start=1):
        g.number = n
    return groups


def _split(ids: list[int], recs: dict[int, Member], choose: Callable[[Sequence[Member]], Member], judge: Any, *,
           complete: bool,
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
        keeper = choose([recs[m] for m in comp]).id
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
