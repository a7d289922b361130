"""Which member of a group is kept: the policies of ``--keep``, and the "original" keeper (the member the others
were most likely derived from)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from hashdup.dedup.members import Member

KeepPolicy = Literal["original", "resolution", "size", "oldest", "newest", "path"]
KEEP_POLICIES: tuple[str, ...] = ("original", "resolution", "size", "oldest", "newest", "path")
#: Members within this fraction of a group's largest pixel count count as full size for the "original" keeper
#: (a crop or a downscale has lost far more; an EXIF-turned copy has the same count).
FULL_SIZE = 0.99
#: Members whose summed descriptor distance to their group is within this fraction of the smallest are as central
#: as the medoid (see :func:`original_keeper`).
SPREAD_SAMPLE = 256  # members a spread is summed over, at most: the keeper of a group of n costs O(n), not O(n²)
CENTRAL = 0.15  # on bench/neardup.py dev, 0.10-0.25 all keep the original (0.02: 0.87, 0.05: 0.99)


def keep_key(policy: str):
    """Sort key putting the keeper first; ties broken by resolution, then size, then age, then path. The "original"
    policy needs the group's descriptors (:func:`original_keeper`); its key here is the fallback, "resolution"."""
    if policy in ("original", "resolution"):
        return lambda m: (-m.facts.pixels, -m.facts.size, m.facts.mtime_ns, m.path)
    if policy == "size":
        return lambda m: (-m.facts.size, -m.facts.pixels, m.facts.mtime_ns, m.path)
    if policy == "oldest":
        return lambda m: (m.facts.mtime_ns, -m.facts.pixels, -m.facts.size, m.path)
    if policy == "newest":
        return lambda m: (-m.facts.mtime_ns, -m.facts.pixels, -m.facts.size, m.path)
    if policy == "path":
        return lambda m: (m.path,)
    raise ValueError(f"keep policy must be one of {', '.join(KEEP_POLICIES)}, got {policy!r}")


def order_members(members: Sequence[Member], keep: KeepPolicy = "resolution",
                  distances: Callable[[int, list[int]], NDArray[np.float64]] | None = None,
                  fidelity: Callable[[Member], float] | None = None) -> list[Member]:
    """Members with the keeper first (by ``keep``), the others by path.

    Policies: "original" (see :func:`original_keeper`; needs ``distances``, and takes ``fidelity``), "resolution"
    (most pixels, then largest file, then oldest), "size" (largest file), "oldest" and "newest" (file modification
    time), "path" (first path in sort order); each breaks ties like "resolution".
    """
    if keep == "original" and distances is not None:
        first = original_keeper(members, distances, fidelity)
    else:
        first = min(members, key=keep_key(keep))
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
       :func:`hashdup.io.fidelity.encoding_fidelity`: a JPEG's quality from its quantisation table, read from the
       file's header), where a lossless file next to lossy ones of the same picture counts as a conversion of them
       (exports to PNG are common; a camera or a phone writes JPEG or HEIF); then a name that does not say "copy"
       (:func:`looks_like_copy`); then the older file (a copy is made after its original: an EXIF-turned
       re-encode at the original's quality is only told apart by that), then "resolution".

    Measured on bench/neardup.py (bench/RESULTS.md): the original is the keeper of all 116 held-out groups that
    contain one (87 of 87 on dev, where the thresholds were chosen), against 25 of 116 for "resolution".
    """
    from hashdup.io.fidelity import encoding_fidelity

    fidelity = fidelity or (lambda m: encoding_fidelity(m.abspath))
    key = keep_key("resolution")
    most = max(m.facts.pixels for m in members)
    full = [m for m in members if m.facts.pixels >= FULL_SIZE * most]
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
                                       m.facts.mtime_ns, key(m)))


#: Words by which people and programs name copies: "photo (1).jpg", "photo - Copy.jpg", "Copy of photo.jpg",
#: "photo_copy.jpg", a folder "copies" or "duplicates".
_COPY_NAME = re.compile(r"(?i)(\bcop(y|ies)\b|_cop(y|ies)\b|\(\d+\)$|\bduplicates?\b)")


def looks_like_copy(path: str) -> bool:
    """Whether a file's name, or the name of a folder it is in, says it is a copy (see :data:`_COPY_NAME`)."""
    parts = path.replace("\\", "/").split("/")
    names = [*parts[:-1], parts[-1].rsplit(".", 1)[0]]
    return any(_COPY_NAME.search(n) for n in names)
