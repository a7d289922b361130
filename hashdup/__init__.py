"""hashdup: find duplicate and similar images with compact binary codes.

The public API is small:

- :func:`build_index` indexes folders of images and returns the opened index; :func:`open_index` opens one made by
  ``hashdup index``. An index knows ``len(index)`` (images) and ``index.n_bits`` (bits per code); :func:`paths`
  and :func:`codes` give its images' paths and packed codes, row ``i`` being image id ``i``.
- :func:`query` finds the indexed images nearest to query images, as the rows ``hashdup query`` prints.
- :func:`find_duplicates` groups the near-duplicate images of an index, as ``hashdup dedup`` does.
- :class:`HammingIndex` is the search engine on its own: exact Hamming kNN returning faiss's ``(D, I)`` and radius
  search returning ``(lims, D, I)``, over any packed codes.

Importing ``hashdup`` is cheap: numpy, the descriptors, the encoders and the compiled search are imported by the
first function that needs them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np
    from numpy.typing import NDArray

    from hashdup.dedup import Group
    from hashdup.index import HammingIndex
    from hashdup.opened import Index

    PathLike = str | os.PathLike[str]

__version__ = "0.1.0"

__all__ = ["HammingIndex", "__version__", "build_index", "codes", "find_duplicates", "open_index", "paths", "query"]


def __getattr__(name: str) -> Any:
    """Re-exports imported on first use (importing them loads numpy)."""
    if name == "HammingIndex":
        from hashdup.index import HammingIndex

        return HammingIndex
    raise AttributeError(f"module 'hashdup' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "HammingIndex"})


def open_index(path: PathLike = ".hashdup", *, verify: bool = True) -> Index:
    """Open an index folder made by :func:`build_index` or ``hashdup index``.

    Parameters
    ----------
    path : path-like, default ".hashdup"
        The index folder (``--index`` of the command line).
    verify : bool, default True
        Also check the checksums of the code file, the catalogue and the encoder (each read once); with False only
        their sizes are checked.

    Returns
    -------
    Index
        The opened index (:class:`hashdup.opened.Index`): ``len(index)`` is the number of indexed images,
        ``index.n_bits`` the bits per code; :func:`paths` and :func:`codes` give the paths and the packed codes, row
        ``i`` being the image of id ``i`` (the ids :class:`HammingIndex` returns). It reads a snapshot: an index run
        that commits later is seen by the next open. ``index.close()`` releases its files.

    Raises
    ------
    hashdup.errors.NoIndexError
        When ``path`` holds no index (no ``index.json``).
    hashdup.errors.IndexFileError
        When a file of the index is missing, corrupt or disagrees with the others; the message names it.

    Examples
    --------
    >>> import tempfile
    >>> import hashdup
    >>> tmp = tempfile.TemporaryDirectory()
    >>> hashdup.build_index(["sample_data"], f"{tmp.name}/index").close()
    >>> idx = hashdup.open_index(f"{tmp.name}/index")
    >>> len(idx), idx.n_bits
    (21, 64)
    >>> hashdup.paths(idx)[:2]
    ['sample_data/copies/astronaut_half.jpg', 'sample_data/copies/chelsea_q30.jpg']
    >>> hashdup.codes(idx).shape
    (21, 8)
    >>> idx.close()
    >>> hashdup.open_index(tmp.name)
    Traceback (most recent call last):
    hashdup.errors.NoIndexError: no index at ... (no index.json); run `hashdup index DIR` first
    >>> tmp.cleanup()
    """
    from hashdup.opened import Index

    return Index(path, verify=verify)


def build_index(paths: PathLike | Iterable[PathLike], index: PathLike = ".hashdup", **settings: Any) -> Index:
    """Index folders of images and return the opened index.

    Files are walked, decoded, described, encoded into binary codes, and written as a new generation of the index,
    atomically. An existing index in ``index`` is updated incrementally: ``paths`` are added to the folders it
    already holds, unchanged files are not read again, vanished ones are dropped, and its fitted encoder is reused
    while the settings stay the same. Files that cannot be read are skipped (see ``on_problem``).

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Folders (walked recursively) and single image files. Empty, the folders the index already holds are walked
        again.
    index : path-like, default ".hashdup"
        The index folder, created if needed.
    **settings
        Passed to :func:`hashdup.pipeline.build_index`, which documents them all. The common ones:

        descriptor : {"gist+color", "gist", "color"}, default "gist+color"
            What an image is described by before it is encoded.
        encoder : {"lsh", "median", "pca", "itq", "spectral", "itml", "rbm"}, default "lsh"
            How descriptors become binary codes; "itml" and "rbm" learn from labels, pairs or self-supervised edits.
        n_bits : int, default 64
            Code length, 8 to 1024.
        seed : int, default 0
            Random state of the encoder: the same seed gives the same codes.
        workers : int, optional
            Processes that decode and describe images (default: the CPU cores available). The index is the same.
        on_problem : callable, optional
            ``on_problem(path, reason)``, called for every file that is skipped.
        progress : callable, optional
            ``progress(stage, done, total)``, called as work advances.

    Returns
    -------
    Index
        The index as :func:`open_index` opens it.

    Raises
    ------
    hashdup.errors.HashdupError
        When no image could be indexed or the settings are refused (the previous index is then left as it was).

    Examples
    --------
    >>> import tempfile
    >>> import hashdup
    >>> tmp = tempfile.TemporaryDirectory()
    >>> skipped = []
    >>> idx = hashdup.build_index(["sample_data"], f"{tmp.name}/index", n_bits=64, seed=0,
    ...                           on_problem=lambda path, reason: skipped.append((path, reason)))
    >>> len(idx), idx.n_bits
    (21, 64)
    >>> skipped
    [('sample_data/bad/notes.jpg', 'not an image (unknown format)'),
     ('sample_data/bad/truncated.jpg', 'truncated image (55 bytes not processed)')]
    >>> idx.close()
    >>> tmp.cleanup()
    """
    from hashdup import pipeline

    folders = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    pipeline.build_index(folders, index, **settings)
    return open_index(index)


def paths(index: Index) -> list[str]:
    """The paths of the images of an index, by id: ``paths(index)[i]`` is the image of row ``i`` of :func:`codes`.

    Parameters
    ----------
    index : Index
        An opened index (:func:`open_index`).

    Returns
    -------
    list of str, length ``len(index)``
        Each path as the command line prints it: relative to the working folder when inside it, absolute otherwise.
        Images that could not be read when indexing have no id and are not listed.

    Examples
    --------
    >>> import tempfile
    >>> import hashdup
    >>> tmp = tempfile.TemporaryDirectory()
    >>> idx = hashdup.build_index(["sample_data/copies"], f"{tmp.name}/index")
    >>> hashdup.paths(idx)
    ['sample_data/copies/astronaut_half.jpg', 'sample_data/copies/chelsea_q30.jpg',
     'sample_data/copies/china_exif_rotated.jpg', 'sample_data/copies/coffee_crop.jpg',
     'sample_data/copies/flower.png', 'sample_data/copies/grace_hopper_copy.jpg',
     'sample_data/copies/holidays_100000_small.jpg']
    >>> idx.close()
    >>> tmp.cleanup()
    """
    return index.paths(range(len(index)))


def codes(index: Index) -> NDArray[np.uint8]:
    """The binary codes of the images of an index, packed, row ``i`` being the image ``paths(index)[i]``.

    Parameters
    ----------
    index : Index
        An opened index (:func:`open_index`).

    Returns
    -------
    ndarray of uint8, shape (len(index), n_bytes)
        Read-only: a memory map of the index's code file, not a copy. Bit ``j`` of a code is bit ``j % 8`` of byte
        ``j // 8`` (little bit order, :mod:`hashdup.bits`); rows are padded with zero bits to a multiple of 8 bytes
        (``n_bytes = 8 * ceil(n_bits / 64)``), so they can be viewed as uint64 words. :class:`HammingIndex` takes
        them as they are.

    Examples
    --------
    >>> import tempfile
    >>> import hashdup
    >>> tmp = tempfile.TemporaryDirectory()
    >>> idx = hashdup.build_index(["sample_data/copies"], f"{tmp.name}/index", n_bits=96)
    >>> C = hashdup.codes(idx)
    >>> C.shape, C.dtype, C.flags.writeable
    ((7, 16), dtype('uint8'), False)

    Every image is its own nearest code, at distance 0:

    >>> D, I = hashdup.HammingIndex(C, idx.n_bits).knn(C, k=1)
    >>> D.ravel().tolist(), I.ravel().tolist()
    ([0, 0, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6])
    >>> idx.close()
    >>> tmp.cleanup()
    """
    return index.stored.codes.codes


def query(index: Index, images: PathLike | Iterable[PathLike], k: int | None = 12, radius: int | None = None,
          **options: Any) -> tuple[list[dict[str, Any]], int]:
    """Find the indexed images most similar to each query image, by Hamming distance between binary codes.

    The query images are described and encoded as the index's images were; they need not be indexed. A query image
    that is itself indexed is left out of its own results. With ``radius``, every image within that distance
    (inclusive, ``d <= radius``) is returned, the ``k`` nearest of them when ``k`` is also given; without it, the
    ``k`` nearest.

    Parameters
    ----------
    index : Index
        An opened index (:func:`open_index`).
    images : path-like or iterable of path-like
        Query image files.
    k : int or None, default 12
        Results per query image, at most; None with a ``radius``: all within it.
    radius : int, optional
        Hamming radius in bits, inclusive.
    **options
        Passed to :func:`hashdup.pipeline.query`: ``approx=True`` searches the LSH buckets only (faster on large
        indexes, may miss far neighbours; ``probes``, default 1, key bits flipped), and ``on_problem(path, reason)``
        is called for every query image that cannot be read.

    Returns
    -------
    rows : list of dict
        The rows ``hashdup query`` prints, one per result: ``{"query": str, "rank": int, "path": str,
        "distance": int}``, ``query`` as given, ``rank`` from 1 within each query, ``path`` as :func:`paths` gives
        it, ``distance`` in bits (0 to ``n_bits``). A ``"stale"`` key (the reason) is added when the file vanished
        or changed since it was indexed. Ordered by query (as given), distance, then path.
    failed : int
        Query images that could not be read (they have no rows).

    Raises
    ------
    ValueError
        When ``k`` and ``radius`` are both None.

    Examples
    --------
    >>> import tempfile
    >>> import hashdup
    >>> tmp = tempfile.TemporaryDirectory()
    >>> idx = hashdup.build_index(["sample_data"], f"{tmp.name}/index")
    >>> rows, failed = hashdup.query(idx, ["sample_data/photos/chelsea.jpg", "sample_data/bad/notes.jpg"], k=1)
    >>> rows
    [{'query': 'sample_data/photos/chelsea.jpg', 'rank': 1, 'path': 'sample_data/copies/chelsea_q30.jpg',
      'distance': 1}]
    >>> failed
    1

    Every indexed image within 10 bits of a photo (its cropped copy):

    >>> rows, failed = hashdup.query(idx, "sample_data/photos/coffee.jpg", k=None, radius=10)
    >>> [(row["path"], row["distance"]) for row in rows]
    [('sample_data/copies/coffee_crop.jpg', 7)]
    >>> idx.close()
    >>> tmp.cleanup()
    """
    from hashdup import pipeline

    queries = [images] if isinstance(images, str | os.PathLike) else list(images)
    return pipeline.query(index, [os.fspath(q) for q in queries], k=k, radius=radius, **options)


def find_duplicates(index: Index, **options: Any) -> list[Group]:
    """Group the near-duplicate images of an index, as ``hashdup dedup`` does.

    The binary codes propose candidate pairs (within ``radius`` bits, and each image's nearest codes); each pair is
    then decided by the distance of the stored descriptors (mirror-aware) and, where that is not conclusive, by
    geometric verification of the two files. Byte-identical files are always duplicates.

    Parameters
    ----------
    index : Index
        An opened index (:func:`open_index`).
    **options
        Passed to :func:`hashdup.dedup.find_groups`, which documents them:

        radius : int, optional
            Hamming radius of the candidate pairs, inclusive. Default: 10/64 of the code length when verifying,
            3/64 without verification (where the pairs within it are the duplicates).
        linkage : {"star", "single", "complete"}, default "star"
            "star": every member is a duplicate of the group's keeper; "single": connected components (a chain may
            join unrelated images); "complete": every member a duplicate of every other.
        keep : {"original", "resolution", "size", "oldest", "newest", "path"}, default "original"
            Which member is the keeper: "original", the one the others were most likely derived from; or the most
            pixels, the largest file, the oldest or newest file, the first path.
        mirror : bool, default True
            Also match left-right mirrored copies.
        verify : bool, default True
            Decide pairs by descriptors and pixels; False: by code distance alone (faster, less precise).
        progress, on_problem : callable, optional
            ``progress(stage, done, total)`` as pairs are verified; ``on_problem(message)`` for what does not stop
            the run.

    Returns
    -------
    list of hashdup.dedup.Group
        Numbered from 1, ordered by their first path. ``group.keep`` is the keeper, ``group.duplicates`` the other
        members (by path), ``group.members`` both, keeper first; each a :class:`hashdup.dedup.Member` with
        ``path``, ``distance`` (bits from the keeper's code) and ``match`` (how it joined: "identical", "code",
        "metric", "geometric" or "linked"). ``group.to_json()`` is the dict ``hashdup dedup`` prints.

    Examples
    --------
    >>> import tempfile
    >>> import hashdup
    >>> tmp = tempfile.TemporaryDirectory()
    >>> idx = hashdup.build_index(["sample_data"], f"{tmp.name}/index")
    >>> for group in hashdup.find_duplicates(idx):
    ...     print(group.number, group.keep.path, [(m.path, m.match) for m in group.duplicates])
    1 sample_data/photos/astronaut.jpg [('sample_data/copies/astronaut_half.jpg', 'metric')]
    2 sample_data/photos/chelsea.jpg [('sample_data/copies/chelsea_q30.jpg', 'metric')]
    3 sample_data/photos/china.jpg [('sample_data/copies/china_exif_rotated.jpg', 'metric')]
    4 sample_data/photos/coffee.jpg [('sample_data/copies/coffee_crop.jpg', 'geometric')]
    5 sample_data/photos/flower.jpg [('sample_data/copies/flower.png', 'metric')]
    6 sample_data/photos/grace_hopper.jpg [('sample_data/copies/grace_hopper_copy.jpg', 'identical')]
    7 sample_data/photos/holidays_100000.jpg [('sample_data/copies/holidays_100000_small.jpg', 'metric')]

    By code distance alone, the cropped copy is missed (7 bits from its original, beyond the default 3 of 64):

    >>> groups = hashdup.find_duplicates(idx, verify=False)
    >>> len(groups), [g.keep.path for g in groups if g.keep.path.endswith("coffee.jpg")]
    (6, [])
    >>> idx.close()
    >>> tmp.cleanup()
    """
    from hashdup.dedup import find_groups

    return find_groups(index, **options)
