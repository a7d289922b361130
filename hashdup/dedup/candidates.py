"""Stage 1 of dedup: candidate pairs of an index's images, and the descriptor distances that rank and decide them.

Pairs within ``radius`` bits (:meth:`HammingIndex.self_join`, also against the codes of the
mirrored descriptors — the descriptor's feature permutation, no extra decoding), byte-identical files, and each
image's :data:`NEAREST` closest images in every *view*: the index's codes re-ranked by the whole descriptor, and each
of the descriptor's ``views()`` (for ``gist+color``, the colour histogram and the GIST on a 2 × 2 grid) through
seeded random-hyperplane codes re-ranked by that view. Edits that move one view far leave another close: a caption
moves the GIST and not the colours, a grey copy the colours and not the GIST, a crop the fine grid more than the
coarse one.

The decisions (stage 2) are :class:`hashdup.dedup.judge.PairJudge`'s, which extends :class:`Candidates`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from hashdup import bits
from hashdup.descriptors.base import View
from hashdup.index.matching import pair_distance, pair_distances

if TYPE_CHECKING:
    from hashdup.index import HammingIndex
    from hashdup.opened import Index

#: Candidate radius when verifying, as a fraction of the code length (10 bits of 64): generous, since stage 2 decides.
CANDIDATE_RADIUS_FRACTION = 10 / 64
#: Closest images per image and per view proposed as candidates, out of a shortlist of nearest codes.
NEAREST = 3
SHORTLIST = 20
#: Bits of the random-hyperplane codes of each part of a descriptor made of parts (the shortlist of that view).
PART_BITS = 64
_BLOCK = 65536


class Candidates:
    """The candidate pairs of an index (:meth:`candidates`) and the distances of its images' stored descriptors
    (plain and mirrored, cached for the pairs that will be asked again).

    Parameters
    ----------
    index : Index
    radius : int, optional
        Candidate radius in bits; default :data:`CANDIDATE_RADIUS_FRACTION` of the code length when verifying,
        :func:`hashdup.opened.default_radius` otherwise (then code distance alone decides).
    mirror : bool
        Also match left-right mirrored images.
    verify : bool
        Whether stage 2 verifies (then each image's nearest are candidates too).
    nearest : int
        Nearest codes per image proposed as candidates when verifying.
    """

    def __init__(self, index: Index, radius: int | None = None, *, mirror: bool = True, verify: bool = True,
                 nearest: int = NEAREST) -> None:
        from hashdup.opened import default_radius

        self.index = index
        self.n = len(index)
        self.mirror = bool(mirror)
        self.verify = bool(verify)
        self.nearest = int(nearest)
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
        # np.take, not X[:, perm]: 0.07 s against 1.7 s for 101,000 × 640 (a fancy index along the rows' axis)
        self.Xm = np.take(self.X, self.perm, axis=1) if self.perm is not None else None
        self._view_rows: dict[int, tuple[NDArray[np.float32], NDArray[np.float32] | None]] = {}
        si, sj = index.stored.catalogue.identical_pairs()
        self.identical = {(min(a, b), max(a, b)) for a, b in zip(si, sj, strict=True)}
        self._shortlisted: list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]] = []

    @cached_property
    def mirror_codes(self) -> NDArray[np.uint8] | None:
        """The codes of every image's mirrored descriptor (None without mirroring), computed on first use: a dedup
        that reuses stored decisions never needs all of them (:meth:`code_distances` encodes those it asks for)."""
        return self._mirror_codes() if self.mirror else None

    def _mirror_rows(self, ids: NDArray[np.int64]) -> NDArray[np.uint8]:
        """The mirrored codes of images ``ids``, from :attr:`mirror_codes` when computed, else encoded in one batch
        (an encoder gives a row the same code alone as in any batch)."""
        if "mirror_codes" in self.__dict__ and self.mirror_codes is not None:
            return np.asarray(self.mirror_codes[ids])
        if self.perm is None:
            raise ValueError("mirrored codes asked for with mirroring off")
        return self.index.encoder.encode(np.take(self.X[ids], self.perm, axis=1))

    def _mirror_codes(self) -> NDArray[np.uint8]:
        if self.perm is None:
            raise ValueError("mirrored codes asked for with mirroring off")
        out = np.empty_like(np.asarray(self.codes[:0]), shape=self.codes.shape)
        for a in range(0, self.n, _BLOCK):
            rows = np.take(np.asarray(self.X[a : a + _BLOCK], dtype=np.float32), self.perm, axis=1)
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
        if self.mirror_codes is not None:  # set when mirroring
            for a in range(0, self.n, _BLOCK):
                lims, _, I = search.radius(np.asarray(self.mirror_codes[a : a + _BLOCK]), self.radius)
                radius_i.append(np.repeat(np.arange(a, a + len(lims) - 1, dtype=np.int64), np.diff(lims)))
                radius_j.append(I)
        if self.verify and self.nearest > 0:
            for v in self._views():
                vi, vj = self._nearest(*v)
                near_i.append(vi)
                near_j.append(vj)
        n = max(self.n, 1)

        def unique(parts_i: list[NDArray[np.int64]], parts_j: list[NDArray[np.int64]]) -> NDArray[np.int64]:
            if not parts_i:
                return np.zeros(0, dtype=np.int64)
            a, b = np.concatenate(parts_i).astype(np.int64), np.concatenate(parts_j).astype(np.int64)
            ok = (a >= 0) & (b >= 0) & (a != b)
            return np.unique(np.minimum(a[ok], b[ok]) * n + np.maximum(a[ok], b[ok]))

        near = unique(near_i, near_j)
        pairs = np.union1d(unique(radius_i, radius_j), near)
        return pairs // n, pairs % n, np.isin(pairs, near)

    def _views(self) -> list[tuple[HammingIndex, list[NDArray[np.uint8]], View | None]]:
        """Where nearest images are looked for: the index's own codes (plain and mirrored queries) compared on the
        whole descriptor, and each of the descriptor's ``views()`` (seeded random-hyperplane codes of the view,
        then the view's distance)."""
        from hashdup.index import HammingIndex

        queries = [np.asarray(self.codes)] + ([self.mirror_codes] if self.mirror_codes is not None else [])
        views: list[tuple[HammingIndex, list[NDArray[np.uint8]], View | None]] = [(self.index.search, queries, None)]
        rng = np.random.default_rng(0)
        for view in self.index.descriptor.views().values():
            W = None
            plain = np.empty((self.n, bits.row_bytes(PART_BITS)), dtype=np.uint8)
            mirrored = np.empty_like(plain)
            for a in range(0, self.n, _BLOCK):
                rows = np.asarray(self.X[a : a + _BLOCK], dtype=np.float64)
                flipped = None if self.perm is None else np.take(rows, self.perm, axis=1)
                for out, X in ((plain, rows), (mirrored, flipped)):
                    if X is None:
                        continue
                    V = view(X)
                    if W is None:
                        W = rng.standard_normal((V.shape[1], PART_BITS))
                    out[a : a + len(rows)] = bits.pack((V - V.mean(axis=1, keepdims=True)) @ W >= 0)
            # a mirror-invariant view (a global colour histogram) gives the same codes both ways: one query is enough
            twice = self.mirror and not np.array_equal(plain, mirrored)
            views.append((HammingIndex(plain, PART_BITS), [plain] + ([mirrored] if twice else []), view))
        return views

    def _nearest(self, search: HammingIndex, queries: list[NDArray[np.uint8]], view: View | None
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Each image's :data:`NEAREST` closest images (by the descriptor, or its ``view``) among its
        :data:`SHORTLIST` nearest codes in ``search``."""
        k = min(SHORTLIST + 1, self.n)
        out_i: list[NDArray[np.int64]] = []
        out_j: list[NDArray[np.int64]] = []
        for a in range(0, self.n, _BLOCK):
            shortlist = np.concatenate([search.knn(np.asarray(Q[a : a + _BLOCK]), k)[1] for Q in queries], axis=1)
            rows = np.repeat(np.arange(a, a + len(shortlist), dtype=np.int64), shortlist.shape[1])
            cand = shortlist.reshape(-1)
            ok = (cand >= 0) & (cand != rows)
            d: NDArray[np.float64] = np.full(len(cand), np.inf)
            d[ok] = self._distances(rows[ok], cand[ok], view)
            d = d.reshape(shortlist.shape)
            listed = np.isfinite(d.reshape(-1))
            self._shortlisted.append((rows[listed], cand[listed], d.reshape(-1)[listed]))
            order = np.argsort(d, axis=1, kind="stable")
            best = np.take_along_axis(shortlist, order, axis=1).reshape(-1)
            listed = np.isfinite(np.take_along_axis(d, order, axis=1).reshape(-1))
            row = np.repeat(np.arange(len(order), dtype=np.int64), order.shape[1])
            # the same image may be on both shortlists (plain and mirrored queries): its first place counts
            by_image = np.lexsort((np.arange(len(best)), best, row))
            again = (row[by_image][1:] == row[by_image][:-1]) & (best[by_image][1:] == best[by_image][:-1])
            listed[by_image[1:][again]] = False
            kept = np.flatnonzero(listed)  # row by row, closest first
            rank = np.arange(len(kept)) - np.searchsorted(row[kept], row[kept], side="left")
            kept = kept[rank < self.nearest]
            out_i.append(a + row[kept])
            out_j.append(best[kept].astype(np.int64))
        if not out_i:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(out_i), np.concatenate(out_j)


    # --- descriptor distances ----------------------------------------------------------------------------------------
    def _distances(self, i: NDArray[np.int64], j: NDArray[np.int64], view: View | None = None, *,
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

    def _plain_mirrored(self, i: NDArray[np.int64], j: NDArray[np.int64], view: View | None
                        ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        if view is None:
            V, Vm = self.X, self.Xm
        else:  # the view of every image, computed once
            if id(view) not in self._view_rows:
                V = np.ascontiguousarray(view(self.X), dtype=np.float32)  # contiguous: pair_distances would copy
                Vm = None if self.Xm is None else np.ascontiguousarray(view(self.Xm), dtype=np.float32)
                # a mirror-invariant view: the mirrored distance is the plain one
                self._view_rows[id(view)] = (V, None if Vm is None or np.array_equal(V, Vm) else Vm)
            V, Vm = self._view_rows[id(view)]
        plain = pair_distances(V, V, i, j)
        return plain, (None if Vm is None else pair_distances(V, Vm, i, j))

    def _pair(self, i: int, j: int) -> tuple[float, float]:
        """(plain, mirrored) descriptor distance of ``i < j`` (mirrored = plain without mirroring)."""
        key = (min(i, j), max(i, j))
        if key not in self._pair_d:  # one pair: the batch path's array work would cost more than the distances
            plain = pair_distance(self.X, self.X, *key)
            self._pair_d[key] = (plain, plain if self.Xm is None else pair_distance(self.X, self.Xm, *key))
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

    def _ways(self, i: NDArray[np.int64], j: NDArray[np.int64]) -> list[bool | None]:
        """:meth:`_mirrored` of many pairs, computed in batches."""
        if self.perm is None:
            return [False] * len(i)
        out: list[bool | None] = []
        for a in range(0, len(i), _BLOCK):
            plain, mirrored = self._plain_mirrored(i[a : a + _BLOCK], j[a : a + _BLOCK], None)
            assert mirrored is not None  # set when mirroring
            near = np.abs(plain - mirrored) <= 0.1 * np.maximum(plain, mirrored)
            out.extend(None if n else m for n, m in zip(near.tolist(), (mirrored < plain).tolist(), strict=True))
        return out

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
        return int(self.code_distances(i, [j])[0])

    def code_distances(self, i: int, js: Iterable[int]) -> NDArray[np.int64]:
        """:meth:`code_distance` of image ``i`` to each of images ``js``, in one batch (the mirrored codes of the
        images asked for are encoded together when the index's are not all computed)."""
        js = np.fromiter(js, dtype=np.int64)
        a, b = np.asarray(self.codes[i : i + 1]), np.asarray(self.codes[js])
        d = bits.hamming(a, b)[0].astype(np.int64)
        if self.mirror and len(js):  # either image mirrored; LSH of a mirror is not exactly symmetric
            mirrored = self._mirror_rows(np.append(js, i))
            d = np.minimum(d, np.minimum(bits.hamming(a, mirrored[:-1])[0], bits.hamming(mirrored[-1:], b)[0]))
        return d

    def max_code_distance(self, ids: NDArray[np.int64]) -> int:
        """Largest code distance between members of a group (plain codes), in blocks: memory stays bounded."""
        member_codes = np.asarray(self.codes[np.sort(ids)])
        return max(int(bits.hamming(member_codes[a : a + 1024], member_codes).max())
                   for a in range(0, len(ids), 1024))

