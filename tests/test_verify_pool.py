"""Verification on worker processes: the verdicts of one process, in order, and a worker that dies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hashdup import verify_pool as vp
from hashdup.verify import Verifier

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def pairs_of(folder: Path) -> list[tuple[int, str, str, bool | None]]:
    """Copies against their originals (duplicates), photos against each other (not), both mirror settings."""
    photos = SAMPLE / "photos"
    copies = {"astronaut_half.jpg": "astronaut.jpg", "chelsea_q30.jpg": "chelsea.jpg", "coffee_crop.jpg": "coffee.jpg",
              "china_exif_rotated.jpg": "china.jpg"}
    out: list[tuple[str, str, bool | None]] = [(str(photos / o), str(SAMPLE / "copies" / c), False)
                                              for c, o in copies.items()]
    names = sorted(p.name for p in photos.iterdir())[:6]
    out += [(str(photos / a), str(photos / b), None) for a, b in zip(names, names[1:], strict=False)]
    out += [(str(photos / "chelsea.jpg"), str(SAMPLE / "copies" / "chelsea_q30.jpg"), None)]
    return [(n, a, b, m) for n, (a, b, m) in enumerate(out)]


def test_pool_verdicts_equal_one_process_in_order_and_fill_the_cache():
    pairs = pairs_of(SAMPLE)
    serial = list(vp.verify_pairs(Verifier(), pairs))
    verifier = Verifier()
    with vp.VerifyPool(2) as pool:
        parallel = list(vp.verify_pairs(verifier, iter(pairs), pool, window=4))  # several windows
    assert [t for t, _ in parallel] == [t for t, _ in serial] == list(range(len(pairs)))
    assert [v for _, v in parallel] == [v for _, v in serial]
    assert sum(v.same for _, v in serial) == 5  # the four copies, one of them twice; no two photos alike
    # the prepared images came back from the workers: every image of the pairs is cached, plain and mirrored
    assert all(verifier.cached(a) and verifier.cached(b, False) for _, a, b, _ in pairs)
    assert all(verifier.cached(b, True) for _, _, b, m in pairs if m is None)


def test_pairs_are_taken_a_window_ahead():
    pairs = pairs_of(SAMPLE)[:6]
    taken = []

    def lazily():
        for p in pairs:
            taken.append(p[0])
            yield p

    with vp.VerifyPool(2) as pool:
        for n, (tag, _) in enumerate(vp.verify_pairs(Verifier(), lazily(), pool, window=3)):
            assert tag == n and len(taken) <= (n // 3 + 1) * 3  # never more than the current window


def crashing_features(params_json, key):
    """Like a native decoder that segfaults on files whose name starts with "crash"."""
    if os.path.basename(key[0]).startswith("crash"):
        os._exit(11)
    return vp._features_task(params_json, key)


def test_an_image_that_kills_its_worker_is_unreadable_and_the_rest_is_verified(tmp_path, monkeypatch):
    bad = tmp_path / "crash_chelsea.jpg"
    shutil.copy(SAMPLE / "photos" / "chelsea.jpg", bad)
    pairs = pairs_of(SAMPLE)
    pairs.insert(2, (99, str(bad), str(SAMPLE / "copies" / "chelsea_q30.jpg"), False))
    serial = dict(vp.verify_pairs(Verifier(), pairs))
    monkeypatch.setitem(vp._tasks, "features", crashing_features)
    with vp.VerifyPool(2) as pool:
        got = list(vp.verify_pairs(Verifier(), pairs, pool, window=5))
    assert [t for t, _ in got] == [p[0] for p in pairs]
    for tag, verdict in got:
        if tag == 99:
            assert not verdict.same and verdict.reason == "unreadable"
            assert serial[99].same  # the same bytes under another name: a duplicate when it can be read
        else:
            assert verdict == serial[tag]


def test_bad_worker_counts_are_refused():
    with pytest.raises(ValueError, match="workers"):
        vp.VerifyPool(0)
