"""Parallel extraction: the same bytes for 1 worker, N workers and Dask; bounded work in flight; worker crashes;
and the pruned GIST filtering against the plain full-spectrum computation."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.fft

from hashdup import extract as ex
from hashdup.descriptors import Gist, make_descriptor
from hashdup.descriptors.base import to_gray
from hashdup.descriptors.local import LocalExtractor
from hashdup.io import images

from .conftest import SAMPLE

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def sample_files() -> list[str]:
    """Every file of sample_data (real photos, edited copies, a truncated JPEG, a text file named .jpg)."""
    return sorted(str(p) for p in SAMPLE.rglob("*") if p.is_file())


def as_tuple(r: ex.Extracted) -> tuple:
    d = None if r.descriptor is None else (r.descriptor.dtype.str, r.descriptor.tobytes())
    local = None if r.local is None else r.local.to_bytes()
    return (r.position, r.facts, r.error, r.ignored, d, local)


# --- the same results whatever runs the work --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gist", "gist+color"])
def test_one_and_two_workers_give_the_same_bytes_in_order(name):
    paths = sample_files()
    desc, local = make_descriptor(name), LocalExtractor()
    serial = list(ex.extract(paths, desc, workers=1, chunk_size=32, local=local))
    pooled = list(ex.extract(iter(paths), desc, workers=2, chunk_size=3, local=local))  # 8 chunks, uneven last one
    assert all((r.local is not None) == (r.descriptor is not None) for r in serial)  # features with every row
    assert [r.position for r in pooled] == list(range(len(paths)))
    assert [as_tuple(r) for r in pooled] == [as_tuple(r) for r in serial]
    described = [r for r in serial if r.descriptor is not None]
    assert len(described) >= 20 and any(r.error for r in serial) and any(r.ignored for r in serial)
    X = np.stack([r.descriptor for r in described])
    assert np.array_equal(X, X.astype(np.float16).astype(np.float32))  # rounded through the stored dtype


def test_default_workers_follow_the_affinity_mask():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert ex.default_workers() == expected


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="chunk_size"):
        list(ex.extract(sample_files(), Gist(), chunk_size=0))
    with pytest.raises(ValueError, match="workers"):
        list(ex.extract(sample_files(), Gist(), workers=0))


class CountingPool:
    """Wraps a real process pool and records the largest number of chunks submitted and not yet finished."""

    def __init__(self, pool):
        self.pool, self.lock, self.outstanding, self.most = pool, threading.Lock(), 0, 0

    def submit(self, *args, **kwargs):
        with self.lock:
            self.outstanding += 1
            self.most = max(self.most, self.outstanding)
        future = self.pool.submit(*args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future):
        with self.lock:
            self.outstanding -= 1

    def shutdown(self, *args, **kwargs):
        return self.pool.shutdown(*args, **kwargs)


def test_chunks_in_flight_are_bounded_and_paths_read_lazily(monkeypatch):
    photos = [p for p in sample_files() if "/photos/" in p]
    n_paths, chunk, workers = 120, 2, 2
    consumed = 0

    def lazy_paths():
        nonlocal consumed
        for i in range(n_paths):
            consumed += 1
            yield photos[i % len(photos)]

    pools: list[CountingPool] = []
    real_new_pool = ex._new_pool
    monkeypatch.setattr(ex, "_new_pool", lambda w: pools.append(CountingPool(real_new_pool(w))) or pools[-1])
    ahead = []
    for n, r in enumerate(ex.extract(lazy_paths(), Gist(), workers=workers, chunk_size=chunk)):
        assert r.position == n and r.descriptor is not None
        ahead.append(consumed - n)
    assert n == n_paths - 1
    assert len(pools) == 1 and 1 <= pools[0].most <= 2 * workers
    # paths are read at most 2 × workers chunks (plus the one being yielded) ahead of the results
    assert max(ahead) <= (2 * workers + 1) * chunk and max(ahead) >= 2 * workers * chunk


# --- a worker that dies ---------------------------------------------------------------------------------------
def crashing_task(paths, name, params, start):
    """Like a native decoder that segfaults: the worker process dies on any file whose name starts with "crash"."""
    if any(os.path.basename(p).startswith("crash") for p in paths):
        os._exit(11)
    return ex.extract_chunk_by_name(paths, name, params, start)


def test_a_file_that_kills_its_worker_is_reported_and_the_run_goes_on(tmp_path, monkeypatch):
    photos = [p for p in sample_files() if "/photos/" in p][:10]
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i, src in enumerate(photos):
        if i in (2, 7):  # two crashing files, in different chunks
            paths.append(str(folder / f"crash{i}.jpg"))
            shutil.copy(src, paths[-1])
        paths.append(str(folder / f"{i:02d}_{os.path.basename(src)}"))
        shutil.copy(src, paths[-1])
    monkeypatch.setattr(ex, "_chunk_task", crashing_task)
    got = list(ex.extract(paths, Gist(), workers=2, chunk_size=3))
    serial = {r.position: r for r in ex.extract(paths, Gist(), workers=1)}
    assert [r.position for r in got] == list(range(len(paths)))
    for r in got:
        if os.path.basename(paths[r.position]).startswith("crash"):
            assert r.error == ex.CRASHED and r.descriptor is None
            assert r.facts.size == os.path.getsize(paths[r.position])
        else:
            assert as_tuple(r) == as_tuple(serial[r.position])
    assert sum(r.error == ex.CRASHED for r in got) == 2


# --- Dask -----------------------------------------------------------------------------------------------------
def test_dask_cluster_writes_the_same_index_as_a_local_run(tmp_path):
    distributed = pytest.importorskip("distributed", reason="the Dask test needs distributed (pip install "
                                                             "'hashdup[dask]'; the test extra installs it)")
    from hashdup import pipeline

    folder = tmp_path / "imgs"
    shutil.copytree(SAMPLE, folder)
    local = pipeline.build_index([folder], tmp_path / "local", workers=1, batch_size=4)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as cluster:
        remote = pipeline.build_index([folder], tmp_path / "dask", dask=cluster.scheduler_address, batch_size=4)
        ran = cluster.scheduler.task_prefixes.get("extract_chunk_by_name")
        assert ran is not None and sum(ran.state_counts.values()) >= 5  # the chunks did run on the cluster
    assert (remote.indexed, remote.files, len(remote.skipped)) == (local.indexed, local.files, len(local.skipped))
    a, b = pipeline.Index(tmp_path / "local"), pipeline.Index(tmp_path / "dask")
    try:
        assert np.asarray(a.stored.codes.codes).tobytes() == np.asarray(b.stored.codes.codes).tobytes()
        assert np.asarray(a.stored.descriptors).tobytes() == np.asarray(b.stored.descriptors).tobytes()
    finally:
        a.close()
        b.close()
    for kind in ("codes-*.hdc", "descriptors-*.npy", "features-*.hdf"):
        (fa,), (fb,) = sorted((tmp_path / "local").glob(kind)), sorted((tmp_path / "dask").glob(kind))
        assert fa.read_bytes() == fb.read_bytes()


# --- the pruned GIST filtering --------------------------------------------------------------------------------
def reference_gist(g: Gist, pixels: np.ndarray) -> np.ndarray:
    """GIST computed the plain way (as in LMgist.m): full complex FFTs, every filter over the whole spectrum."""
    gray = to_gray(pixels).astype(np.float64)
    gray = gray - gray.min(axis=(1, 2), keepdims=True)
    hi = gray.max(axis=(1, 2), keepdims=True)
    gray = np.where(hi > 0, gray * 255.0 / np.where(hi > 0, hi, 1.0), 0.0)
    w = 5
    img = np.pad(np.log1p(gray), ((0, 0), (w, w), (w, w)), mode="symmetric")
    gf = g._prefilter.astype(np.float64)
    out = img - np.fft.ifft2(np.fft.fft2(img) * gf).real
    out = out / (0.2 + np.sqrt(np.abs(np.fft.ifft2(np.fft.fft2(out * out) * gf))))
    pre = out[:, w:-w, w:-w]
    S, b, B = g.image_size, g.boundary, g.blocks
    padded = np.pad(pre, ((0, 0), (b, b), (b, b)), mode="symmetric")
    bank = g.gabor_bank.astype(np.float64)
    X = []
    for p in padded:
        energy = np.abs(np.fft.ifft2(bank * np.fft.fft2(p)))[:, b : b + S, b : b + S]
        X.append(energy.reshape(g.n_filters, B, S // B, B, S // B).mean(axis=(2, 4)).reshape(-1))
    return np.asarray(X)


def real_photos(size: int) -> np.ndarray:
    paths = [p for p in sample_files() if "/photos/" in p]
    if SHARED.is_dir():
        paths += sorted(str(p) for p in (SHARED / "skimage-data").glob("*.png"))[:6]
    return np.stack([images.load(p, size).pixels for p in paths])


@pytest.mark.parametrize("params", [{}, {"image_size": 64, "orientations": (8, 6, 4, 2), "boundary": 16},
                                    {"image_size": 32, "orientations": (4, 4), "blocks": 2, "boundary": 8},
                                    {"boundary": 0}])
def test_pruned_gist_equals_the_full_computation(params):
    g = Gist(**params)
    pixels = real_photos(g.image_size)
    got = g.describe(pixels)
    ref = reference_gist(g, pixels)
    assert got.shape == ref.shape == (len(pixels), g.n_features) and got.dtype == np.float32
    err = np.abs(got - ref).max(axis=1) / np.linalg.norm(ref, axis=1)
    assert err.max() < 1e-5, err.max()  # float32 rounding; float16 storage alone is ~5e-4
    assert np.median(np.abs(got - ref) / ref) < 1e-5


def test_gist_rows_do_not_depend_on_the_batch():
    g = Gist()
    pixels = real_photos(128)
    X = g.describe(pixels)
    rng = np.random.default_rng(0)
    for _ in range(4):
        pick = rng.choice(len(pixels), size=int(rng.integers(1, len(pixels))), replace=False)
        assert g.describe(pixels[pick]).tobytes() == X[pick].tobytes()
    with scipy.fft.set_workers(2):  # threads inside the FFTs do not change the bits either
        assert g.describe(pixels).tobytes() == X.tobytes()


# --- the command line ---------------------------------------------------------------------------------------------
class _Main:
    """``hashdup.cli.main`` dressed as a click command for CliRunner, so that errors get the script's exit codes."""

    name = "hashdup"

    def main(self, args=None, prog_name=None, **kwargs):
        from hashdup.cli import main

        main(list(args))


def test_cli_workers_and_dask_options(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from PIL import Image

    folder = tmp_path / "imgs"  # 42 distinct photos: more than one chunk of 32, so that a pool is used
    folder.mkdir()
    for p in sample_files():
        if "/photos/" in p:
            with Image.open(p) as im:
                for side in (96, 160, 240):
                    im.convert("RGB").resize((side, side * 3 // 4)).save(folder / f"{Path(p).stem}_{side}.jpg")
    pools = []
    real_new_pool = ex._new_pool
    monkeypatch.setattr(ex, "_new_pool", lambda w: pools.append(w) or real_new_pool(w))
    runner, cli = CliRunner(), _Main()  # through main(), so that errors get the console script's exit codes
    bad = runner.invoke(cli, ["index", str(SAMPLE), "--index", str(tmp_path / "a"), "--workers", "0"])
    assert bad.exit_code == 2 and "--workers" in bad.output
    one = runner.invoke(cli, ["index", str(folder), "--index", str(tmp_path / "one"), "--workers", "1"])
    assert pools == []
    two = runner.invoke(cli, ["index", str(folder), "--index", str(tmp_path / "two"), "--workers", "2"])
    assert pools == [2]
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    (fa,), (fb,) = sorted((tmp_path / "one").glob("codes-*.hdc")), sorted((tmp_path / "two").glob("codes-*.hdc"))
    assert fa.read_bytes() == fb.read_bytes()
    dask = pytest.importorskip("dask")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        down = runner.invoke(cli, ["index", str(SAMPLE), "--index", str(tmp_path / "d"), "--dask",
                                   "tcp://127.0.0.1:9"])
    assert down.exit_code == 1
    assert "hashdup: error: cannot connect to the Dask scheduler at tcp://127.0.0.1:9" in down.output
    assert not (tmp_path / "d" / "index.json").exists()
