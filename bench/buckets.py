"""How well do LSH bucket tables (hashdup.index.buckets) find near duplicates, and how fast, against exact kNN?

Data (``--data``):

* ``random``: ``n`` uniform random codes, in which a fraction ``--dup-rate`` of the rows is replaced by copies of
  other rows with 0..``--max-flips`` bits flipped (planted near-duplicate groups);
* ``lsh``: real-ish codes with biased, correlated bits: ``n`` Gaussian vectors with a decaying spectrum
  (variance ∝ 1/i over ``--dims`` dimensions), the same fraction planted as noisy copies of other rows, encoded by
  hashdup's random-hyperplane LSH encoder (fitted on 20 000 rows).

Queries are database rows with exactly f bits flipped, f uniform in 0..``--max-flips`` (``random``), or database
vectors plus small Gaussian noise, encoded (``lsh``; their distance to the source row is printed).

Reference: the exact kNN of every query by ``hashdup.index.scan.knn_scan`` (numpy: xor + bitwise_count +
argpartition, 1 thread), timed in the same run; with ``--faiss``, also faiss ``IndexBinaryFlat`` at 1 thread. A
faster numba exact scan is being written elsewhere; the ratios here are against the numpy scan.

Per configuration (L tables, m key bits, p probes): build seconds and table memory, then recall@1 and recall@k
(tie-tolerant: the multiset of the k returned distances against the exact k distances), ``near``: the fraction of
the exact top-k within ``--near`` bits that are returned, ``src``: the fraction of queries whose source row is
returned at rank 1 or tied with it, candidates re-ranked per query, ms/query (one batched call, ``--threads``
numba threads), and the speed-up over the numpy scan.

Run from the repository root::

    .venv/bin/python bench/buckets.py [--n 1000000] [--bits 64] [--queries 1000] [--data random|lsh]
        [--tables auto,4,8,16] [--key-bits auto] [--probes 0,1,2] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from hashdup import bits
from hashdup.index import scan
from hashdup.index.buckets import BucketTables, default_key_bits, default_n_tables, recall_estimate


def flip_bits(codes_bits: np.ndarray, flips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copy of a boolean (n, n_bits) matrix with exactly ``flips[i]`` distinct bits of row ``i`` flipped."""
    out = codes_bits.copy()
    n_bits = out.shape[1]
    for i, f in enumerate(flips):
        if f:
            out[i, rng.choice(n_bits, size=int(f), replace=False)] ^= True
    return out


def random_data(n: int, n_bits: int, nq: int, dup_rate: float, max_flips: int, rng: np.random.Generator):
    db = np.empty((n, bits.row_bytes(n_bits)), dtype=np.uint8)
    step = 1 << 18
    for s in range(0, n, step):
        db[s : s + step] = bits.pack(rng.random((min(step, n - s), n_bits)) < 0.5)
    n_dup = int(dup_rate * n)
    if n_dup:
        dst = rng.choice(n, size=n_dup, replace=False)
        srcs = rng.integers(0, n, n_dup)
        db[dst] = bits.pack(flip_bits(bits.unpack(db[srcs], n_bits), rng.integers(0, max_flips + 1, n_dup), rng))
    src = rng.integers(0, n, nq)
    flips = rng.integers(0, max_flips + 1, nq)
    Q = bits.pack(flip_bits(bits.unpack(db[src], n_bits), flips, rng))
    return db, Q, src, flips


def lsh_data(n: int, n_bits: int, nq: int, dup_rate: float, dims: int, noise: float, rng: np.random.Generator):
    from hashdup.encoders.lsh import LSH

    scale = (1.0 / np.arange(1, dims + 1)) ** 0.5
    X = rng.standard_normal((n, dims)).astype(np.float32) * scale.astype(np.float32)
    n_dup = int(dup_rate * n)
    if n_dup:
        dst = rng.choice(n, size=n_dup, replace=False)
        X[dst] = X[rng.integers(0, n, n_dup)] + noise * rng.standard_normal((n_dup, dims)).astype(np.float32) * scale
    enc = LSH(n_bits=n_bits, random_state=int(rng.integers(2**31))).fit(X[:20000].astype(np.float64))
    db = np.empty((n, bits.row_bytes(n_bits)), dtype=np.uint8)
    step = 1 << 17
    for s in range(0, n, step):
        db[s : s + step] = enc.encode(X[s : s + step].astype(np.float64))
    src = rng.integers(0, n, nq)
    Q = enc.encode((X[src] + noise * rng.standard_normal((nq, dims)).astype(np.float32) * scale).astype(np.float64))
    flips = bits.hamming(Q, db[src]).diagonal()  # not a flip count here: the distance to the source row
    return db, Q, src, flips


def recall_at(D: np.ndarray, De: np.ndarray, k: int) -> float:
    """Tie-tolerant recall@k: per query, the multiset intersection of returned and exact distances, over k."""
    hits = 0
    for row, ref in zip(D[:, :k], De[:, :k], strict=True):
        a = np.bincount(row[row >= 0], minlength=1)
        b = np.bincount(ref[ref >= 0], minlength=1)
        m = min(len(a), len(b))
        hits += int(np.minimum(a[:m], b[:m]).sum())
    return hits / (k * D.shape[0])


def near_recall(D: np.ndarray, De: np.ndarray, near: int) -> float:
    """Of the exact top-k at distance ≤ near, the fraction returned (same multiset count, restricted)."""
    hits = total = 0
    for row, ref in zip(D, De, strict=True):
        ref = ref[(ref >= 0) & (ref <= near)]
        row = row[(row >= 0) & (row <= near)]
        total += len(ref)
        a, b = np.bincount(row, minlength=near + 1), np.bincount(ref, minlength=near + 1)
        hits += int(np.minimum(a, b).sum())
    return hits / total if total else float("nan")


def parse_list(text: str, auto: int) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if part.startswith("auto"):
            out.append(auto + int(part[4:] or 0))
        else:
            out.append(int(part))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--data", choices=["random", "lsh"], default="random")
    ap.add_argument("--dup-rate", type=float, default=0.1, help="fraction of database rows planted as near copies")
    ap.add_argument("--max-flips", type=int, default=6, help="random data: bits flipped in queries and copies")
    ap.add_argument("--dims", type=int, default=64, help="lsh data: vector dimensions")
    ap.add_argument("--noise", type=float, default=0.08, help="lsh data: noise of copies and queries (× scale)")
    ap.add_argument("--near", type=int, default=None, help="distance counted as near (default round(0.1 bits))")
    ap.add_argument("--tables", default="4,auto,12", help="comma list of L; 'auto' = default_n_tables, 'auto+4' ok")
    ap.add_argument("--key-bits", default="auto-2,auto,auto+2",
                    help="comma list of m; 'auto' = default_key_bits, 'auto-2' ok")
    ap.add_argument("--probes", default="0,1,2")
    ap.add_argument("--threads", type=int, default=None, help="numba threads for queries and builds")
    ap.add_argument("--faiss", action="store_true", help="also time faiss IndexBinaryFlat (1 thread)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    near = round(0.1 * args.bits) if args.near is None else args.near
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    if args.data == "random":
        db, Q, src, flips = random_data(args.n, args.bits, args.queries, args.dup_rate, args.max_flips, rng)
    else:
        db, Q, src, flips = lsh_data(args.n, args.bits, args.queries, args.dup_rate, args.dims, args.noise, rng)
    print(f"data: {args.data}, n={args.n}, {args.bits} bits, {args.queries} queries, k={args.k}, "
          f"dup_rate={args.dup_rate}, query-source distance mean {flips.mean():.2f} max {flips.max()} "
          f"({time.perf_counter() - t0:.1f} s to make)", file=sys.stderr)

    t0 = time.perf_counter()
    De, _Ie = scan.knn_scan(db, Q, args.k)
    t_exact = time.perf_counter() - t0
    ms_exact = 1e3 * t_exact / len(Q)
    print(f"exact numpy scan.knn_scan: {ms_exact:.3f} ms/query (1 thread); exact d@1 mean {De[:, 0].mean():.2f}, "
          f"d@{args.k} mean {De[:, -1].mean():.2f}", file=sys.stderr)
    if args.faiss:
        import faiss

        faiss.omp_set_num_threads(1)
        index = faiss.IndexBinaryFlat(db.shape[1] * 8)
        index.add(db)
        t0 = time.perf_counter()
        Df, _ = index.search(Q, args.k)
        ms_faiss = 1e3 * (time.perf_counter() - t0) / len(Q)
        same = np.array_equal(Df, De)
        print(f"faiss IndexBinaryFlat: {ms_faiss:.3f} ms/query (1 thread), distances equal exact: {same}",
              file=sys.stderr)

    auto_m = default_key_bits(args.n, args.bits)
    key_bits = parse_list(args.key_bits, auto_m)
    probes = [int(p) for p in args.probes.split(",")]
    threads = numba.get_num_threads()
    dmax = int(flips.max())
    print(f"| L | m | p | build s | tables MiB | recall@1 | recall@{args.k} | near@{args.k} (d≤{near}) | src found "
          f"| src found, d={dmax} | estimate, d={dmax} | cand/query | ms/query | × numpy scan |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in key_bits:
        for L in parse_list(args.tables, default_n_tables(args.bits, m)):
            BucketTables.build(db[:1000], args.bits, n_tables=1, key_bits=min(m, 8))  # load compiled kernels
            t0 = time.perf_counter()
            bt = BucketTables.build(db, args.bits, n_tables=L, key_bits=m, random_state=args.seed)
            t_build = time.perf_counter() - t0
            for p in probes:
                bt.query(db, Q[:4], args.k, probes=p)  # warm up
                t0 = time.perf_counter()
                D, I = bt.query(db, Q, args.k, probes=p)
                ms = 1e3 * (time.perf_counter() - t0) / len(Q)
                lims, _ = bt.candidates(Q, probes=p)
                cand = np.diff(lims).mean()
                found = (src[:, None] == I).any(axis=1)
                est = recall_estimate(dmax, args.bits, m, L, p) if args.data == "random" else float("nan")
                print(f"| {L} | {m} | {p} | {t_build:.2f} | {bt.nbytes / 2**20:.0f} | {recall_at(D, De, 1):.4f} "
                      f"| {recall_at(D, De, args.k):.4f} | {near_recall(D, De, near):.4f} | {found.mean():.4f} "
                      f"| {found[flips == dmax].mean():.4f} | {est:.4f} | {cand:.0f} | {ms:.4f} "
                      f"| {ms_exact / ms:.0f} |",
                      flush=True)
    print(f"(numba threads: {threads}; exact reference: numpy scan.knn_scan {ms_exact:.3f} ms/query, 1 thread)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
