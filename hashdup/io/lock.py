"""The writer lock of an index folder: one writing run at a time, the holder named, stale locks recovered.

``writer.lock`` is locked with ``flock``. The kernel releases an ``flock`` when its holder ends, however it ends
(a SIGKILL, a crash, a power cut), so a lock can never be left behind by a dead run. While it holds the lock, a run
writes its pid, host name and start time into the file, so that a refused run can say who is writing; a file that
still names a holder when the lock is free was left by a run that was killed (a *stale* lock), and is simply taken
over.

Some network file systems do not support ``flock`` (``ENOLCK``, ``EOPNOTSUPP``). There the lock is the existence of
``writer.lock`` itself, created atomically with its holder's details (written to a temporary file, then hard-linked
to the lock name, which fails when the lock exists) and removed when the run ends. A lock file that names a process
that no longer runs on this host, or that is empty, is stale: it is moved aside and removed, and the lock taken.
A lock held from another host cannot be checked and always refuses (remove the file by hand if that run is gone).
Two runs that both find the same stale lock at the same instant are kept apart by moving it aside atomically, but
this fallback remains weaker than ``flock``: prefer a local file system for the index.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hashdup.errors import HashdupError
from hashdup.io.atomic import temp_path

LOCK = "writer.lock"
#: ``flock`` errors that mean "this file system cannot lock", not "someone holds the lock".
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a writer lock."""

    pid: int
    host: str
    since: float  # seconds since the epoch

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.time())

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        try:
            d: Any = json.loads(data)
            return cls(int(d["pid"]), str(d["host"]), float(d["since"]))
        except (ValueError, TypeError, KeyError):
            return None

    def dumps(self) -> bytes:
        return json.dumps({"pid": self.pid, "host": self.host, "since": self.since}).encode() + b"\n"

    def describe(self) -> str:
        """``pid 1234 on host, since 12:03:04`` (the date too when it is not today)."""
        t = time.localtime(self.since)
        fmt = "%H:%M:%S" if time.strftime("%Y-%m-%d", t) == time.strftime("%Y-%m-%d") else "%Y-%m-%d %H:%M:%S"
        return f"pid {self.pid} on {self.host}, since {time.strftime(fmt, t)}"

    def alive(self) -> bool:
        """Whether the holder may still run: True unless it is on this host and its pid is gone."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@dataclass
class Lease:
    """What :func:`writer_lock` yields: how the lock is held, and the stale holder it replaced, if any."""

    method: str  # "flock" or "file"
    stale: Holder | None = None


def _refusal(folder: Path, holder: Holder | None) -> HashdupError:
    who = f" ({holder.describe()})" if holder else ""
    return HashdupError(f"another hashdup run is writing the index at {folder}{who}; try again when it ends")


@contextlib.contextmanager
def writer_lock(folder: str | os.PathLike[str]) -> Iterator[Lease]:
    """Hold the index folder's writer lock (creating the folder): one writing run at a time.

    Yields
    ------
    Lease
        ``stale`` names the holder of a lock left by a run that was killed, which this one took over.

    Raises
    ------
    HashdupError
        When another run holds the lock; the message names its pid, host and start time when known.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(folder, Holder.parse(os.pread(fd, 4096, 0))) from None
        except OSError as e:
            if e.errno not in UNSUPPORTED:
                raise
            os.close(fd)
            fd = -1
            with _file_lock(folder, path) as lease:
                yield lease
            return
        stale = Holder.parse(os.pread(fd, 4096, 0))  # left by a run that was killed while holding the lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, Holder.me().dumps(), 0)
        try:
            yield Lease("flock", stale)
        finally:
            os.ftruncate(fd, 0)
    finally:
        if fd >= 0:
            os.close(fd)


@contextlib.contextmanager
def _file_lock(folder: Path, path: Path) -> Iterator[Lease]:
    """The fallback without ``flock``: the lock file exists while a run holds it (see the module docstring)."""
    me = Holder.me()
    tmp = temp_path(path)
    tmp.write_bytes(me.dumps())
    stale: Holder | None = None
    try:
        for _ in range(5):
            try:
                os.link(tmp, path)
                break
            except FileExistsError:
                pass
            try:
                current = path.read_bytes()
            except FileNotFoundError:
                continue
            holder = Holder.parse(current)
            if holder is not None and holder.alive():
                raise _refusal(folder, holder)
            aside = temp_path(path.with_name(LOCK + ".stale"))
            try:
                os.rename(path, aside)  # atomic: of two runs removing the same stale lock, one gets it
            except FileNotFoundError:
                continue
            moved = aside.read_bytes()
            if moved != current:  # not the file judged stale: another run's fresh lock, put it back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
                aside.unlink()
                raise _refusal(folder, Holder.parse(moved))
            aside.unlink()
            stale = holder
        else:
            raise _refusal(folder, None)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield Lease("file", stale)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if Holder.parse(path.read_bytes()) == me:
                path.unlink()
