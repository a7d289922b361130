"""Near-duplicate groups of an index: decided pairs (:mod:`hashdup.dedup.judge`) joined into groups by a linkage,
each with its keeper (:mod:`hashdup.dedup.keepers`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hashdup.dedup.keepers import KeepPolicy, keep_key, order_members
from hashdup.dedup.members import Group, Member, member
from hashdup.io.fidelity import encoding_fidelity

if TYPE_CHECKING:
    from hashdup.opened import Index

Linkage = Literal["single", "complete", "star"]
LINKAGES: tuple[str, ...] = ("single", "complete", "star")


def find_groups(index: Index, radius: int | None = None, *, linkage: Linkage = "star",
                keep: KeepPolicy = "original", mirror: bool = True, verify: bool = True,
                progress: Callable[[str, int, int], None] | None = None,
                on_problem: Callable[[str], None] | None = None) -> list[Group]:
    """Group the near-duplicate images of an index.

    Two stages (:mod:`hashdup.dedup.judge`): the binary codes propose candidate pairs (within ``radius`` bits, and each
    image's nearest codes), then each pair is decided by the distance of the stored descriptors (mirror-aware),
    and, where that distance is not conclusive, by geometric verification of the two image files
    (:mod:`hashdup.dedup.verify`). Byte-identical files are always duplicates.

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
    from hashdup.dedup.judge import PairJudge

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
    keep_key(keep)  # a usage error before any work
    judge = PairJudge(index, radius, mirror=mirror, verify=verify, progress=progress)
    distances = judge.plain_distances
    fidelities: dict[int, float] = {}  # read from each file's header once, though a member is ordered twice

    def fidelity(m: Member) -> float:
        if m.id not in fidelities:
            fidelities[m.id] = encoding_fidelity(m.abspath)
        return fidelities[m.id]

    def choose(members: Sequence[Member]) -> Member:
        return order_members(members, keep, distances, fidelity)[0]

    try:
        i, j = judge.linked_pairs()
        components = connected_groups(len(index), i, j)
        grouped = np.unique(np.concatenate(components)).tolist() if components else []
        recs = {r.indexed_id: member(index, r) for r in index.stored.catalogue.records(grouped)}
        adjacent: dict[int, list[int]] = {m: [] for m in grouped}  # the decided pairs, built once for every split
        for a, b in zip(i.tolist(), j.tolist(), strict=True):
            adjacent[a].append(b)
            adjacent[b].append(a)
        parts = []
        for ids in components:
            if linkage == "single":
                parts.append(ids.tolist())
            else:
                parts.extend(_split(ids.tolist(), recs, choose, judge, complete=linkage == "complete",
                                    adjacent=adjacent))
        ordered_parts = [order_members([recs[m] for m in part], keep, distances, fidelity) for part in parts]
        judge.prefetch((o[0].id, m.id) for o in ordered_parts for m in o[1:])  # how each member matches its keeper
        groups: list[Group] = []
        for ordered in ordered_parts:
            keeper = ordered[0]
            near = judge.code_distances(keeper.id, (m.id for m in ordered[1:])).tolist()
            members = [keeper] + [replace(m, distance=d, match=judge.how(keeper.id, m.id) or "linked")
                                  for m, d in zip(ordered[1:], near, strict=True)]
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
           complete: bool, adjacent: dict[int, list[int]]) -> list[list[int]]:
    """Cut a connected component into star groups (each member linked to the keeper) or complete groups (each
    member linked to every other), keeper first, greedily; what is left is split again.

    Every member still in the component is considered for the keeper's group (restricting them to a few links of
    the keeper lost a quarter of the dev split's recall: the decided pairs only connect, so copies of one original
    often lie several links apart); what is left is split into its connected components along ``adjacent`` (the
    decided pairs, by image).

    In a star group a copy of the keeper's whole frame (identical, within the descriptor's accept distance, or
    verified as the whole picture resized or mirrored) stands in for the keeper: a member linked to such a *twin*
    joins too. A mirrored keeper and a cropped copy of the same original cannot be verified against each other
    (the stored ORB descriptors are not mirror-symmetric), but each is verified against the original."""
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


def connected_groups(n: int, i: ArrayLike, j: ArrayLike) -> list[NDArray[np.int64]]:
    """Connected components of the graph on ``n`` nodes with edges ``(i[e], j[e])``, singletons left out.

    Returns
    -------
    list of ndarray of int64
        Each group's node ids, ascending; groups ordered by their smallest id.
    """
    from scipy.sparse import coo_matrix  # here: scipy is only needed once there are pairs
    from scipy.sparse.csgraph import connected_components

    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    if n == 0 or i.size == 0:
        return []
    graph = coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
    groups = [g for g in np.split(order, cuts) if g.size > 1]
    groups.sort(key=lambda g: int(g[0]))
    return groups
