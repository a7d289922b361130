"""Brute-force oracles and code generators shared by the search tests: definitions, written for clarity, not speed."""

import numpy as np


def oracle_distances(db_bits, q_bits):
    """All Hamming distances, counted bit by bit on unpacked boolean codes: (nq, n)."""
    return (q_bits[:, None, :] != db_bits[None, :, :]).sum(axis=2)


def oracle_knn(D, k):
    """The k nearest of each row of D by (distance, id), padded with -1."""
    nq, n = D.shape
    Do = np.full((nq, k), -1)
    Io = np.full((nq, k), -1)
    for q in range(nq):
        order = sorted(range(n), key=lambda i: (D[q, i], i))[:k]
        Do[q, : len(order)] = D[q, order]
        Io[q, : len(order)] = order
    return Do, Io


def oracle_radius(D, r):
    """Per query, the sorted (distance, id) pairs within r (inclusive)."""
    return [sorted((int(D[q, i]), i) for i in range(D.shape[1]) if D[q, i] <= r) for q in range(D.shape[0])]


def make(n, nq, n_bits, seed, dup_rate=0.0, flip=0.03):
    """Random codes (bool), some database rows copied (ties), half the queries near-copies of database rows."""
    rng = np.random.default_rng(seed)
    db = rng.random((n, n_bits)) < 0.5
    if n and dup_rate:
        copies = rng.random(n) < dup_rate
        db[copies] = db[rng.integers(0, n, copies.sum())]
    q = rng.random((nq, n_bits)) < 0.5
    if n:
        near = rng.random(nq) < 0.5
        q[near] = db[rng.integers(0, n, near.sum())] ^ (rng.random((near.sum(), n_bits)) < flip)
    return db, q
