"""Stage 2 of dedup: deciding which candidate pairs (:mod:`hashdup.dedup.candidates`) are near-duplicates, from
the descriptors and, where those are not conclusive, from the local features.

The stored descriptors' distance (the smaller of plain and mirrored) at or below ``accept`` — a
fraction :data:`ACCEPT` of the median distance between random pairs of the index's own images — makes a duplicate;
other candidates are compared by :class:`hashdup.dedup.verify.Verifier` on the local features stored at index time (ORB
matches, a RANSAC similarity transform, then agreement of the aligned thumbnails), closest first, skipping pairs
already joined through earlier links, so the features are compared about once per duplicate and a few times per
other image. The pairs are verified in batches of :data:`SCREEN_BATCH`: :meth:`Verifier.screen
<hashdup.dedup.verify.Verifier.screen>` decides in one compiled pass, on all cores, the pairs that need neither RANSAC
nor a warp (almost every pair of a folder without duplicates), and :meth:`~hashdup.dedup.verify.Verifier.verify` the
others.
Verdicts are kept in the index folder (:mod:`hashdup.io.verdicts`) for the next run. A last pass compares once the
groups that keep meeting on each other's shortlists (:meth:`PairJudge._merge_groups`). Measured on bench/neardup.py
(bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from hashdup.dedup.candidates import CANDIDATE_RADIUS_FRACTION, NEAREST, PART_BITS, SHORTLIST, Candidates
from hashdup.dedup.verify import Verdict, Verifier
from hashdup.errors import IndexFileError
from hashdup.io.verdicts import LinkStore, VerdictStore, way_code

if TYPE_CHECKING:
    from hashdup.opened import Index

#: Shortlist appearances that make two groups worth comparing (see PairJudge._merge_groups).
MERGE_HITS = 2
#: Descriptor-distance thresholds as fractions of the median distance between random pairs of indexed images.
ACCEPT = 0.12
REJECT = 1.0
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


class PairJudge(Candidates):
    """Candidate pairs of an index and the decision on any pair of its images (cached).

    Parameters
    ----------
    index : Index
    radius : int, optional
        Candidate radius in bits; default :data:`CANDIDATE_RADIUS_FRACTION` of the code length when verifying,
        :func:`hashdup.opened.default_radius` otherwise (then code distance alone decides).
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
        super().__init__(index, radius, mirror=mirror, verify=verify, nearest=nearest)
        self.progress = progress
        self._decided: dict[tuple[int, int], str | None] = {}
        self.accept, self.reject = self._calibrate() if verify else (0.0, 0.0)
        self._verifier: Verifier | None = None
        self._verdicts: VerdictStore | None = None
        self._hashes: list[bytes] | None = None
        self._new_links: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None
        self._whole: set[tuple[int, int]] = set()  # verified pairs accepted as the whole frame
        self.problems: list[str] = []  # what close() could not do (a full disk, a read-only index folder)
        self.verified = 0  # pairs whose features were compared by this judge (not taken from stored verdicts)

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
        band = band[np.argsort(d[band], kind="stable")]
        ways = self._ways(ci[band], cj[band])
        bi, bj, band = ci[band].tolist(), cj[band].tolist(), band.tolist()
        for start in range(0, len(band), SCREEN_BATCH):  # screened a batch at a time: joins made so far are known
            stop = min(len(band), start + SCREEN_BATCH)
            self.screen([(bi[n], bj[n], ways[n]) for n in range(start, stop) if find(bi[n]) != find(bj[n])])
            for n in range(start, stop):
                a, b, e = bi[n], bj[n], band[n]
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
        """Decide ``pairs`` now, so that :meth:`how` answers them from memory: their descriptor distances in one
        batch, and those that need their pixels through one compiled :meth:`screen`, before :meth:`how` takes the
        rest (RANSAC) one at a time. The decisions are :meth:`how`'s own; only the Python around each pair goes
        (the star split of a component of thousands of crops asks tens of thousands of pairs)."""
        todo = [key for key in sorted({(min(i, j), max(i, j)) for i, j in pairs}) if key not in self._decided]
        if self.verify and todo:
            fresh = [key for key in todo if key not in self._pair_d]
            if fresh:
                self._distances(np.array([i for i, _ in fresh], dtype=np.int64),
                                np.array([j for _, j in fresh], dtype=np.int64), remember=True)
            self.screen([(i, j, self._mirrored(i, j)) for i, j in todo
                         if (i, j) not in self.identical and self.distance(i, j) > self.accept])
        for i, j in todo:
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

    def screen(self, pairs: list[tuple[int, int, bool | None]]) -> None:
        """Verify in one batch (:meth:`Verifier.screen`) the pairs ``(i, j, way)``, ``i < j``, that no stored verdict
        answers; ``way`` is :meth:`_mirrored`'s, and the pairs are ones :meth:`how` sends to the verifier (not
        identical, not within the accept distance). The pairs it decides are then answered from memory."""
        if not self.verify or not pairs:
            return
        verdicts, hashes = self._open_verdicts()
        asked = [(i, j, way) for i, j, way in pairs
                 if (i, j) not in self._decided and verdicts.get(hashes[i], hashes[j], way_code(way)) is None]
        if not asked:  # every pair stored: the verifier, and the feature file it opens and checks, are not needed
            return
        for (i, j, mirrored), v in zip(asked, self.verifier.screen(asked), strict=True):
            if v is not None:  # decided here: how() answers from memory
                self._remember(i, j, mirrored, v)
                self._decided[(i, j)] = _geometric(v)

    def _open_verdicts(self) -> tuple[VerdictStore, list[bytes]]:
        """The stored verdicts, and the content hash of each indexed image (by id), both read on first use.

        Raises
        ------
        IndexFileError
            When the catalogue records an indexed file without its content hash.
        """
        if self._verdicts is None or self._hashes is None:
            catalogue = self.index.stored.catalogue
            hashes = []
            for i, h in enumerate(catalogue.hashes()):
                if h is None:
                    raise IndexFileError(str(catalogue.path), f"indexed file {i} has no content hash")
                hashes.append(bytes.fromhex(h))
            self._verdicts = VerdictStore(self.index.stored.folder, self.verification_settings())
            self._hashes = hashes
        return self._verdicts, self._hashes

    def verdict(self, i: int, j: int) -> Verdict:
        """The verification of the pair ``i < j`` from the stored features, or from the stored verdicts when the
        same two files were compared before under the same settings."""
        mirrored = self._mirrored(i, j)
        verdicts, hashes = self._open_verdicts()
        key = (hashes[i], hashes[j], way_code(mirrored))
        known = verdicts.get(*key)
        if known is not None:
            same, way, reason, inliers, r_ncc, overlap = known
            v = Verdict(same, inliers, r_ncc, overlap, way, reason)
            if v.same and v.inliers == 0:
                self._whole.add((i, j))
        else:
            v = self._remember(i, j, mirrored, self.verifier.verify(i, j, mirrored))
        return v

    def _remember(self, i: int, j: int, mirrored: bool | None, v: Verdict) -> Verdict:
        """Keep the verdict this judge computed for ``i < j`` (stored by :meth:`close`)."""
        verdicts, hashes = self._open_verdicts()
        self.verified += 1
        verdicts.put(hashes[i], hashes[j], way_code(mirrored), (v.same, v.mirrored, v.reason, v.inliers, v.ncc,
                                                                 v.overlap))
        if v.same and v.inliers == 0:  # accepted by the whole-frame comparison
            self._whole.add((i, j))
        return v

    def verification_settings(self) -> dict[str, Any]:
        """Every setting a verdict depends on: the descriptor's and local features' (the frame is decoded at the
        descriptor's size), the verifier's, and the versions of the code that computes them."""
        import cv2

        from hashdup import __version__
        from hashdup.dedup.verify import VERIFY_VERSION

        descriptor = self.index.stored.manifest["descriptor"]
        frame = int((descriptor.get("local") or {}).get("frame", 0))
        return {"descriptor": descriptor, "verifier": Verifier.settings_for(frame, mirror=self.mirror),
                "versions": [VERIFY_VERSION, __version__, cv2.__version__]}

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            ff = self.index.stored.features
            self._verifier = Verifier(ff, ff.frame, mirror=self.mirror)
        return self._verifier


def _geometric(verdict: Verdict) -> str | None:
    """The decision a pixel comparison gives."""
    return "geometric" if verdict.same else None
