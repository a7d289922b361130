"""Grouping near-duplicates from matched pairs."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def connected_groups(n: int, i: ArrayLike, j: ArrayLike) -> list[NDArray[np.int64]]:
    """Connected components of the graph on ``n`` nodes with edges ``(i[e], j[e])``, singletons left out.

    Returns
    -------
    list of ndarray of int64
        Each group's node ids, ascending; groups ordered by their smallest id.
    """
    from scipy.sparse import coo_matrix
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
