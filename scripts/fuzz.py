"""Run a long seeded fuzz corpus of hostile image files through hashdup's readers.

The corpus, its oracle and the isolated runner are those of the test suite (``tests/fuzz_corpus.py`` and
``tests/fuzz_runner.py``; the suite runs the first 2 000 cases of seed 0): each case, a mutated JPEG, PNG, GIF,
TIFF, WebP or BMP file or a non-image, goes through ``images.read_file`` and ``images.decode`` in a worker process,
and must decode to an RGB image or be refused with a one-line reason, within ``--case-timeout`` seconds and
without raising the worker's peak memory by more than ``--memory-budget`` MiB. A crash or a hang is recorded against
its case and a fresh worker goes on.

Usage::

    python scripts/fuzz.py                                   # 20 000 cases of seed 0, one worker per CPU
    python scripts/fuzz.py --cases 100000 --seed 7 --workers 2
    python scripts/fuzz.py --seed 0 --case 1626              # rerun one case here, with a traceback on failure

stdout: a JSON summary. stderr: progress and the failures. Each failing case is saved under ``--out`` (default
``bench/out/fuzz/``) as the file itself plus ``<name>.json`` with its seed, index, kind and failure, so that
``images.decode(open(file, "rb").read(), 32)`` reproduces it. Exit status 1 when any case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import fuzz_corpus as fc  # noqa: E402 - after the sys.path line above, which makes tests importable
from tests import fuzz_runner as fr  # noqa: E402 - likewise


def _save(out: Path, seed: int, result: dict) -> Path:
    case = fc.make_case(seed, result["index"])
    out.mkdir(parents=True, exist_ok=True)
    (out / case.name).write_bytes(case.data)
    (out / f"{case.name}.json").write_text(json.dumps({"seed": seed, **result}, indent=2) + "\n")
    return out / case.name


def _one(seed: int, index: int, out: Path) -> int:
    """Run a single case in this process; on failure, run it again without the oracle's catch-all."""
    from hashdup.io import images

    case = fc.make_case(seed, index)
    with tempfile.TemporaryDirectory() as tmp:
        status, detail = fr.check_case(case, Path(tmp))
    result = {"index": index, "kind": case.kind, "status": status, "detail": detail}
    print(json.dumps({"seed": seed, **result}))
    if status == "FAIL":
        print(f"saved {_save(out, seed, result)}", file=sys.stderr)
        images.decode(case.data, fr.SIZE, name=case.name)  # the traceback, when it is an exception
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20_000, help="number of cases (default 20000)")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default 0; the test suite runs seed 0)")
    ap.add_argument("--start", type=int, default=0, help="first case index (default 0)")
    ap.add_argument("--case", type=int, default=None,
                    help="run only this case, in this process (no time or memory limit)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPUs)")
    ap.add_argument("--case-timeout", type=float, default=10.0, help="seconds a case may take (default 10)")
    ap.add_argument("--memory-budget", type=int, default=fr.MEMORY_BUDGET >> 20,
                    help=f"MiB a case may add to a worker's peak memory (default {fr.MEMORY_BUDGET >> 20})")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "fuzz",
                    help="folder for failing cases (default bench/out/fuzz)")
    a = ap.parse_args(argv)
    if a.cases < 1 or a.workers < 1 or a.case_timeout <= 0:
        ap.error("--cases, --workers and --case-timeout must be positive")
    if a.case is not None:
        return _one(a.seed, a.case, a.out)

    t0 = time.perf_counter()
    seen = 0

    def on_result(result: dict) -> None:
        nonlocal seen
        seen += 1
        if result["status"] == "FAIL":
            saved = _save(a.out, a.seed, result)
            print(f"FAIL case {a.seed}:{result['index']} ({result['kind']}): {result['detail'][:300]}\n"
                  f"     saved as {saved}", file=sys.stderr)
        if seen % 1000 == 0:
            print(f"{seen} of {a.cases} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="hashdup-fuzz-") as tmp:
        report = fr.run_corpus(a.seed, range(a.start, a.start + a.cases), Path(tmp), workers=a.workers,
                               case_timeout=a.case_timeout, memory_budget=a.memory_budget << 20,
                               on_result=on_result)
    print(report.summary(), file=sys.stderr)
    print(json.dumps({"seed": a.seed, "start": a.start, "cases": report.cases, "decoded": report.ok,
                      "refused": report.refused, "failures": [r["index"] for r in report.failures],
                      "slowest_case": {"index": report.slowest[1], "seconds": report.slowest[0]},
                      "seconds": round(report.seconds, 1), "workers": a.workers}))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
