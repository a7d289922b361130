"""``hashdup undo``: reverse the changes a manifest of ``hashdup dedup --action`` records.

The rules are those of :mod:`hashdup.dedup.actions`: nothing that now exists at the original path (other than the
link hashdup made) is overwritten, and a restored file must have its indexed content.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Any

from hashdup.dedup.actions import Step, error_text, in_trash
from hashdup.dedup.manifest import ActionLog, ManifestError, read_actions
from hashdup.io import trash
from hashdup.io.atomic import file_digest
from hashdup.io.fileops import prune, restore, transfer, unchanged
from hashdup.io.walk import display_path


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _undo_move(step: Step, started: bool) -> str | None:
    src, dst = step.path, step.target
    assert dst is not None
    if os.path.lexists(src):
        if os.path.lexists(dst) and _same(os.lstat(src), os.lstat(dst)):  # killed between link and unlink
            os.unlink(dst)
            return None
        if started and not os.path.lexists(dst):  # killed before the move
            return None
        return "a file now exists at the original path; not overwritten"
    reason, _ = unchanged(dst, step.facts.size, None, step.facts.blake2b, "the moved file")
    if reason:
        return reason
    os.makedirs(os.path.dirname(src), exist_ok=True)
    transfer(dst, src, step.facts.blake2b)
    return None


def _is_our_link(step: Step, st: os.stat_result) -> bool:
    if step.action == "symlink":
        return stat.S_ISLNK(st.st_mode) and os.readlink(step.path) == step.target
    return stat.S_ISREG(st.st_mode) and step.link is not None and [st.st_dev, st.st_ino] == list(step.link)


def _undo_link(step: Step, backup: str, started: bool) -> str | None:
    path = step.path
    st = os.lstat(path) if os.path.lexists(path) else None
    if not os.path.lexists(backup):
        if started and st is not None and not _is_our_link(step, st):  # killed before the backup was made
            return None
        return f"the backup {display_path(backup)} is missing"
    reason, b_st = unchanged(backup, step.facts.size, None, step.facts.blake2b, "the backup")
    if reason:
        return reason
    assert b_st is not None
    if st is not None and _same(st, b_st):  # killed before the link replaced the original
        os.unlink(backup)
        return None
    if st is not None and not _is_our_link(step, st):
        return "the path is no longer the link hashdup made; not overwritten"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    restore(backup, path, step.facts.blake2b)
    return None


def _undo_delete(step: Step, started: bool) -> str | None:
    facts = step.facts
    intact = os.path.lexists(step.path) and unchanged(step.path, facts.size, None, facts.blake2b, "")[0] is None
    if step.trash is None:
        if started and intact:
            return None  # killed before the file was deleted
        return "deleted permanently (--permanent): cannot be restored"
    where = in_trash(step)
    if os.path.lexists(step.path):
        if started and intact and not os.path.lexists(where.path):  # killed before the move to the trash
            trash.cancel(where)
            return None
        return "a file now exists at the original path; not overwritten"
    if not os.path.lexists(where.path):
        return f"{display_path(where.path)} is no longer in the trash (emptied, or restored by hand)"
    reason, _ = unchanged(where.path, facts.size, None, facts.blake2b, "the file in the trash")
    if reason:
        return reason
    trash.put_back(where, step.path)
    return None


def _undo_one(step: Step, header: dict[str, Any], folder: str) -> str | None:
    """Reverse one change; None when done (the restored file then has its indexed content), else why not."""
    started, step.reason = step.status == "started", None
    if step.action == "delete":
        return _undo_delete(step, started)
    if step.action == "move":
        reason = _undo_move(step, started)
        if reason is None and step.target and header.get("dest"):
            prune(os.path.dirname(step.target), header["dest"])
    elif step.backup is not None:
        reason = _undo_link(step, os.path.join(folder, step.backup), started)
    else:
        reason = "the manifest names no backup"
    if reason is None and file_digest(step.path) != step.facts.blake2b:
        reason = "the restored file differs from the indexed one"
    return reason


def undo(manifest: str, *, on_step: Any = None) -> list[Step]:
    """Reverse the changes recorded in ``manifest`` and record them as "undone" in it.

    A moved file is moved back, a linked one is put back from its backup, a file moved to the trash is put back
    from the trash; a restored file must have its indexed content (blake2b), and nothing that now exists at the
    original path (other than the link hashdup made) is overwritten. Files deleted with ``permanent`` cannot be
    restored. Entries already undone are reported and left alone, so undoing
    twice is harmless.

    Returns
    -------
    list of Step
        One per change the manifest records: status "undone" (``reason`` "already undone" for earlier ones),
        "skipped" with a reason (refused, or a permanent delete, which cannot be undone) or "failed" (an
        operating-system error).
    """
    journal = ActionLog(manifest)
    try:
        header, entries = read_actions(manifest, journal.text)  # validated before anything is written to it
    except ManifestError:
        journal.close()
        raise
    journal.drop_torn_line()
    results = []
    try:
        for n, e in sorted(entries.items()):
            if e.get("status") not in ("started", "done", "undone"):
                continue  # skipped or failed at the time: nothing was changed
            try:
                step = Step.from_entry(e)
            except (KeyError, TypeError):
                raise ManifestError(f"{manifest}: entry {n} is incomplete") from None
            if step.status == "undone":
                step.reason = "already undone"
            else:
                try:
                    step.reason = _undo_one(step, header, os.path.dirname(journal.path))
                    step.status = "skipped" if step.reason else "undone"
                except OSError as err:
                    step.status, step.reason = "failed", error_text(err)
                if step.status == "undone":
                    journal.write({"n": n, "status": "undone", "reason": None})
            results.append(step)
            if on_step is not None:
                on_step(step)
    finally:
        journal.close()
    with contextlib.suppress(OSError):
        os.rmdir(journal.path + ".files")  # only when every backup went back
    return results
