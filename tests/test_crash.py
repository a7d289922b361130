"""Crash safety, readers during a write, and the writer lock, with real processes.

A real ``python -m hashdup index`` is killed with SIGKILL at named points of its run (through the
``HASHDUP_TEST_KILL_AT`` hook of :func:`hashdup.io.store.kill_point`) and at seeded random moments. After every kill
the index must open with every checksum verified, answer queries and dedup, and hold exactly either the state before
the run or the complete new one (compared with indexes built without interruption); the next run must finish,
resume what the killed one had journaled, and give the same index as an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from hashdup import pipeline
from hashdup.errors import HashdupError, NoIndexError
from hashdup.io import lock, store
from hashdup.io.journal import JOURNAL

from .conftest import SAMPLE

N_IMAGES = 48


def _make_images(folder: Path, names: list[str], seed: int) -> None:
    """Small JPEGs cut from sample_data's real photos at seeded random places and scales."""
    rng = random.Random(seed)
    photos = sorted((SAMPLE / "photos").glob("*.jpg"))
    for name in names:
        im = Image.open(rng.choice(photos)).convert("RGB")
        w, h = im.size
        s = rng.uniform(0.4, 0.9)
        cw, ch = int(w * s), int(h * s)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        im.crop((x, y, x + cw, y + ch)).resize((64, 64)).save(folder / name, quality=85)


def _age(folder: Path, names: list[str]) -> None:
    """Modification times an hour ago, distinct per file: out of the timestamp-doubt window of the runs."""
    base = time.time_ns() - 3600 * 10**9
    for i, name in enumerate(names):
        os.utime(folder / name, ns=(base + i * 10**9,) * 2)


def snapshot(idx_dir: Path) -> dict | None:
    """Opens the index with every check (checksums, descriptors, bucket tables) and returns, by relative path,
    what it holds; None when there is no index."""
    try:
        idx = pipeline.Index(idx_dir, verify=True)
    except NoIndexError:
        return None
    try:
        X, codes = idx.stored.descriptors, idx.stored.codes.codes
        assert idx.buckets.n_rows == len(idx)
        files = {r.path: (r.id, r.status, getattr(r.facts, "blake2b", None),
                          codes[r.id].tobytes() if r.id is not None else None,
                          X[r.id].tobytes() if r.id is not None else None)
                 for r in idx.stored.catalogue.by_path().values()}
        return {"files": files, "fingerprint": idx.encoder.fingerprint()}
    finally:
        idx.close()


def answers(idx_dir: Path, images: Path) -> tuple:
    """A query and dedup through the library, paths relative to the image folder."""
    idx = pipeline.Index(idx_dir)
    try:
        def rel(p: str) -> str:
            return Path(p).relative_to(images).as_posix()

        rows, failed = pipeline.query(idx, [str(images / "a" / "img000.jpg")], k=4)
        assert failed == 0
        groups = [sorted(map(rel, g["paths"])) for g in pipeline.dedup(idx, 6, verify=False)]  # codes only
        return [(rel(r["path"]), r["distance"]) for r in rows], groups
    finally:
        idx.close()


class Library:
    """One image folder path and one index path, restored to a saved state before every scenario."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.images, self.index = base / "images", base / "index"
        self.state_a, self.state_b = base / "state-a", base / "state-b"
        names = [f"{'ab'[i % 2]}/img{i:03d}.jpg" for i in range(N_IMAGES)]
        _make_images(self.state_a, names, seed=0)
        _age(self.state_a, names)
        shutil.copytree(self.state_a, self.state_b)  # mtimes kept
        for name in names[5:9]:  # state b: 4 removed, 2 modified, 8 added
            (self.state_b / name).unlink()
        changed = [names[10], names[11]] + [f"c/new{i}.jpg" for i in range(8)]
        _make_images(self.state_b, changed, seed=1)
        _age(self.state_b, changed)
        self.set_images("a")
        pipeline.build_index([self.images], self.index, workers=1)
        pipeline.build_index([self.images], self.index, workers=1)  # generation 2, generation 1 kept
        self.saved_a = base / "index-a"
        shutil.copytree(self.index, self.saved_a)
        self.snap_a, self.answers_a = snapshot(self.index), answers(self.index, self.images)
        self.set_images("b")
        pipeline.build_index([self.images], self.index, workers=1)  # the uninterrupted update
        self.snap_b, self.answers_b = snapshot(self.index), answers(self.index, self.images)
        assert self.snap_a != self.snap_b and self.snap_a["fingerprint"] == self.snap_b["fingerprint"]

    def set_images(self, state: str) -> None:
        shutil.rmtree(self.images, ignore_errors=True)
        shutil.copytree(self.state_a if state == "a" else self.state_b, self.images)  # mtimes kept

    def set_index(self, saved: Path | None) -> None:
        shutil.rmtree(self.index, ignore_errors=True)
        if saved is not None:
            shutil.copytree(saved, self.index)

    def run(self, kill_at: str | None = None, delay: float | None = None) -> tuple[int, float]:
        """``hashdup index`` in a child process, killed at a named point or after ``delay`` seconds."""
        env = {k: v for k, v in os.environ.items() if k != "HASHDUP_TEST_KILL_AT"}
        if kill_at:
            env["HASHDUP_TEST_KILL_AT"] = kill_at
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "hashdup", "index", str(self.images), "--index", str(self.index),
                              "--workers", "1", "-q"], env=env, cwd=self.base, stderr=subprocess.PIPE)
        if delay is not None:
            try:
                p.wait(delay)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
        p.wait(120)
        return p.returncode, time.monotonic() - t0


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    return Library(tmp_path_factory.mktemp("crash"))


def _check_after_kill(lib: Library, before: dict | None, resumed: int | str | None) -> None:
    """The killed run left the old state or the new one; the next run finishes, resumes and equals the clean one."""
    after = snapshot(lib.index)
    if before is None and after is None:
        pass  # killed before its first commit: still no index, and readers are told so
    elif after == before:
        assert answers(lib.index, lib.images) == lib.answers_a
    else:
        assert after == lib.snap_b if before is not None else after == lib.snap_a
        assert answers(lib.index, lib.images) == (lib.answers_b if before is not None else lib.answers_a)
    s = pipeline.build_index([lib.images], lib.index, workers=1)
    expected = lib.snap_b if before is not None else lib.snap_a
    assert snapshot(lib.index) == expected
    assert answers(lib.index, lib.images) == (lib.answers_b if before is not None else lib.answers_a)
    to_describe = 10 if before is not None else N_IMAGES  # 8 new and 2 modified files, or all of them
    if resumed == "some":  # killed after a first journal commit
        assert s.resumed > 0 and s.decoded + s.resumed == to_describe
    elif resumed == "all":  # killed after extraction: nothing is decoded again
        assert (s.resumed, s.decoded) == (to_describe, 0)
    elif resumed == "none":  # killed after the commit: the next run has nothing to do
        assert (s.resumed, s.decoded) == (0, 0)
    names = os.listdir(lib.index)
    assert not [n for n in names if n.startswith(".tmp-")] and JOURNAL not in names
    generations = {int(m.group(1)) for n in names if (m := re.match(r"^[a-z]+-(\d{6})\.", n))}
    current = store.read_manifest(lib.index)["generation"]
    assert current in generations and len(generations) <= 2  # the current generation and the previous one


FIRST_RUN = [("journal:1", "some"), ("written:1", "all"), ("written:6", "all"), ("manifest-synced:1", "all"),
             ("manifest-renamed:1", "none")]
# "journal:1" of an update run: its 10 files are usually journaled in one commit, but the journal also commits once a
# second, so on a loaded machine the first commit can hold fewer of them: "some" (every committed one is resumed)
UPDATE_RUN = [("journal:1", "some"), ("written:3", "all"), ("manifest-synced:1", "all"), ("manifest-renamed:1", "none"),
              ("deleting:3", "none")]


@pytest.mark.parametrize("kill_at, resumed", FIRST_RUN)
def test_first_run_killed(library, kill_at, resumed):
    library.set_images("a")
    library.set_index(None)
    rc, _ = library.run(kill_at)
    assert rc == -signal.SIGKILL
    _check_after_kill(library, None, resumed)


@pytest.mark.parametrize("kill_at, resumed", UPDATE_RUN)
def test_update_run_killed(library, kill_at, resumed):
    library.set_images("b")
    library.set_index(library.saved_a)
    rc, _ = library.run(kill_at)
    assert rc == -signal.SIGKILL
    if kill_at.startswith("deleting"):  # killed while removing generation 1: 3 of its files are gone already
        assert sum("-000001." in n for n in os.listdir(library.index)) == len(store.KINDS) - 3
    _check_after_kill(library, library.snap_a, resumed)


def test_update_run_killed_at_random_moments(library):
    library.set_images("b")
    library.set_index(library.saved_a)
    rc, duration = library.run()
    assert rc == 0 and snapshot(library.index) == library.snap_b
    rng = random.Random(6)
    for _ in range(3):
        library.set_images("b")
        library.set_index(library.saved_a)
        library.run(delay=rng.uniform(0.4, 1.0) * duration)
        _check_after_kill(library, library.snap_a, None)


# --- readers during writes ----------------------------------------------------------------------------------------
WRITER = """
import sys
from hashdup import pipeline
for i in range(int(sys.argv[3])):
    pipeline.build_index([sys.argv[1]], sys.argv[2], seed=i % 2, workers=1)
"""


def test_readers_never_fail_while_a_writer_commits(library):
    library.set_images("a")
    library.set_index(library.saved_a)
    fingerprints = {library.snap_a["fingerprint"]}
    pipeline.build_index([library.images], library.index, seed=1, workers=1)
    fingerprints.add(snapshot(library.index)["fingerprint"])
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(library.images), str(library.index), "8"])
    reads, failures = 0, []
    try:
        while writer.poll() is None:
            try:
                snap = snapshot(library.index)
                assert snap["fingerprint"] in fingerprints and len(snap["files"]) == N_IMAGES
                answers(library.index, library.images)
                reads += 1
            except Exception as e:
                failures.append(repr(e))
    finally:
        writer.wait(120)
    assert writer.returncode == 0 and failures == [] and reads >= 5


# --- the writer lock ----------------------------------------------------------------------------------------------
HOLDER = """
import sys, time
from hashdup.io.store import writer_lock
with writer_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(index_dir: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(index_dir)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_live_writer_refuses_another_and_a_killed_one_does_not_block(library, tmp_path):
    library.set_images("a")
    idx = tmp_path / "idx"
    holder = _hold(idx)
    try:
        r = subprocess.run([sys.executable, "-m", "hashdup", "index", str(library.images), "--index", str(idx)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1
        assert f"another hashdup run is writing the index at {idx} (pid {holder.pid} on {socket.gethostname()}, " \
               "since " in r.stderr
        assert not (idx / "index.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    left = lock.Holder.parse((idx / store.LOCK).read_bytes())
    assert left is not None and left.pid == holder.pid  # the dead holder's note is still there
    s = pipeline.build_index([library.images], idx, workers=1)
    assert s.indexed == N_IMAGES and s.stale_lock.startswith(f"pid {holder.pid} on ")
    assert (idx / store.LOCK).read_bytes() == b""  # released


@pytest.fixture
def no_flock(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd, op):
        raise OSError(37, "No locks available")  # ENOLCK, as on some network file systems

    monkeypatch.setattr(lock.fcntl, "flock", unsupported)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_fallback_lock_file_without_flock(tmp_path, no_flock):
    idx = tmp_path / "idx"
    idx.mkdir()
    path = idx / store.LOCK
    # a lock file left by a dead process on this host is stale: taken over
    path.write_bytes(lock.Holder(_dead_pid(), socket.gethostname(), time.time() - 60).dumps())
    dead = lock.Holder.parse(path.read_bytes())
    with store.writer_lock(idx) as lease:
        assert lease.method == "file" and lease.stale == dead
        assert lock.Holder.parse(path.read_bytes()).pid == os.getpid()
        with (pytest.raises(HashdupError, match=f"another hashdup run is writing .*pid {os.getpid()} on "),
              store.writer_lock(idx)):
            pass
    assert not path.exists()  # released by removing it
    # a live holder (a sleeping process) refuses; so does one on another host, which cannot be checked
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for holder in (lock.Holder(sleeper.pid, socket.gethostname(), time.time()),
                       lock.Holder(1, "elsewhere.example", time.time())):
            path.write_bytes(holder.dumps())
            refusal = re.escape(f"pid {holder.pid} on {holder.host}")  # the host name has dots
            with pytest.raises(HashdupError, match=refusal), store.writer_lock(idx):
                pass
            assert lock.Holder.parse(path.read_bytes()) == holder  # left alone
    finally:
        sleeper.kill()
        sleeper.wait()
    # an empty lock file (what a flock run leaves behind) is no holder
    path.write_bytes(b"")
    with store.writer_lock(idx) as lease:
        assert lease.stale is None
    assert not path.exists()
