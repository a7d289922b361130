"""Deciding which pairs of indexed images are near-duplicates: candidates from the codes, decisions from the
descriptors and, where those are not conclusive, from the pixels.

Stage 1 (candidates). Pairs within ``radius`` bits (:meth:`HammingIndex.self_join`, also against the codes of the
mirrored descriptors — the descriptor's feature permutation, no extra decoding), byte-identical files, and each
image's :data:`NEAREST` closest images in every *view*: the index's codes re-ranked by the whole descriptor, and each
of the descriptor's ``views()`` (for ``gist+color``, the colour histogram and the GIST on a 2 × 2 grid) through
seeded random-hyperplane codes re-ranked by that view. Edits that move one view far leave another close: a caption
moves the GIST and not the colours, a grey copy the colours and not the GIST, a crop the fine grid more than the
coarse one.

Stage 2 (decision). The stored descriptors' distance (the smaller of plain and mirrored) at or below ``accept`` — a
fraction :data:`ACCEPT` of the median distance between random pairs of the index's own images — makes a duplicate;
other candidates are compared by :class:`hashdup.verify.Verifier` on the local features stored at index time (ORB
matches, a RANSAC similarity transform, then agreement of the aligned thumbnails), closest first, skipping pairs
already joined through earlier links, so the features are compared about once per duplicate and a few times per
other image. The pairs are verified in batches of :data:`SCREEN_BATCH`: :meth:`Verifier.screen
<hashdup.verify.Verifier.screen>` decides in one compiled pass, on all cores, the pairs that need neither RANSAC nor
a warp (almost every pair of a folder without duplicates), and :meth:`~hashdup.verify.Verifier.verify` the others.
Verdicts are kept in the index folder (:mod:`hashdup.io.verdicts`) for the next run. A last pass compares once the
groups that keep meeting on each other's shortlists (:meth:`PairJudge._merge_groups`). Measured on bench/neardup.py
(bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from hashdup import bits
from hashdup.index.matching import pair_distances
from hashdup.io.verdicts import LinkStore, VerdictStore, way_code
from hashdup.verify import Verdict, Verifier

if TYPE_CHECKING:
    from hashdup.index import HammingIndex
    from hashdup.pipeline import Index

#: Candidate radius when verifying, as a fraction of the code length (10 bits of 64): generous, since stage 2 decides.
CANDIDATE_RADIUS_FRACTION = 10 / 64
#: Closest images per image and per view proposed as candidates, out of a shortlist of nearest codes.
NEAREST = 3
SHORTLIST = 20
#: Shortlist appearances that make two groups worth comparing (see PairJudge._merge_groups).
MERGE_HITS = 2
#: Bits of the random-hyperplane codes of each part of a descriptor made of parts (the shortlist of that view).
PART_BITS = 64
#: Descriptor-distance thresholds as fractions of the median distance between random pairs of indexed images.
ACCEPT = 0.12
REJECT = 1.0
_BLOCK = 65536
#: Candidate pairs verified together by one call of :meth:`PairJudge.screen`.
SCREEN_BATCH = 2048


def _nearest_per_node(i: NDArray[np.int64], j: NDArray[np.int64], d: NDArray[np.float64], n: int,
                      m: int) -> NDArray[np.int64]:
    """Positions of the pairs that are among the ``m`` closest pairs of either of their images."""
    ends = np.concatenate([i, j])
    pos = np.concatenate([np.arange(len(i)), np.arange(len(i))])
    order = np.lexsort((np.concatenate([d, d]), ends))
    ends, pos = ends[order], pos[order]
    first = np.searchsorted(ends, ends, side="left")
    rank = np.arange(len(ends)) - first
    return np.unique(pos[rank < m])


class PairJudge:
    """Candidate pairs of an index and the decision on any pair of its images (cached).

    Parameters
    ----------
    index : Index
    radius : int, optional
        Candidate radius in bits; default :data:`CANDIDATE_RADIUS_FRACTION` of the code length when verifying,
        :func:`hashdup.pipeline.default_radius` otherwise (then code distance alone decides).
    mirror : bool
        Also match left-right mirrored images.
    verify : bool
        Decide by descriptors and pixels; without it, pairs within ``radius`` (or byte-identical) are duplicates.
    nearest : int
        Nearest codes per image proposed as candidates when verifying.
    progress : callable, optional
        ``progress("verifying", done, total)``.
    """

    def __init__(self, index: Index, radius: int | None = None, *, mirror: bool = True, verify: bool = True,
                 nearest: int = NEAREST, progress: Callable[[str, int, int], None] | None = None) -> None:
        from hashdup.pipeline import default_radius

        self.index = index
        self.n = len(index)
        self.mirror = bool(mirror)
        self.verify = bool(verify)
        self.nearest = int(nearest)
        self.progress = progress
        n_bits = index.n_bits
        if radius is None:
            radius = int(CANDIDATE_RADIUS_FRACTION * n_bits) if verify else default_radius(n_bits)
        if radius < 0:
            raise ValueError(f"radius must be ≥ 0, got {radius}")
        self.radius = int(radius)
        self.codes = index.stored.codes.codes
        self.X = np.asarray(index.stored.descriptors, dtype=np.float32)  # in memory: 4 bytes a feature and image
        self._pair_d: dict[tuple[int, int], tuple[float, float]] = {}  # (plain, mirrored) of pairs seen
        self.perm = index.descriptor.mirror_permutation() if self.mirror else None
        self.Xm = np.ascontiguousarray(self.X[:, self.perm]) if self.perm is not None else None
        self._view_rows: dict[int, tuple[NDArray[np.float32], NDArray[np.float32] | None]] = {}
        self.mirror_codes = self._mirror_codes() if self.mirror else None
        si, sj = index.stored.catalogue.identical_pairs()
        self.identical = {(min(a, b), max(a, b)) for a, b in zip(si, sj, strict=True)}
        self._decided: dict[tuple[int, int], str | None] = {}
        self.accept, self.reject = self._calibrate() if verify else (0.0, 0.0)
        self._verifier: Verifier | None = None
        self._verdicts: VerdictStore | None = None
        self._hashes: list[bytes] | None = None
        self._new_links: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None
        self._whole: set[tuple[int, int]] = set()  # verified pairs accepted as the whole frame
        self._screened: dict[tuple[int, int], Verdict] = {}  # decided by Verifier.screen, not yet asked
        self.problems: list[str] = []  # what close() could not do (a full disk, a read-only index folder)
        self.verified = 0  # pairs whose features were compared by this judge (not taken from stored verdicts)
        self._shortlisted: list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]] = []

    # --- stage 1 -------------------------------------------------------------------------------------------------
    def _mirror_codes(self) -> NDArray[np.uint8]:
        out = np.empty_like(np.asarray(self.codes[:0]), shape=self.codes.shape)
        for a in range(0, self.n, _BLOCK):
            rows = np.asarray(self.X[a : a + _BLOCK], dtype=np.float32)[:, self.perm]
            out[a : a + len(rows)] = self.index.encoder.encode(rows)
        return out

    def candidates(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
        """Candidate pairs ``(i, j)``, ``i < j``, sorted, unique, and whether each is one of an image's nearest
        (True) or only within the radius (False)."""
        search = self.index.search
        i, j, _ = search.self_join(self.radius)
        radius_i, radius_j = [i], [j]
        near_i: list[NDArray[np.int64]] = []
        near_j: list[NDArray[np.int64]] = []
        if self.identical:
            same = np.array(sorted(self.identical), dtype=np.int64)
            radius_i.append(same[:, 0])
            radius_j.append(same[:, 1])
        if self.mirror:
            for a in range(0, self.n, _BLOCK):
                lims, _, I = search.radius(np.asarray(self.mirror_codes[a : a + _BLOCK]), self.radius)
                radius_i.append(np.repeat(np.arange(a, a + len(lims) - 1, dtype=np.int64), np.diff(lims)))
                radius_j.append(I)
        if self.verify and self.nearest > 0:
            for v in self._views():
                a, b = self._nearest(*v)
                near_i.append(a)
                near_j.append(b)
        n = max(self.n, 1)

        def unique(parts_i: list, parts_j: list) -> NDArray[np.int64]:
            if not parts_i:
                return np.zeros(0, dtype=np.int64)
            a, b = np.concatenate(parts_i).astype(np.int64), np.concatenate(parts_j).astype(np.int64)
            ok = (a >= 0) & (b >= 0) & (a != b)
            return np.unique(np.minimum(a[ok], b[ok]) * n + np.maximum(a[ok], b[ok]))

        near = unique(near_i, near_j)
        pairs = np.union1d(unique(radius_i, radius_j), near)
        return pairs // n, pairs % n, np.isin(pairs, near)

    def _views(self) -> list[tuple[HammingIndex, list[NDArray[np.uint8]], Callable | None]]:
        """Where nearest images are looked for: the index's own codes (plain and mirrored queries) compared on the
        whole descriptor, and each of the descriptor's ``views()`` (seeded random-hyperplane codes of the view,
        then the view's distance)."""
        from hashdup.index import HammingIndex

        views: list = [(self.index.search, [np.asarray(self.codes)] + ([self.mirror_codes] if self.mirror else []),
                        None)]
        described = getattr(self.index.descriptor, "views", None)
        rng = np.random.default_rng(0)
        for view in (described() if described is not None else {}).values():
            W = None
            plain = np.empty((self.n, bits.row_bytes(PART_BITS)), dtype=np.uint8)
            mirrored = np.empty_like(plain)
            for a in range(0, self.n, _BLOCK):
                rows = np.asarray(self.X[a : a + _BLOCK], dtype=np.float64)
                for out, X in ((plain, rows), (mirrored, rows[:, self.perm] if self.mirror else None)):
                    if X is None:
                        continue
                    V = view(X)
                    if W is None:
                        W = rng.standard_normal((V.shape[1], PART_BITS))
                    out[a : a + len(rows)] = bits.pack((V - V.mean(axis=1, keepdims=True)) @ W >= 0)
            views.append((HammingIndex(plain, PART_BITS), [plain] + ([mirrored] if self.mirror else []), view))
        return views

    def _nearest(self, search: HammingIndex, queries: list[NDArray[np.uint8]], view: Callable | None
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Each image's :data:`NEAREST` closest images (by the descriptor, or its ``view``) among its
        :data:`SHORTLIST` nearest codes in ``search``."""
        k = min(SHORTLIST + 1, self.n)
        out_i, out_j = [], []
        for a in range(0, self.n, _BLOCK):
            shortlist = np.concatenate([search.knn(np.asarray(Q[a : a + _BLOCK]), k)[1] for Q in queries], axis=1)
            rows = np.repeat(np.arange(a, a + len(shortlist), dtype=np.int64), shortlist.shape[1])
            cand = shortlist.reshape(-1)
            ok = (cand >= 0) & (cand != rows)
            d = np.full(len(cand), np.inf)
            d[ok] = self._distances(rows[ok], cand[ok], view)
            d = d.reshape(shortlist.shape)
            listed = np.isfinite(d.reshape(-1))
            self._shortlisted.append((rows[listed], cand[listed], d.reshape(-1)[listed]))
            order = np.argsort(d, axis=1, kind="stable")
            best = np.take_along_axis(shortlist, order, axis=1)
            best_d = np.take_along_axis(d, order, axis=1)
            for r in range(len(best)):  # the same image may be on both shortlists: keep distinct ones
                seen = []
                for c, dc in zip(best[r].tolist(), best_d[r].tolist(), strict=True):
                    if np.isfinite(dc) and c not in seen:
                        seen.append(c)
                        if len(seen) == self.nearest:
                            break
                out_i.extend([a + r] * len(seen))
                out_j.extend(seen)
        return np.array(out_i, dtype=np.int64), np.array(out_j, dtype=np.int64)

    def linked_pairs(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Candidate pairs that are duplicates, enough of them to connect every group.

        Pairs decided without pixels (identical bytes, descriptor distance within ``accept``) are all kept. Of the
        pairs that need verification, only each image's :data:`NEAREST` closest are considered, in order of
        distance, and a pair whose images are already connected through earlier links is not verified again: the
        pixels are looked at about once per duplicate and at most :data:`NEAREST` times per other image.
        """
        stored = self._links().load()
        if stored is not None:  # the last run on this generation, with these settings
            return stored
        i, j = self._linked_pairs()
        self._new_links = (i, j)
        return i, j

    def _links(self) -> LinkStore:
        settings = {"radius": self.radius, "mirror": self.mirror, "verify": self.verify, "nearest": self.nearest,
                    "constants": [CANDIDATE_RADIUS_FRACTION, NEAREST, SHORTLIST, MERGE_HITS, PART_BITS, ACCEPT, REJECT],
                    **(self.verification_settings() if self.verify else {})}
        stored = self.index.stored
        return LinkStore(stored.folder, stored.manifest["checksum"], settings)

    def _linked_pairs(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        ci, cj, near = self.candidates()
        if not self.verify:
            keep = np.array([self.same(a, b) for a, b in zip(ci.tolist(), cj.tolist(), strict=True)], dtype=bool)
            return ci[keep], cj[keep]
        d = self._distances(ci, cj)
        cheap = np.array([(a, b) in self.identical for a, b in zip(ci.tolist(), cj.tolist(), strict=True)],
                         dtype=bool) | (d <= self.accept)
        # pairs only within the radius: each image's few closest, and not hopelessly far
        loose = np.flatnonzero(~cheap & ~near & (d <= self.reject))
        loose = loose[_nearest_per_node(ci[loose], cj[loose], d[loose], self.n, self.nearest)]
        band = np.union1d(np.flatnonzero(~cheap & near), loose)
        asked = np.union1d(np.flatnonzero(cheap), band)
        self._distances(ci[asked], cj[asked], remember=True)  # the pairs decided below
        parent = np.arange(self.n)

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = int(parent[x])
            return x

        for a, b in zip(ci[cheap].tolist(), cj[cheap].tolist(), strict=True):
            parent[find(a)] = find(b)
        linked = list(np.flatnonzero(cheap))
        band = band[np.argsort(d[band], kind="stable")].tolist()
        for start in range(0, len(band), SCREEN_BATCH):  # screened a batch at a time: joins made so far are known
            batch = band[start : start + SCREEN_BATCH]
            self.screen([(int(ci[e]), int(cj[e])) for e in batch if find(int(ci[e])) != find(int(cj[e]))])
            for n, e in enumerate(batch, start):
                a, b = int(ci[e]), int(cj[e])
                if find(a) != find(b) and self.same(a, b):
                    parent[find(a)] = find(b)
                    linked.append(e)
                if self.progress is not None:
                    self.progress("verifying", n + 1, len(band))
        if self.progress is not None and band:
            self.progress("verifying", len(band), len(band))
        for e in np.flatnonzero(cheap).tolist():
            self._decided[(int(ci[e]), int(cj[e]))] = self._decide(int(ci[e]), int(cj[e]))
        keep = np.sort(np.array(linked, dtype=np.int64))
        mi, mj = self._merge_groups(find, parent)
        return np.concatenate([ci[keep], mi]), np.concatenate([cj[keep], mj])

    def _merge_groups(self, find: Callable[[int], int], parent: NDArray[np.int64]
                      ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Second pass over the shortlists: two groups whose members appear on each other's shortlists at least
        :data:`MERGE_HITS` times (beyond the few nearest that were verified) are compared once, by their closest
        shortlisted pair. This joins the copies that are far from the rest of their family but close to each other
        (a crop and a rotation of one low-contrast picture) without verifying more pairs per image."""
        if not self._shortlisted:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        a = np.concatenate([x[0] for x in self._shortlisted])
        b = np.concatenate([x[1] for x in self._shortlisted])
        d = np.concatenate([x[2] for x in self._shortlisted])
        roots = np.array([find(x) for x in range(self.n)])
        size = np.bincount(roots, minlength=self.n)
        ra, rb = roots[a], roots[b]
        ok = (ra != rb) & (size[ra] > 1) & (size[rb] > 1)
        a, b, d, ra, rb = a[ok], b[ok], d[ok], ra[ok], rb[ok]
        key = np.minimum(ra, rb) * self.n + np.maximum(ra, rb)
        order = np.lexsort((d, key))  # by group pair, closest first
        _, first, hits = np.unique(key[order], return_index=True, return_counts=True)
        closest = order[first]  # each group pair's closest shortlisted pair
        order = closest[hits >= MERGE_HITS][np.argsort(-hits[hits >= MERGE_HITS], kind="stable")].tolist()

        def unjoined() -> Iterator[tuple[None, int, int]]:  # pulled lazily, as in linked_pairs
            for e in order:
                x, y = int(a[e]), int(b[e])
                if find(x) != find(y):
                    yield None, x, y

        out_i, out_j = [], []
        for _, x, y in unjoined():
            if find(x) != find(y) and self.same(x, y):
                parent[find(x)] = find(y)
                out_i.append(min(x, y))
                out_j.append(max(x, y))
        return np.array(out_i, dtype=np.int64), np.array(out_j, dtype=np.int64)

    def close(self) -> None:
        """Store the verdicts and the linked pairs this judge computed (:mod:`hashdup.io.verdicts`) for the next
        run."""
        if self._verdicts is not None and self._hashes is not None and not self._verdicts.save(self._hashes) \
                and self._verdicts.error:
            self.problems.append(f"the verdicts were not saved ({self._verdicts.error}): the next dedup decides "
                                 "those pairs again")
        if self._new_links is not None:
            links = self._links()
            if not links.save(*self._new_links):
                self.problems.append(f"the decided pairs were not saved ({links.error})")
            self._new_links = None

    def prefetch(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Decide ``pairs`` now, so that :meth:`how` answers them from the cache."""
        for i, j in pairs:
            self.how(i, j)

    # --- stage 2 -------------------------------------------------------------------------------------------------
    def _calibrate(self, n_pairs: int = 20000, seed: int = 0) -> tuple[float, float]:
        """``(accept, reject)`` distances: :data:`ACCEPT` and :data:`REJECT` times the median distance between
        random pairs of indexed images."""
        if self.n < 2:
            return 0.0, 0.0
        rng = np.random.default_rng(seed)
        i = rng.integers(0, self.n, n_pairs)
        j = rng.integers(0, self.n, n_pairs)
        ok = i != j
        d = self._distances(i[ok], j[ok])
        med = float(np.median(d)) if d.size else 0.0
        return ACCEPT * med, REJECT * med

    def _distances(self, i: NDArray[np.int64], j: NDArray[np.int64], view: Callable | None = None, *,
                   remember: bool | NDArray[np.bool_] = False) -> NDArray[np.float64]:
        """Descriptor distances of pairs (of a ``view`` of the descriptors, if given), the smaller of plain and
        mirrored when mirroring. Pairs of whole descriptors marked by ``remember`` (all, none, or a mask) are kept
        for :meth:`distance` and :meth:`_mirrored`: only pairs that will be asked again, so that memory stays
        proportional to them, not to the millions of shortlisted pairs of a large library."""
        out = np.empty(len(i))
        keep = np.broadcast_to(np.asarray(remember, dtype=bool), (len(i),))
        for a in range(0, len(i), 4096):
            ii, jj = i[a : a + 4096], j[a : a + 4096]
            plain, mirrored = self._plain_mirrored(ii, jj, view)
            out[a : a + 4096] = plain if mirrored is None else np.minimum(plain, mirrored)
            sel = keep[a : a + 4096]
            if view is None and sel.any():
                ii, jj, plain = ii[sel], jj[sel], plain[sel]
                pm = plain if mirrored is None else mirrored[sel]
                self._pair_d.update(zip(zip(ii.tolist(), jj.tolist(), strict=True),
                                        zip(plain.tolist(), pm.tolist(), strict=True), strict=True))
        return out

    def _plain_mirrored(self, i: NDArray[np.int64], j: NDArray[np.int64], view: Callable | None
                        ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        if view is None:
            V, Vm = self.X, self.Xm
        else:  # the view of every image, computed once
            if id(view) not in self._view_rows:
                self._view_rows[id(view)] = (  # contiguous: pair_distances would copy a strided view per call
                    np.ascontiguousarray(view(self.X), dtype=np.float32),
                    None if self.Xm is None else np.ascontiguousarray(view(self.Xm), dtype=np.float32))
            V, Vm = self._view_rows[id(view)]
        plain = pair_distances(V, V, i, j)
        return plain, (None if Vm is None else pair_distances(V, Vm, i, j))

    def _pair(self, i: int, j: int) -> tuple[float, float]:
        """(plain, mirrored) descriptor distance of ``i < j`` (mirrored = plain without mirroring)."""
        key = (min(i, j), max(i, j))
        if key not in self._pair_d:
            self._distances(np.array([key[0]]), np.array([key[1]]), remember=True)
        return self._pair_d[key]

    def distances(self, i: int, js: Iterable[int]) -> NDArray[np.float64]:
        """:meth:`distance` from ``i`` to each of ``js``, computed in one batch."""
        js = np.asarray(list(js), dtype=np.int64)
        a, b = np.minimum(i, js), np.maximum(i, js)
        return self._distances(a, b) if len(js) else np.zeros(0)

    def plain_distances(self, i: int, js: Iterable[int]) -> NDArray[np.float64]:
        """Descriptor distances from ``i`` to each of ``js`` as the images are (not mirror-aware)."""
        js = np.asarray(list(js), dtype=np.int64)
        return pair_distances(self.X, self.X, np.full(len(js), i, dtype=np.int64), js)

    def distance(self, i: int, j: int) -> float:
        """Descriptor distance of two images (the smaller of plain and mirrored, when mirroring)."""
        return min(self._pair(i, j))

    def _mirrored(self, i: int, j: int) -> bool | None:
        """Which way round to compare two images' pixels: mirrored (True), plain (False), or both (None) when the
        plain and mirrored descriptor distances are within 10 % of each other (near-symmetric pictures)."""
        if self.perm is None:
            return False
        plain, mirrored = self._pair(i, j)
        if abs(plain - mirrored) <= 0.1 * max(plain, mirrored):
            return None
        return bool(mirrored < plain)

    def code_distance(self, i: int, j: int) -> int:
        """Hamming distance of two images' codes (the smaller of plain and mirrored, when mirroring)."""
        a = np.asarray(self.codes[i : i + 1])
        d = int(bits.hamming(a, np.asarray(self.codes[j : j + 1]))[0, 0])
        if self.mirror_codes is not None:  # either image mirrored; LSH of a mirror is not exactly symmetric
            d = min(d, int(bits.hamming(a, self.mirror_codes[j : j + 1])[0, 0]),
                    int(bits.hamming(self.mirror_codes[i : i + 1], np.asarray(self.codes[j : j + 1]))[0, 0]))
        return d

    def max_code_distance(self, ids: NDArray[np.int64]) -> int:
        """Largest code distance between members of a group (plain codes), in blocks: memory stays bounded."""
        member_codes = np.asarray(self.codes[np.sort(ids)])
        return max(int(bits.hamming(member_codes[a : a + 1024], member_codes).max())
                   for a in range(0, len(ids), 1024))

    def how(self, i: int, j: int) -> str | None:
        """Why two images are duplicates ("identical", "code", "metric", "geometric"), or None if they are not."""
        key = (min(i, j), max(i, j))
        if key not in self._decided:
            self._decided[key] = self._decide(*key)
        return self._decided[key]

    def same(self, i: int, j: int) -> bool:
        return self.how(i, j) is not None

    def whole_frame(self, i: int, j: int) -> bool:
        """Whether two duplicates are copies of one whole frame: identical, within the accept distance, or verified
        without local features (the whole picture resized, recoloured, recompressed or mirrored)."""
        how = self.how(i, j)
        return how in ("identical", "metric") or (how == "geometric" and (min(i, j), max(i, j)) in self._whole)

    def _decide(self, i: int, j: int) -> str | None:
        if (i, j) in self.identical:
            return "identical"
        if not self.verify:
            return "code" if self.code_distance(i, j) <= self.radius else None
        if self.distance(i, j) <= self.accept:
            return "metric"
        return _geometric(self.verdict(i, j))

    def screen(self, pairs: list[tuple[int, int]]) -> None:
        """Verify in one batch (:meth:`Verifier.screen`) the pairs ``i < j`` of ``pairs`` that :meth:`how` would
        send to the verifier and no stored verdict answers; the pairs it decides are then answered from memory."""
        if not self.verify or not pairs:
            return
        self._open_verdicts()
        asked = []
        for i, j in pairs:
            if ((i, j) in self._decided or (i, j) in self._screened or (i, j) in self.identical
                    or self.distance(i, j) <= self.accept):
                continue
            mirrored = self._mirrored(i, j)
            if self._verdicts.get(self._hashes[i], self._hashes[j], way_code(mirrored)) is None:
                asked.append((i, j, mirrored))
        for (i, j, _), v in zip(asked, self.verifier.screen(asked), strict=True):
            if v is not None:
                self._screened[(i, j)] = v

    def _open_verdicts(self) -> None:
        if self._verdicts is None:
            self._verdicts = VerdictStore(self.index.stored.folder, self.verification_settings())
            self._hashes = [bytes.fromhex(r.blake2b) for r in self.index.stored.catalogue.records()
                            if r.id is not None]

    def verdict(self, i: int, j: int) -> Verdict:
        """The verification of the pair ``i < j`` from the stored features, or from the stored verdicts when the
        same two files were compared before under the same settings."""
        mirrored = self._mirrored(i, j)
        self._open_verdicts()
        key = (self._hashes[i], self._hashes[j], way_code(mirrored))
        known = self._verdicts.get(*key)
        if known is not None:
            same, way, reason, inliers, r_ncc, overlap = known
            v = Verdict(same, inliers, r_ncc, overlap, way, reason)
        else:
            v = self._screened.pop((i, j), None) or self.verifier.verify(i, j, mirrored)
            self.verified += 1
            self._verdicts.put(*key, (v.same, v.mirrored, v.reason, v.inliers, v.ncc, v.overlap))
        if v.same and v.inliers == 0:  # accepted by the whole-frame comparison
            self._whole.add((i, j))
        return v

    def verification_settings(self) -> dict[str, Any]:
        """Every setting a verdict depends on: the descriptor's and local features' (the frame is decoded at the
        descriptor's size), the verifier's, and the versions of the code that computes them."""
        import cv2

        from hashdup import __version__
        from hashdup.verify import VERIFY_VERSION

        descriptor = self.index.stored.manifest["descriptor"]
        frame = int((descriptor.get("local") or {}).get("frame", 0))
        return {"descriptor": descriptor, "verifier": Verifier.settings_for(frame, mirror=self.mirror),
                "versions": [VERIFY_VERSION, __version__, cv2.__version__]}

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            ff = self.index.stored.features
            self._verifier = Verifier(ff.__getitem__, ff.frame, mirror=self.mirror)
        return self._verifier


def _geometric(verdict: Verdict) -> str | None:
    """The decision a pixel comparison gives."""
    return "geometric" if verdict.same else None
