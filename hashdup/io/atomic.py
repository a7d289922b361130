"""Atomic file replacement: write to a temporary name in the same folder, flush to disk, rename into place.

A reader never sees a half-written file under the final name, and a run killed at any moment leaves either the old
file or the new one (plus, at worst, a temporary ``.tmp-*`` file that the next write in that folder removes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".tmp-"


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (the effect of a rename) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary path beside ``path``, on the same file system."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it and rename it to ``path``, on failure remove it.

    Use this for writers that want a file name (``numpy.save``, ``sqlite3``).
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file for binary writing that becomes ``path`` when the block ends without error."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_open(path) as f:
        f.write(data)


def file_digest(path: str | os.PathLike[str], digest_size: int = 16) -> str:
    """blake2b digest of a file's bytes, as hex."""
    h = hashlib.blake2b(digest_size=digest_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> None:
    """Delete temporary files left in ``folder`` by runs that were killed (their process no longer exists)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if not entry.name.startswith(TMP_PREFIX) or not entry.is_file(follow_symlinks=False):
                continue
            pid = entry.name[len(TMP_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
