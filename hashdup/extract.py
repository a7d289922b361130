"""Reading, hashing, decoding and describing files: the per-file work of ``hashdup index``.

:func:`extract` yields one :class:`Extracted` per input path, in input order, whatever runs the work: the calling
process (``workers=1``), a local process pool (``workers=N``) or a Dask cluster (``dask=ADDRESS``). Paths are cut
into chunks of ``chunk_size`` files; at most ``2 × workers`` chunks are in flight, so memory stays bounded whatever
the number of files, and the results are the same bytes however the work is spread: every descriptor gives an
image the same row alone as in any batch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup.descriptors import Descriptor
from hashdup.descriptors.local import LocalExtractor, LocalFeatures
from hashdup.errors import HashdupError, ImageError
from hashdup.io import images
from hashdup.io.facts import FileFacts, FileStat, stat_of

#: Descriptors are stored as float16; every descriptor leaves :func:`extract` rounded through it.
STORED_DTYPE = np.float16
#: The reason recorded for a file whose decoding kills the worker process (a crash in a native decoder).
CRASHED = "decoder crashed"
#: Thread pools each worker process is limited to, so that N workers use N cores.
_THREAD_LIMITS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class Extracted:
    """What one file gave.

    ``ignored`` files are not images (no image signature and no image extension) and are left out of the catalogue;
    files with an ``error`` (a one-line reason) are recorded as skipped, with their :class:`~hashdup.io.facts.FileStat`
    when it could be taken; the others have their :class:`~hashdup.io.facts.FileFacts`, a ``descriptor`` row (float32
    values rounded through float16) and, when local features were asked for, ``local``.
    """

    position: int
    facts: FileStat | None = None
    error: str | None = None
    ignored: bool = False
    descriptor: NDArray[np.float32] | None = None
    local: LocalFeatures | None = None


def describe_images(descriptor: Descriptor, pixels: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
    """Descriptors of decoded images, rounded through the stored dtype (float16)."""
    if not pixels:
        return np.zeros((0, descriptor.n_features), dtype=np.float32)
    return descriptor.describe(np.stack(pixels)).astype(STORED_DTYPE).astype(np.float32)


def extract_chunk(paths: Sequence[str], descriptor: Descriptor, start: int = 0,
                  local: LocalExtractor | None = None) -> list[Extracted]:
    """Extract a chunk of files in this process; ``start`` is the position of ``paths[0]`` in the whole run;
    ``local`` also computes each image's local features (from the same decoding)."""
    out: list[Extracted] = []  # one per path, in order
    described: list[int] = []  # positions in out of the decoded images, whose descriptors come below
    pixels: list[NDArray[np.uint8]] = []
    for n, path in enumerate(paths):
        stat = None
        try:
            content = images.read_file(path, only_images=True)
            if content is None:
                out.append(Extracted(start + n, ignored=True))
                continue
            stat = content.stat
            digest = hashlib.blake2b(content.data, digest_size=16).hexdigest()
            img = images.decode(content.data, descriptor.image_size, name=path,
                                frame=local.frame if local is not None else None)
            feats = None
            if local is not None:
                assert img.gray is not None  # decode() returns the grey frame when given frame=local.frame
                feats = local.describe(img.gray)
            facts = FileFacts(stat.size, stat.mtime_ns, digest, img.width, img.height, img.format)
            extracted = Extracted(start + n, facts, local=feats)
        except ImageError as e:
            out.append(Extracted(start + n, stat, error=e.reason))
            continue
        described.append(len(out))
        out.append(extracted)
        pixels.append(img.pixels)
    X = describe_images(descriptor, pixels)
    for n, row in zip(described, X, strict=True):
        out[n] = replace(out[n], descriptor=row)
    return out


@functools.lru_cache(maxsize=8)
def _extractors(spec_json: str) -> tuple[Descriptor, LocalExtractor | None]:
    """The descriptor and local extractor a :func:`_spec` names, built once per process (filter banks cached)."""
    from hashdup.descriptors import make_descriptor

    spec = json.loads(spec_json)
    local = spec.get("local")
    return make_descriptor(spec["name"], **spec["params"]), (LocalExtractor(**local) if local is not None else None)


def extract_chunk_by_name(paths: Sequence[str], name: str, spec_json: str, start: int = 0) -> list[Extracted]:
    """:func:`extract_chunk` with the descriptor (``name``) and its parameters and local-feature settings given as
    the JSON of :func:`_spec`: the task a worker runs."""
    desc, local = _extractors(spec_json)
    return extract_chunk(paths, desc, start, local)


#: The function worker processes run on each chunk (replaced in tests to simulate a crashing decoder).
_chunk_task: Callable[[Sequence[str], str, str, int], list[Extracted]] = extract_chunk_by_name


def default_workers() -> int:
    """The number of CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def extract(paths: Iterable[str], descriptor: Descriptor, *, workers: int | None = None, dask: Any = None,
            chunk_size: int = 32, local: LocalExtractor | None = None) -> Iterator[Extracted]:
    """Extract every file, yielding results in input order.

    Parameters
    ----------
    paths : iterable of str
        Absolute file paths; consumed lazily, a few chunks ahead of the results.
    descriptor : Descriptor
        Rebuilt in worker processes from its name and :meth:`~Descriptor.get_params`.
    workers : int, optional
        Worker processes; default: the CPU cores this process may use (its affinity mask). 1, or input that fits
        in one chunk, runs everything in this process.
    dask : str or distributed.Client, optional
        Address of a Dask scheduler (``"tcp://host:8786"``) or a connected client: chunks run as Dask tasks on its
        workers, which must be able to import hashdup and read the same paths. ``workers`` then only sets how many
        chunks are in flight (default: the cluster's worker threads).
    chunk_size : int
        Files handled together by one task (one descriptor batch).
    local : LocalExtractor, optional
        Also compute local features (:attr:`Extracted.local`), in the same task as the descriptors.

    Yields
    ------
    Extracted
        One per path, ``position`` 0, 1, 2, ...

    Notes
    -----
    A worker process that dies (a segmentation fault in a native decoder, the out-of-memory killer) does not stop
    the run: its chunk is run again file by file, each in a fresh process, and the file that kills its process is
    reported with the error :data:`CRASHED`. Worker processes start from a fork server that has imported hashdup
    once, with one thread per native thread pool (OpenMP, BLAS; ``scipy.fft`` runs single-threaded by default), so
    that N workers keep N cores busy without oversubscribing them.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    chunks = _chunks(paths, chunk_size)
    spec = _spec(descriptor, local)
    if dask is not None:
        yield from _run_dask(chunks, spec, dask, workers)
        return
    head = list(itertools.islice(chunks, 2))
    chunks = itertools.chain(head, chunks)
    if (workers or default_workers()) == 1 or len(head) < 2:  # a pool cannot speed up a single chunk
        for start, part in chunks:
            yield from extract_chunk(part, descriptor, start, local)
    else:
        yield from _run_pool(chunks, spec, workers or default_workers())


def _chunks(paths: Iterable[str], size: int) -> Iterator[tuple[int, list[str]]]:
    """``(position of the first path, paths)`` for consecutive chunks of ``size`` paths."""
    it = iter(paths)
    start = 0
    while part := list(itertools.islice(it, size)):
        yield start, part
        start += len(part)


def _spec(descriptor: Descriptor, local: LocalExtractor | None = None) -> tuple[str, str]:
    """What a worker needs to rebuild the extractors: the descriptor's name, and JSON of its name, parameters and
    local-feature settings (see :func:`extract_chunk_by_name`)."""
    return descriptor.name, json.dumps({"name": descriptor.name, "params": descriptor.get_params(),
                                        "local": local.get_params() if local is not None else None}, sort_keys=True)


# --- local process pool -------------------------------------------------------------------------------------------
def _limit_threads() -> None:
    """Worker initializer: one thread per worker process in every native thread pool it may start later."""
    for var in _THREAD_LIMITS:
        os.environ[var] = "1"


@contextlib.contextmanager
def _single_threaded_environment() -> Iterator[None]:
    """Set the thread-pool variables to 1 while worker processes start, so they inherit them before numpy and
    scipy load their native libraries; the parent's own environment is restored afterwards."""
    saved = {var: os.environ.get(var) for var in _THREAD_LIMITS}
    os.environ.update(dict.fromkeys(_THREAD_LIMITS, "1"))
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _new_pool(workers: int):
    """A process pool whose workers start from a fork server that has already imported hashdup (no fork of a
    threaded parent; cheap restarts after a crash); plain spawn where fork servers do not exist."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx: multiprocessing.context.BaseContext
    if "forkserver" in multiprocessing.get_all_start_methods():
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(["hashdup.extract"])
        ctx = forkserver
    else:  # pragma: no cover - Windows
        ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_limit_threads)


def _run_pool(chunks: Iterator[tuple[int, list[str]]], spec: tuple[str, str], workers: int) -> Iterator[Extracted]:
    """Chunks on a local process pool, at most ``2 × workers`` in flight, results in order."""
    from concurrent.futures.process import BrokenProcessPool

    name, params = spec
    in_flight: deque[tuple[int, list[str], Any]] = deque()
    pool = _new_pool(workers)

    def fill() -> None:
        for start, part in itertools.islice(chunks, 2 * workers - len(in_flight)):
            in_flight.append((start, part, pool.submit(_chunk_task, part, name, params, start)))

    try:
        with _single_threaded_environment():  # the workers start on the first submissions
            fill()
        while in_flight:
            start, part, future = in_flight.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:  # a worker died: this chunk or another one in flight killed it
                pool.shutdown(wait=True, cancel_futures=True)
                results = list(_isolate(part, start, name, params))
                pool = _new_pool(workers)
                with _single_threaded_environment():  # chunks that finished before the crash keep their results
                    in_flight = deque((s, p, f if _succeeded(f) else pool.submit(_chunk_task, p, name, params, s))
                                      for s, p, f in in_flight)
            yield from results
            with _single_threaded_environment():
                fill()
    finally:
        for _, _, future in in_flight:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _succeeded(future: Any) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _isolate(paths: list[str], start: int, name: str, params: str) -> Iterator[Extracted]:
    """Run a chunk whose worker died again, one file per task in a fresh one-process pool, so that the file that
    kills the process is known; it is reported as :data:`CRASHED` and the pool is replaced."""
    from concurrent.futures.process import BrokenProcessPool

    pool = None
    try:
        for n, path in enumerate(paths):
            if pool is None:
                pool = _new_pool(1)
            try:
                with _single_threaded_environment():
                    future = pool.submit(_chunk_task, [path], name, params, start + n)
                yield future.result()[0]
            except BrokenProcessPool:
                pool.shutdown(wait=True)
                pool = None
                yield _crashed(path, start + n)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _crashed(path: str, position: int) -> Extracted:
    try:
        return Extracted(position, stat_of(os.stat(path)), error=CRASHED)
    except OSError:
        return Extracted(position, error=CRASHED)


# --- Dask ---------------------------------------------------------------------------------------------------------
def _run_dask(chunks: Iterator[tuple[int, list[str]]], spec: tuple[str, str], dask: Any,
              workers: int | None) -> Iterator[Extracted]:
    """Chunks as tasks on a Dask cluster, a bounded number in flight, results in order."""
    try:
        import distributed
    except ImportError as e:
        raise HashdupError("--dask needs the dask extra: pip install 'hashdup[dask]'") from e
    own = not isinstance(dask, distributed.Client)
    try:
        client = distributed.Client(dask) if own else dask
    except (OSError, TimeoutError, ValueError) as e:
        raise HashdupError(f"cannot connect to the Dask scheduler at {dask}: {e}") from e
    try:
        if workers is None:
            workers = max(1, sum(client.nthreads().values()))
        name, params = spec
        in_flight: deque[tuple[int, list[str], Any]] = deque()

        def fill() -> None:
            for start, part in itertools.islice(chunks, 2 * workers - len(in_flight)):
                in_flight.append((start, part, client.submit(_chunk_task, part, name, params, start, pure=False)))

        fill()
        while in_flight:
            start, part, future = in_flight.popleft()
            try:
                results = future.result()
            except distributed.KilledWorker:  # the chunk killed workers repeatedly: find the file, one per task
                results = _isolate_dask(client, part, start, name, params)
            yield from results
            fill()
    finally:
        if own:
            client.close()


def _isolate_dask(client: Any, paths: list[str], start: int, name: str, params: str) -> list[Extracted]:
    """One task per file of a chunk that killed Dask workers; the file whose task kills them is :data:`CRASHED`."""
    import distributed

    futures = [client.submit(_chunk_task, [p], name, params, start + n, pure=False) for n, p in enumerate(paths)]
    out = []
    for n, (path, future) in enumerate(zip(paths, futures, strict=True)):
        try:
            out.append(future.result()[0])
        except distributed.KilledWorker:
            out.append(_crashed(path, start + n))
    return out
