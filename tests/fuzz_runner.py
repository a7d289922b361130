"""The fuzz oracle and an isolated runner for the corpus of :mod:`tests.fuzz_corpus`.

The oracle (:func:`check_case`): the file, written under an image name, goes through ``images.read_file`` and
``images.decode``; they must either return an RGB uint8 array of the requested shape with positive dimensions, or
raise ``ImageError`` with a non-empty one-line reason. Any other exception, a case running longer than its time
limit, a crash of the process, or a case that raises the process's peak memory by more than a budget is a failure.

:func:`run_corpus` runs the cases in worker subprocesses (``python -m tests.fuzz_runner``), so that a crash or a hang
inside a C decoder is recorded against its case and the run goes on in a fresh worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.fuzz_corpus import REPO, Case, make_case, seed_files

#: Output side the oracle asks ``decode`` for.
SIZE = 32
#: Most a case may raise a worker's peak resident memory, in bytes. Cases are at most a few hundred kB, mostly a few
#: kB, and hashdup's bomb rules let a file of ``n`` bytes claim no more than ``max(2^22, 1024 n)`` pixels.
MEMORY_BUDGET = 256 << 20


# --------------------------------------------------------------------------------------------------------- oracle


def check_case(case: Case, folder: Path, size: int = SIZE) -> tuple[str, str]:
    """Run one case through ``read_file`` + ``decode``: ``("ok" | "refused" | "FAIL", detail)``."""
    from hashdup.errors import ImageError
    from hashdup.io import images

    path = folder / case.name
    path.write_bytes(case.data)
    try:
        content = images.read_file(path, only_images=True)
        if content is None:
            return "FAIL", "read_file ignored a file with an image extension"
        if content.data != case.data:
            return "FAIL", "read_file returned other bytes than the file holds"
        out = images.decode(content.data, size, name=str(path))
    except ImageError as e:
        reason = e.reason
        if not isinstance(reason, str) or not reason.strip() or "\n" in reason or "\r" in reason:
            return "FAIL", f"ImageError without a one-line reason: {reason!r}"
        if "memory" in reason.lower():
            return "FAIL", f"ran out of memory: {reason}"
        return "refused", reason
    except Exception as e:
        return "FAIL", f"{type(e).__name__}: {e}"[:500]
    finally:
        path.unlink(missing_ok=True)
    px = out.pixels
    if not isinstance(px, np.ndarray) or px.dtype != np.uint8 or px.shape != (size, size, 3):
        return "FAIL", f"decoded to {type(px).__name__} {getattr(px, 'dtype', None)} {getattr(px, 'shape', None)}"
    if not (isinstance(out.width, int) and isinstance(out.height, int) and out.width > 0 and out.height > 0):
        return "FAIL", f"decoded with size {out.width!r}x{out.height!r}"
    return "ok", f"{out.format} {out.width}x{out.height}"


# ---------------------------------------------------------------------------------------------------- the runner


class _PeakMeter:
    """How far one case raises this process's resident memory above what it held when the case began, in bytes.

    On Linux the peak (VmHWM) is reset to the current RSS before each case by writing 5 to /proc/self/clear_refs,
    so each case is measured alone. Where that is not possible, the process's peak since the meter was made is used
    instead: only a case that sets a new peak is then measured.
    """

    def __init__(self) -> None:
        self.exact = self._reset()
        self.floor = self.peak()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _status(field: str) -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def peak(self) -> int:
        import resource

        peak = self._status("VmHWM") if self.exact else None
        return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def start(self) -> None:
        if self.exact and self._reset():
            self.floor = self._status("VmRSS") or 0

    def grew(self) -> int:
        return self.peak() - self.floor


#: Test hook of the runner's own tests: ``index:fault,...`` makes ``images.decode`` misbehave on those cases, with
#: fault one of ``crash`` (abort), ``hang`` (sleep), ``raise`` (a ValueError), ``two-lines`` (an ImageError whose
#: reason has two lines) or ``hog`` (touch ``MEMORY_BUDGET`` + 64 MiB).
INJECT = "HASHDUP_FUZZ_INJECT"
#: Where a worker's faulthandler writes (the stack of a hung or crashed case) and where its stderr goes (C
#: libraries such as libtiff write warnings there), in the worker's folder.
FAULT_LOG = "faults.log"
STDERR_LOG = "stderr.log"


@contextlib.contextmanager
def _injected(fault: str | None) -> Iterator[None]:
    from hashdup.errors import ImageError
    from hashdup.io import images

    if fault is None:
        yield
        return

    def faulty(data: bytes, size: int, *, name: str = "<bytes>", **kw):
        if fault == "crash":
            os.abort()
        if fault == "hang":
            time.sleep(3600)
        if fault == "raise":
            raise ValueError("injected")
        if fault == "two-lines":
            raise ImageError(name, "first line\nsecond line")
        if fault == "hog":
            hog = np.ones(MEMORY_BUDGET + (64 << 20), dtype=np.uint8)
            del hog
        return real(data, size, name=name, **kw)

    real = images.decode
    images.decode = faulty
    try:
        yield
    finally:
        images.decode = real


def worker(seed: int, indices: Iterable[int], folder: Path, case_timeout: float, memory_budget: int) -> None:
    """Run cases, writing ``start <i>`` before and a JSON result after each to stdout (for :func:`run_corpus`).

    A case that outlives ``case_timeout`` seconds makes faulthandler dump every thread's stack to
    ``folder/faults.log`` and end the process (as does a fatal signal); a case that raises the resident memory more
    than ``memory_budget`` bytes above what the process held when it began (:class:`_PeakMeter`) is a failure.
    """
    import faulthandler

    from hashdup.io import images  # noqa: F401 - imported before the first case

    log = open(folder / FAULT_LOG, "w")  # noqa: SIM115 - stays open for faulthandler until the process dies
    faulthandler.enable(file=log)

    seed_files()
    check_case(Case(seed, -1, "warm-up.png", "warm-up", seed_files()["png"][1]), folder)
    meter = _PeakMeter()
    faults = dict(item.split(":") for item in os.environ.get(INJECT, "").split(",") if item)
    for i in indices:
        sys.stdout.write(f"start {i}\n")
        sys.stdout.flush()
        case = make_case(seed, i)
        faulthandler.dump_traceback_later(case_timeout, exit=True, file=log)
        meter.start()
        t0 = time.perf_counter()
        with _injected(faults.get(str(i))):
            status, detail = check_case(case, folder)
        seconds = time.perf_counter() - t0
        faulthandler.cancel_dump_traceback_later()
        grew = meter.grew()
        if status != "FAIL" and grew > memory_budget:
            status, detail = "FAIL", (f"peak memory grew by {grew >> 20} MiB (budget {memory_budget >> 20} MiB); "
                                      f"{detail}")
            meter.floor = meter.peak()  # without the exact meter: report each offender once
        sys.stdout.write(json.dumps({"index": i, "kind": case.kind, "status": status, "detail": detail,
                                     "seconds": round(seconds, 4)}) + "\n")
        sys.stdout.flush()


@dataclass
class Report:
    """What :func:`run_corpus` found: counts by status, the failures, and the slowest case."""

    seed: int
    cases: int = 0
    ok: int = 0
    refused: int = 0
    failures: list[dict] = None  # type: ignore[assignment]
    slowest: tuple[float, int] = (0.0, -1)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.failures = [] if self.failures is None else self.failures

    def summary(self) -> str:
        return (f"{self.cases} cases (seed {self.seed}) in {self.seconds:.1f} s: {self.ok} decoded, {self.refused} "
                f"refused with a reason, {len(self.failures)} failures; slowest case {self.slowest[1]} "
                f"took {self.slowest[0]:.2f} s")


def _record(report: Report, result: dict, on_result: Callable[[dict], None] | None) -> None:
    report.cases += 1
    if result["status"] == "ok":
        report.ok += 1
    elif result["status"] == "refused":
        report.refused += 1
    else:
        report.failures.append(result)
    report.slowest = max(report.slowest, (result["seconds"], result["index"]))
    if on_result:
        on_result(result)


def _run_worker(seed: int, indices: range, folder: Path, case_timeout: float, memory_budget: int,
                report: Report, on_result: Callable[[dict], None] | None) -> None:
    """Run ``indices`` in a worker process, starting a new one after a crash or a hang, recording into ``report``."""
    while len(indices):
        cmd = [sys.executable, "-m", "tests.fuzz_runner", "--seed", str(seed),
               "--folder", str(folder), "--case-timeout", str(case_timeout), "--memory-budget", str(memory_budget),
               "--start", str(indices.start), "--stop", str(indices.stop), "--step", str(indices.step)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        (folder / FAULT_LOG).unlink(missing_ok=True)
        with open(folder / STDERR_LOG, "wb") as err:  # a file, not a pipe: a full pipe would block the worker
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, env=env)
        current, buf, hung, n_done = None, b"", False, 0
        fd = proc.stdout.fileno()
        while True:
            ready, _, _ = select.select([fd], [], [], case_timeout + 30)
            if not ready:  # neither the case nor faulthandler's watchdog came back: kill it
                hung = True
                proc.kill()
                break
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.startswith(b"start "):
                    current = int(line[6:])
                else:
                    _record(report, json.loads(line), on_result)
                    current = None
                    n_done += 1
        rc = proc.wait()
        proc.stdout.close()
        stderr = (folder / STDERR_LOG).read_bytes().decode(errors="replace")
        faults = (folder / FAULT_LOG).read_text(errors="replace") if (folder / FAULT_LOG).exists() else ""
        if current is None:
            if rc != 0 and n_done == 0:
                raise RuntimeError(f"fuzz worker failed before its first case (exit {rc}):\n{stderr[-4000:]}")
            indices = indices[n_done:]
            if rc != 0 and len(indices):
                raise RuntimeError(f"fuzz worker ended between cases (exit {rc}):\n{stderr[-4000:]}")
            continue
        # it died, or was killed, inside a case: record it and go on with the next case in a new worker
        what = "hang (killed)" if hung else "hang" if faults.startswith("Timeout") else f"crash (exit status {rc})"
        trace = faults.strip() or stderr.strip()[-1000:]
        _record(report, {"index": current, "kind": make_case(seed, current).kind, "status": "FAIL",
                         "detail": f"{what}: {trace[-3000:]}", "seconds": case_timeout if hung or
                         what == "hang" else 0.0}, on_result)
        indices = indices[indices.index(current) + 1 :]


def run_corpus(seed: int, indices: range, folder: Path, *, workers: int = 1, case_timeout: float = 10.0,
               memory_budget: int = MEMORY_BUDGET, on_result: Callable[[dict], None] | None = None) -> Report:
    """Run cases ``indices`` of corpus ``seed`` in ``workers`` isolated worker processes (each takes a stripe),
    writing the case files under ``folder``."""
    import threading

    t0 = time.perf_counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def locked(result: dict) -> None:
        if on_result:
            with lock:
                on_result(result)

    def run(w: int) -> None:
        try:
            _run_worker(seed, indices[w::workers], folder / str(w), case_timeout, memory_budget, parts[w], locked)
        except BaseException as e:
            errors.append(e)

    parts = [Report(seed) for _ in range(workers)]
    for w in range(workers):
        (folder / str(w)).mkdir(parents=True, exist_ok=True)
    threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    report = Report(seed)
    for part in parts:
        report.cases += part.cases
        report.ok += part.ok
        report.refused += part.refused
        report.failures.extend(part.failures)
        report.slowest = max(report.slowest, part.slowest)
    report.failures.sort(key=lambda r: r["index"])
    report.seconds = time.perf_counter() - t0
    return report


def _main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="fuzz worker, started by run_corpus: runs range(start, stop, step)")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--case-timeout", type=float, required=True)
    ap.add_argument("--memory-budget", type=int, required=True)
    ap.add_argument("--start", type=int, required=True)
    ap.add_argument("--stop", type=int, required=True)
    ap.add_argument("--step", type=int, default=1)
    a = ap.parse_args(argv)
    worker(a.seed, range(a.start, a.stop, a.step), a.folder, a.case_timeout, a.memory_budget)


if __name__ == "__main__":
    _main(sys.argv[1:])
