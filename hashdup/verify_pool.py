"""Verifying candidate pairs on a pool of worker processes, with the verdicts one process would give.

:func:`verify_pairs` takes the pairs lazily, a window at a time, in order. For each window it prepares the images
that are not in the verifier's cache (ORB keypoints and the band-passed pixels, the costly half of a verification:
about 0.1 s per image) in the worker processes, each image once, then compares the pairs there (feature matching,
RANSAC, the aligned pixels: about 0.05 s per pair), and yields the verdicts in input order. A verdict depends only
on the two prepared images and the verifier's parameters (RANSAC is seeded per call), so it is the same whichever
process computes it; the caller may leave pairs out as it goes (pairs already joined through earlier links), and
only sees that decision a window late: a few pairs more are verified than one process would, the verdicts are the
same.

A worker that dies (a segmentation fault in a native decoder, the out-of-memory killer) does not stop the run: the
window is run again one task per fresh process, and the image or pair whose task kills its process is reported as
unreadable (reason :data:`CRASHED`).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from hashdup.verify import Features, Verdict, Verifier

T = TypeVar("T")
#: Reason of the verdict of a pair whose verification killed its worker process.
CRASHED = "crashed while verifying"
#: Pairs taken at a time, per worker process.
WINDOW_PER_WORKER = 8


@functools.lru_cache(maxsize=4)
def _verifier(params_json: str) -> Verifier:
    """The worker process's verifier (its cache unused: prepared images come with the tasks)."""
    return Verifier(**json.loads(params_json))


def _features_task(params_json: str, key: tuple[str, bool]) -> Features | None:
    return _verifier(params_json).compute_features(*key)


def _compare_task(params_json: str, a: Features | None, b: dict[bool, Features | None], mirrored: bool | None
                  ) -> Verdict:
    return _verifier(params_json).compare(a, b.__getitem__, mirrored)


#: The functions worker processes run (replaced in tests to simulate a crash).
_tasks: dict[str, Callable[..., Any]] = {"features": _features_task, "compare": _compare_task}


def verify_pairs(verifier: Verifier, pairs: Iterable[tuple[T, str, str, bool | None]], pool: VerifyPool | None = None,
                 *, window: int | None = None) -> Iterator[tuple[T, Verdict]]:
    """Verdicts of :meth:`Verifier.verify` on pairs of image files, in order.

    Parameters
    ----------
    verifier : Verifier
        Its parameters are used by every process; its cache receives the prepared images.
    pairs : iterable of (tag, path_a, path_b, mirrored)
        Consumed lazily, ``window`` pairs ahead of the verdicts (one at a time without a pool); ``tag`` is passed
        through.
    pool : VerifyPool, optional
        Worker processes; without one (or with one worker) the pairs are verified in this process.
    window : int, optional
        Pairs taken at a time; default :data:`WINDOW_PER_WORKER` per worker.

    Yields
    ------
    (tag, Verdict)
    """
    if pool is None or pool.workers == 1:
        for tag, a, b, mirrored in pairs:
            yield tag, verifier.verify(a, b, mirrored)
        return
    window = window or WINDOW_PER_WORKER * pool.workers
    params = json.dumps(verifier.get_params(), sort_keys=True)
    it = iter(pairs)
    while batch := list(itertools.islice(it, window)):
        needed = list(dict.fromkeys(key for _, a, b, m in batch
                                    for key in [(a, False)] + [(b, w) for w in verifier.ways(m)]))
        have = {key: verifier.features(*key) for key in needed if verifier.cached(*key)}
        missing = [key for key in needed if key not in have]
        computed = pool.map("features", [(params, key) for key in missing], None)
        have.update(zip(missing, computed, strict=True))
        for key in missing:
            verifier.remember(key, have[key])
        tasks = [(params, have[(a, False)], {w: have[(b, w)] for w in verifier.ways(m)}, m) for _, a, b, m in batch]
        verdicts = pool.map("compare", tasks, Verdict(False, reason=CRASHED))
        yield from ((tag, v) for (tag, *_), v in zip(batch, verdicts, strict=True))


class VerifyPool:
    """Worker processes for :func:`verify_pairs`, started on first use (from the fork server of
    :func:`hashdup.extract._new_pool`, one thread each) and kept until :meth:`close`; ``map`` survives a worker
    that dies.

    Parameters
    ----------
    workers : int
        Processes; 1 means none (verification stays in the calling process).
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.workers = int(workers)
        self._pool: Any = None

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self) -> Any:
        from hashdup.extract import _new_pool

        if self._pool is None:
            self._pool = _new_pool(self.workers)
        return self._pool

    def map(self, task: str, args: Sequence[tuple], crashed: Any) -> list[Any]:
        """``_tasks[task](*a)`` for every ``a`` in ``args``, in order; ``crashed`` for a task that kills its process
        (found by running the tasks again, one per fresh process, after a worker died)."""
        from concurrent.futures.process import BrokenProcessPool

        from hashdup.extract import _single_threaded_environment

        if not args:
            return []
        fn = _tasks[task]
        chunk = max(1, len(args) // (2 * self.workers))
        try:
            with _single_threaded_environment():  # workers start on the first submission
                futures = [self._get().submit(_run_chunk, fn, list(args[i : i + chunk]))
                           for i in range(0, len(args), chunk)]
            return [r for f in futures for r in f.result()]
        except BrokenProcessPool:
            self.close()
            return [self._isolated(fn, a, crashed) for a in args]

    def _isolated(self, fn: Callable[..., Any], args: tuple, crashed: Any) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        from hashdup.extract import _new_pool, _single_threaded_environment

        pool = _new_pool(1)
        try:
            with _single_threaded_environment():
                return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            return crashed
        finally:
            pool.shutdown(wait=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _run_chunk(fn: Callable[..., Any], args: list[tuple]) -> list[Any]:
    return [fn(*a) for a in args]
