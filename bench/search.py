"""How fast are hashdup's exact Hamming scans (hashdup.index.kernels) against FAISS and the memory bandwidth?

For every database size N (``--n``) and code length (``--bits``), on uniform random codes and ``--queries`` random
queries, one run measures:

* kNN (k = ``--k``): the hashdup kernel at 1 thread and at ``--threads`` threads; FAISS ``IndexBinaryFlat`` at
  1 thread (``faiss.omp_set_num_threads(1)``) and at ``--threads``; plain numpy (``hashdup.index.scan.knn_scan``:
  xor + bitwise_count + argpartition, 1 thread) on the first ``--numpy-rows`` rows only, its time scaled
  linearly by N / numpy-rows (a scan is linear in N; marked ``*`` in the table);
* radius search (r = ``--radius``, inclusive): the hashdup kernel at 1 and ``--threads`` threads; FAISS
  ``IndexBinaryFlat.range_search`` at 1 thread with radius r + 1 (FAISS binary range search is strict ``d < r``);
* one query alone (kNN, 1 and ``--threads`` threads), the latency of a single full scan.

The memory-bandwidth floor of one scan is N × row bytes divided by the machine's read bandwidth, measured in the
same run as the best of ``numpy.ndarray.sum`` over a 1 GiB uint64 array (1 thread). A batch of queries shares one
pass over the codes, so ms/query of a batch can go below the floor; the single-query latency cannot.

Every timing is the best of ``--repeat`` runs: ms/query is wall clock (the ratios use it), ``cpu ms/q`` the process
CPU time over the same calls (all threads; at 1 thread it is what the scan costs even while other processes take
turns on the cores; FAISS's OpenMP threads count while they spin). Results are checked: hashdup's kNN distances equal
FAISS's (ids may differ on ties: FAISS does not order ties by id), and hashdup's radius matches equal FAISS's as sets.
The load average is printed: on a shared machine the other processes slow every column alike, and most of all the
multi-threaded ones.

Targets (issue 4): kNN at 10 M × 64 bits, 1 thread, ≤ 0.5 × FAISS IndexBinaryFlat and ≤ 2 × the bandwidth floor.

Run from the repository root (FAISS from the ``bench`` extra; about 3 minutes at the defaults)::

    .venv/bin/python bench/search.py [--n 1000000,10000000] [--bits 64,256] [--queries 100] [--k 12]
        [--radius 3] [--threads 2] [--repeat 3] [--numpy-rows 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from hashdup import bits
from hashdup.index import kernels, scan


def best_time(fn, repeat: int) -> tuple[tuple[float, float], object]:
    """Smallest (wall-clock, process CPU) seconds of ``repeat`` calls, and the last result."""
    wall = cpu = float("inf")
    out = None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return (wall, cpu), out


def read_bandwidth(repeat: int) -> float:
    """Bytes per second that one thread reads: best ``ndarray.sum`` over 1 GiB of uint64 (all pages touched first)."""
    arr = np.ones(1 << 27, dtype=np.uint64)
    arr.sum()
    (seconds, _), _ = best_time(arr.sum, max(repeat, 5))
    return arr.nbytes / seconds


def random_codes(n: int, n_bits: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random packed codes, (n, row_bytes) uint8; random bytes are random bits (padding stays zero)."""
    codes = np.zeros((n, bits.row_bytes(n_bits)), dtype=np.uint8)
    codes[:, : n_bits // 8] = rng.integers(0, 256, size=(n, n_bits // 8), dtype=np.uint8)
    return codes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1000000,10000000", help="database sizes, comma-separated")
    ap.add_argument("--bits", default="64,256", help="code lengths (multiples of 8), comma-separated")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--radius", type=int, default=3, help="inclusive radius for hashdup (FAISS gets radius + 1)")
    ap.add_argument("--threads", type=int, default=2, help="threads for the multi-threaded columns")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--numpy-rows", type=int, default=1_000_000, help="rows the numpy scan runs on (then scaled)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-faiss", action="store_true", help="skip FAISS (ratios to FAISS are then omitted)")
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.n.split(",")]
    widths = [int(b) for b in args.bits.split(",")]
    if any(b % 8 or b < 8 for b in widths):
        ap.error("--bits must be multiples of 8")

    faiss = None
    if not args.no_faiss:
        try:
            import faiss
        except ImportError:
            sys.exit("FAISS is not installed: pip install -e '.[bench]', or pass --no-faiss")

    rng = np.random.default_rng(args.seed)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
          f", numpy {np.__version__}, numba {kernels.numba.__version__}"
          + (f", faiss {faiss.__version__}" if faiss else ""))
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t = time.perf_counter()
    kernels.knn(np.zeros((2, 1), np.uint64), np.zeros((1, 1), np.uint64), 1)  # compile, or load from the cache
    kernels.radius(np.zeros((2, 1), np.uint64), np.zeros((1, 1), np.uint64), 1)
    print(f"# first kernel calls (compile or cache load): {time.perf_counter() - t:.2f} s")
    bandwidth = read_bandwidth(args.repeat)
    print(f"# read bandwidth, 1 thread (ndarray.sum over 1 GiB): {bandwidth / 1e9:.1f} GB/s")
    print(f"# {args.queries} queries, k={args.k}, radius {args.radius} (inclusive), best of {args.repeat}")
    print()

    header = (f"| {'N':>10} | {'bits':>4} | {'MB':>5} | {'task':<14} | {'method':<26} | {'thr':>3} "
              f"| {'ms/query':>9} | {'/ faiss':>7} | {'/ floor':>7} | {'cpu ms/q':>8} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    summary = []
    for n in sizes:
        for n_bits in widths:
            db = random_codes(n, n_bits, rng)
            Q = random_codes(args.queries, n_bits, rng)
            dbw, Qw = bits.as_words(db), bits.as_words(Q)
            nq = len(Q)
            floor_ms = db.nbytes / bandwidth * 1e3

            # every closure below is called within this iteration; this size's values are bound as defaults
            # (the size in MB rather than the codes, so that the codes can be freed at the end of the iteration)
            def row(task, method, threads, times, per=nq, faiss_ms=None, scale=1.0, *,
                    n=n, n_bits=n_bits, mb=db.nbytes / 1e6, floor_ms=floor_ms):
                ms, cpu_ms = (x * scale / per * 1e3 for x in times)
                ratio = f"{ms / faiss_ms:7.2f}" if faiss_ms else " " * 7
                print(f"| {n:>10} | {n_bits:>4} | {mb:>5.0f} | {task:<14} | {method:<26} | {threads:>3} "
                      f"| {ms:>8.3f}{'*' if scale != 1 else ' '} | {ratio} | {ms / floor_ms:7.2f} | {cpu_ms:8.3f} |",
                      flush=True)
                return ms

            # kNN
            f1 = fT = None
            if faiss:
                index = faiss.IndexBinaryFlat(8 * db.shape[1])  # padded rows: the padding bits are zero
                index.add(db)
                faiss.omp_set_num_threads(1)
                s, (Df, _If) = best_time(lambda index=index, Q=Q: index.search(Q, args.k), args.repeat)
                f1 = row("knn", "faiss IndexBinaryFlat", 1, s)
                faiss.omp_set_num_threads(args.threads)
                s, _ = best_time(lambda index=index, Q=Q: index.search(Q, args.k), args.repeat)
                fT = row("knn", "faiss IndexBinaryFlat", args.threads, s)
                faiss.omp_set_num_threads(1)
            s, (D, I) = best_time(lambda dbw=dbw, Qw=Qw: kernels.knn(dbw, Qw, args.k, threads=1), args.repeat)
            h1 = row("knn", "hashdup kernel", 1, s, faiss_ms=f1)
            s, (D2, I2) = best_time(lambda dbw=dbw, Qw=Qw: kernels.knn(dbw, Qw, args.k, threads=args.threads),
                                    args.repeat)
            hT = row("knn", "hashdup kernel", args.threads, s, faiss_ms=fT)
            if not (np.array_equal(D, D2) and np.array_equal(I, I2)):
                sys.exit("hashdup kNN differs between 1 and several threads")
            if faiss and not np.array_equal(D, Df):
                sys.exit("hashdup and FAISS kNN distances differ")
            m = min(n, args.numpy_rows)
            s, _ = best_time(lambda db=db, m=m, Q=Q: scan.knn_scan(db[:m], Q, args.k), 1)
            row("knn", f"numpy scan ({m:.0e} rows)".replace("+0", ""), 1, s, faiss_ms=f1, scale=n / m)

            # one query alone: the latency of one full scan
            s, _ = best_time(lambda dbw=dbw, Qw=Qw: kernels.knn(dbw, Qw[:1], args.k, threads=1), args.repeat)
            l1 = row("knn, 1 query", "hashdup kernel", 1, s, per=1)
            s, _ = best_time(lambda dbw=dbw, Qw=Qw: kernels.knn(dbw, Qw[:1], args.k, threads=args.threads),
                             args.repeat)
            row("knn, 1 query", "hashdup kernel", args.threads, s, per=1)
            if faiss:
                s, _ = best_time(lambda index=index, Q=Q: index.search(Q[:1], args.k), args.repeat)
                row("knn, 1 query", "faiss IndexBinaryFlat", 1, s, per=1)

            # radius
            fr = None
            if faiss:
                s, (lf, Dfr, Ifr) = best_time(lambda index=index, Q=Q: index.range_search(Q, args.radius + 1),
                                              args.repeat)
                fr = row(f"radius {args.radius}", "faiss range_search", 1, s)
            s, (lims, Dr, Ir) = best_time(lambda dbw=dbw, Qw=Qw: kernels.radius(dbw, Qw, args.radius, threads=1),
                                          args.repeat)
            row(f"radius {args.radius}", "hashdup kernel", 1, s, faiss_ms=fr)
            s, _ = best_time(lambda dbw=dbw, Qw=Qw: kernels.radius(dbw, Qw, args.radius, threads=args.threads),
                             args.repeat)
            row(f"radius {args.radius}", "hashdup kernel", args.threads, s)
            if faiss:
                for q in range(nq):
                    a, b = lims[q], lims[q + 1]
                    ours = set(zip(Ir[a:b].tolist(), Dr[a:b].tolist(), strict=True))
                    theirs = set(zip(Ifr[lf[q] : lf[q + 1]].tolist(), Dfr[lf[q] : lf[q + 1]].tolist(), strict=True))
                    if ours != theirs:
                        sys.exit(f"hashdup and FAISS radius matches differ for query {q}")
                del index
            summary.append((n, n_bits, h1, f1, hT, l1, floor_ms))
            db = dbw = None  # free this size's codes before the next one is drawn

    print()
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("# summary (kNN, 1 thread unless noted; floor = one scan at the measured read bandwidth)")
    for n, n_bits, h1, f1, hT, l1, floor_ms in summary:
        vs_faiss = f"hashdup/faiss {h1 / f1:.2f}" if f1 else "no faiss"
        print(f"#   {n:>10} x {n_bits:>3} bits: {h1:.3f} ms/query, {vs_faiss}; {args.threads} threads "
              f"{hT:.3f} ms/query ({h1 / hT:.2f}x); floor {floor_ms:.2f} ms: batch per-query / floor "
              f"{h1 / floor_ms:.2f}, 1-query latency / floor {l1 / floor_ms:.2f}")
    for n, n_bits, h1, f1, _hT, l1, floor_ms in summary:
        if n == 10_000_000 and n_bits == 64:
            ok_faiss = f1 is not None and h1 <= 0.5 * f1
            ok_floor = h1 <= 2 * floor_ms
            print(f"# target 10M x 64: <= 0.5 x faiss: {'met' if ok_faiss else 'NOT met'}"
                  f"{f' ({h1 / f1:.2f})' if f1 else ''}; <= 2 x floor (batch per-query): "
                  f"{'met' if ok_floor else 'NOT met'} ({h1 / floor_ms:.2f}); single-query latency / floor "
                  f"{l1 / floor_ms:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
