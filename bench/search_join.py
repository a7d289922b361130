"""How fast is hashdup's multi-index-hashing self-join (hashdup.index.mih) against FAISS, and how much memory does it
use?

The data: ``--n`` uniform random codes of ``--bits`` bits, then ``--dup-rate`` of the rows (1 % by default) replaced
by a copy of another random row with 0 to ``--max-flips`` (3) random bits flipped, so that the self-join at radius
``--radius`` (3, inclusive) has about ``dup-rate × n`` true pairs among ``n²/2`` candidates. One run measures:

* hashdup ``mih.self_join(codes, bits, radius)`` at 1 thread and at ``--threads`` threads (its number of substrings
  ``m`` is the one the function picks, printed);
* FAISS ``IndexBinaryMultiHash`` ``range_search`` of the set against itself, at 1 thread and ``--threads`` threads
  (``faiss.omp_set_num_threads``), radius ``radius + 1`` (FAISS binary range search is strict ``d < r``). Two exact
  configurations: ``nhash = radius + 1`` tables of ``b = bits // (radius + 1)`` bits with ``nflip = 0`` (the
  pigeonhole split hashdup uses: a pair within r bits agrees exactly on one of r + 1 disjoint segments) and
  ``nhash = 2``, ``b = bits // 2``, ``nflip = ⌊radius / 2⌋`` (each half probed within ⌊r/2⌋ flips). Adding the codes to
  the index is timed separately and not counted; the search time is;
* FAISS ``IndexBinaryFlat`` ``range_search`` (the quadratic pass, ``--threads`` threads) on the first
  ``--flat-subset`` codes only, against themselves; its time is scaled by (n / subset)², since the pass is quadratic
  in n (marked ``*``);
* then, unless ``--big 0``, hashdup's self-join of ``--big`` (10 M) codes made the same way, in a fresh process (so
  that memory freed by the runs above and kept by the allocator cannot hide the peak): time, and peak memory.
  Peak memory is the process's peak resident set during the call (``VmHWM`` of /proc/self/status, reset just before
  the call through /proc/self/clear_refs; where that is unavailable, ``ru_maxrss``, the peak of the whole process)
  minus the resident set just before it (which holds the codes), compared with the bytes of the codes and of the
  pairs (20 bytes per pair: i, j int64 and d int32).

hashdup's 1 M timings are the best of ``--repeat`` runs; FAISS's (seconds each) and the large join are one run
each. Times are wall clock; the process CPU time of the same call is shown next to it. Results are checked: every
FAISS pair set equals hashdup's (as sets of (i, j) with i < j), on the subset too. The load average is printed: on a
shared machine other processes slow every column, the multi-threaded ones most.

Targets (issue 4): 1 M × 64 bits at radius 3 ≤ 0.3 s and ≥ 10 × faster than FAISS's best; 10 M codes in under 10 s
with memory bounded by the codes plus O(pairs).

Run from the repository root (FAISS from the ``bench`` extra; about 30 s at the defaults on 2 quiet cores)::

    .venv/bin/python bench/search_join.py [--n 1000000] [--big 10000000] [--bits 64] [--radius 3]
        [--dup-rate 0.01] [--max-flips 3] [--threads 2] [--repeat 3] [--flat-subset 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

from hashdup import bits
from hashdup.index import mih

PAIR_BYTES = 8 + 8 + 4


def planted_codes(n: int, n_bits: int, dup_rate: float, max_flips: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random packed codes (n, row_bytes) uint8 with ``dup_rate × n`` rows replaced by near copies of
    random rows (0 to ``max_flips`` distinct random bits flipped, uniformly many); padding bits stay zero."""
    n_words = bits.row_bytes(n_bits) // 8
    words = rng.integers(0, 2**64 - 1, size=(n, n_words), dtype=np.uint64, endpoint=True)
    if n_bits % 64:
        words[:, -1] &= np.uint64((1 << (n_bits % 64)) - 1)
    n_copies = round(dup_rate * n)
    dst = rng.choice(n, n_copies, replace=False)
    src = rng.integers(0, n, n_copies)
    copies = words[src]
    n_flips = rng.integers(0, max_flips + 1, n_copies)
    positions = np.argsort(rng.random((n_copies, n_bits)), axis=1)[:, :max_flips]     # distinct per copy
    for f in range(max_flips):
        flip = np.flatnonzero(n_flips > f)
        pos = positions[flip, f]
        copies[flip, pos // 64] ^= np.uint64(1) << (pos % 64).astype(np.uint64)
    words[dst] = copies
    return words.view(np.uint8)


def pair_set(i: np.ndarray, j: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(i.tolist(), j.tolist(), strict=True))


def faiss_pairs(lims: np.ndarray, I: np.ndarray) -> set[tuple[int, int]]:
    """(i, j), i < j, of a FAISS range search of a set against itself."""
    q = np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64))
    keep = q < I
    return pair_set(q[keep], I[keep])


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def best_of(fn, repeat: int):
    wall = cpu = float("inf")
    out = None
    for _ in range(repeat):
        w, c, out = timed(fn)
        wall, cpu = min(wall, w), min(cpu, c)
    return wall, cpu, out


def status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current resident set (Linux ≥ 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_kib("VmHWM") is not None
    except OSError:
        return False


def row(label: str, wall: float, cpu: float | None, note: str = "") -> None:
    cpu_s = f"{cpu:9.3f}" if cpu is not None else " " * 9
    print(f"  {label:<58} {wall:9.3f} {cpu_s}  {note}")


def big_join(args: argparse.Namespace) -> None:
    """Time and peak memory of the self-join of ``args.big`` codes, in this (fresh) process."""
    n_bits, radius, threads = args.bits, args.radius, args.threads
    big = planted_codes(args.big, n_bits, args.dup_rate, args.max_flips, np.random.default_rng(args.seed + 1))
    mih.self_join(big[:5000], n_bits, radius, n_threads=threads)          # loads the cached kernels
    rss0 = status_kib("VmRSS")
    exact_peak = reset_peak()
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu, (i, _j, _d) = timed(lambda: mih.self_join(big, n_bits, radius, n_threads=threads))
    if exact_peak:
        peak_kib, how = status_kib("VmHWM"), "VmHWM"
    else:
        peak_kib, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss (whole-process peak)"
        if peak_kib <= maxrss0:
            print("  (the peak was reached before the call; the figure below is an upper bound)")
    extra = (peak_kib - (rss0 or 0)) * 1024
    pairs_bytes = len(i) * PAIR_BYTES
    print(f"\n# {args.big:,} codes × {n_bits} bits, same recipe, {threads} threads, "
          f"m = {mih.join_m(args.big, n_bits, radius)}; a fresh process")
    row("hashdup mih.self_join", wall, cpu, f"{len(i):,} pairs")
    print(f"  resident before the call {rss0 / 1024:,.0f} MiB (the codes, numpy, numba); peak during it ({how}) "
          f"{peak_kib / 1024:,.0f} MiB")
    print(f"  extra memory of the call {extra / 2**20:,.1f} MiB = {extra / big.nbytes:.2f} × the codes "
          f"({big.nbytes / 2**20:,.1f} MiB); pairs {pairs_bytes / 2**20:,.1f} MiB; "
          f"codes + pairs {(big.nbytes + pairs_bytes) / 2**20:,.1f} MiB")
    print(f"  target (< 10 s): {'met' if wall < 10 else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="codes in the compared self-join")
    ap.add_argument("--big", type=int, default=10_000_000, help="codes in the large self-join (0: skip)")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--radius", type=int, default=3, help="inclusive radius for hashdup (FAISS gets radius + 1)")
    ap.add_argument("--dup-rate", type=float, default=0.01, help="fraction of rows that are near copies")
    ap.add_argument("--max-flips", type=int, default=3, help="a copy has 0 .. max-flips random bits flipped")
    ap.add_argument("--threads", type=int, default=2, help="threads for the multi-threaded columns")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--flat-subset", type=int, default=100_000, help="codes in the FAISS flat range search (0: skip)")
    ap.add_argument("--no-faiss", action="store_true", help="hashdup only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--big-only", action="store_true", help="only the large self-join (run in a child process)")
    args = ap.parse_args(argv)

    if args.big_only:
        big_join(args)
        return 0
    import numba

    faiss = None
    if not args.no_faiss:
        import faiss
    n, n_bits, radius, threads = args.n, args.bits, args.radius, args.threads
    rng = np.random.default_rng(args.seed)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; numpy {np.__version__}, numba {numba.__version__}"
          + (f", faiss {faiss.__version__}" if faiss else ""))
    print(f"# {n:,} codes × {n_bits} bits, {args.dup_rate:.1%} near copies (0–{args.max_flips} bits flipped), "
          f"self-join radius ≤ {radius}, seed {args.seed}")

    codes = planted_codes(n, n_bits, args.dup_rate, args.max_flips, rng)
    w, _, _ = timed(lambda: mih.self_join(codes[:5000], n_bits, radius, n_threads=threads))
    m = mih.join_m(n, n_bits, radius)
    choice = (f"m = {m} substrings of {mih.substring_bounds(n_bits, m)[1].tolist()} bits probed at "
              f"{mih.substring_radii(radius, m).tolist()} bits" if m else "the quadratic scan")
    print(f"# numba kernels loaded (compiled on the first run ever, then cached) in {w:.2f} s; hashdup picks {choice}")
    print(f"\n  {'method':<58} {'wall s':>9} {'cpu s':>9}  pairs / check")

    times = {}
    ref = None
    for t in sorted({1, threads}):
        wall, cpu, (i, j, _d) = best_of(lambda t=t: mih.self_join(codes, n_bits, radius, n_threads=t), args.repeat)
        ref = pair_set(i, j) if ref is None else ref
        same = pair_set(i, j) == ref
        row(f"hashdup mih.self_join, {t} thread{'s' * (t > 1)}", wall, cpu,
            f"{len(i):,} pairs{'' if same else ' DIFFER'}")
        times[f"hashdup {t}"] = wall
    hashdup_best = min(v for k, v in times.items() if k.startswith("hashdup"))

    faiss_times = {}
    if faiss is not None:
        x = np.ascontiguousarray(codes[:, : (n_bits + 7) // 8])
        d_faiss = 8 * x.shape[1]                  # FAISS wants whole bytes; the padding bits are zero
        configs = [(radius + 1, n_bits // (radius + 1), 0), (2, n_bits // 2, radius // 2)]
        for nhash, b, nflip in configs:
            if b < 1:
                continue
            index = faiss.IndexBinaryMultiHash(d_faiss, nhash, b)
            index.nflip = nflip
            faiss.omp_set_num_threads(threads)
            add_s, _, _ = timed(lambda index=index: index.add(x))
            for t in sorted({1, threads}):
                faiss.omp_set_num_threads(t)
                wall, cpu, (lims, _, I) = timed(lambda index=index: index.range_search(x, radius + 1))
                found = faiss_pairs(lims, I)
                row(f"faiss IndexBinaryMultiHash nhash={nhash} b={b} nflip={nflip}, {t} thread{'s' * (t > 1)}",
                    wall, cpu, f"{len(found):,} pairs, {'equal' if found == ref else 'DIFFER'}; add {add_s:.2f} s")
                faiss_times[f"multihash {nhash}/{b}/{nflip} {t}"] = wall
            del index
        if args.flat_subset:
            ns = min(args.flat_subset, n)
            sub = x[:ns]
            index = faiss.IndexBinaryFlat(d_faiss)
            index.add(sub)
            faiss.omp_set_num_threads(threads)
            wall, cpu, (lims, _, I) = timed(lambda: index.range_search(sub, radius + 1))
            i, j, _ = mih.self_join(codes[:ns], n_bits, radius)
            same = faiss_pairs(lims, I) == pair_set(i, j)
            scale = (n / ns) ** 2
            row(f"faiss IndexBinaryFlat range_search, {threads} threads *", wall * scale, cpu * scale,
                f"* {ns:,} codes: {wall:.2f} s × (n / {ns:,})² = {scale:g}; {len(i):,} pairs, "
                f"{'equal' if same else 'DIFFER'}")
            faiss_times[f"flat {threads} (scaled)"] = wall * scale
            del index
        faiss.omp_set_num_threads(threads)

    if faiss_times:
        best_name = min(faiss_times, key=faiss_times.get)
        print(f"\n  FAISS's best: {best_name}, {faiss_times[best_name]:.3f} s; hashdup best {hashdup_best:.3f} s: "
              f"{faiss_times[best_name] / hashdup_best:.1f} × faster")
        for name, t in faiss_times.items():
            print(f"    {name:<40} / hashdup best = {t / hashdup_best:8.1f}")
    target_ok = hashdup_best <= 0.3 and (not faiss_times or min(faiss_times.values()) >= 10 * hashdup_best)
    print(f"  target (≤ 0.3 s and ≥ 10 × FAISS's best, at 1 M × 64 bits radius 3): "
          f"{'met' if target_ok else 'NOT met'}")

    if args.big:
        # in a fresh process, so that memory freed by the runs above and kept by the allocator does not hide the peak
        sys.stdout.flush()
        cmd = [sys.executable, __file__, "--big-only", "--big", str(args.big), "--bits", str(n_bits), "--radius",
               str(radius), "--dup-rate", str(args.dup_rate), "--max-flips", str(args.max_flips), "--threads",
               str(threads), "--seed", str(args.seed)]
        subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
