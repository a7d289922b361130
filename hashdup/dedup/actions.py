"""What ``hashdup dedup --action`` does to the duplicates of each group (``hashdup undo`` is
:mod:`hashdup.dedup.undo`).

:func:`plan` turns groups into one :class:`Step` per duplicate (never a keeper), :func:`check` refuses a file that
changed since it was indexed, :func:`apply` acts and journals every change in a manifest;
:func:`hashdup.dedup.undo.undo` reverses the moves, links and deletes (to the trash, :mod:`hashdup.io.trash`) a
manifest records.

Safety rules, in one place:

- a group's keeper (``members[0]``, and the keeper of any other group) is never acted on;
- a duplicate is acted on only if it is still the regular file the catalogue describes: same size, same
  modification time (ns) and same blake2b-128 of its content; the keeper must exist with its indexed size, time
  and content too (for every action, so that a duplicate is never removed while its keeper is gone);
- nothing is ever overwritten: a move whose target exists is skipped, and undo never replaces a file that now
  exists at the original path or a link that is no longer the one hashdup made;
- links replace a duplicate atomically (made under a temporary name beside it, then renamed over it) after the
  original was moved into the backup folder ``<manifest>.files/``, from which undo puts it back.

The manifest is a JSON Lines journal, appended and flushed to disk around every change, so a run killed at any
moment leaves an accurate record; its format is described in :mod:`hashdup.dedup.manifest`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from hashdup.dedup.manifest import FORMAT, VERSION, ActionLog
from hashdup.io import trash
from hashdup.io.atomic import fsync_dir
from hashdup.io.facts import FileDigest, from_keys, to_keys
from hashdup.io.fileops import backup as make_backup
from hashdup.io.fileops import replace_with_link, transfer, unchanged
from hashdup.io.walk import display_path

if TYPE_CHECKING:
    from hashdup.dedup import Group

Action = Literal["move", "symlink", "hardlink", "delete"]
ACTIONS: tuple[str, ...] = ("list", "move", "symlink", "hardlink", "delete")
DESTRUCTIVE: tuple[str, ...] = ("move", "symlink", "hardlink", "delete")
LINKS: tuple[str, ...] = ("symlink", "hardlink")
#: The reason of the steps left alone once the disk is full (ENOSPC, EDQUOT): a run stops at the first such error.
NOT_ATTEMPTED = "not attempted, the run stopped"
PAST = {"move": "moved", "symlink": "replaced by symbolic links", "hardlink": "replaced by hard links",
        "delete": "moved to the trash", "delete --permanent": "deleted permanently"}


#: The facts of a step, and the prefix of their keys in the manifest (``size``, ..., ``keeper_size``, ...).
_FLAT = {"facts": "", "keeper_facts": "keeper_"}


@dataclass
class Step:
    """One change to one duplicate file. Paths are absolute; ``to_json`` shows them as hashdup prints paths.

    ``target`` is the move destination, or the keeper for links, None for deletes. ``facts`` (size, modification
    time, blake2b) are what the catalogue recorded for the duplicate, ``keeper_facts`` for the keeper; a manifest
    entry has them flat (:meth:`entry`). ``trash`` is, for a delete into the trash, ``[path in the trash, its
    .trashinfo]`` (:mod:`hashdup.io.trash`).
    """

    group: int
    action: str
    path: str
    keeper: str
    target: str | None
    facts: FileDigest
    keeper_facts: FileDigest
    status: str = "planned"
    reason: str | None = None
    backup: str | None = None
    link: list[int] | None = None
    trash: list[str | None] | None = None

    def entry(self) -> dict[str, Any]:
        """The fields of the step's manifest entry (:mod:`hashdup.dedup.manifest`), in the order of the step's
        fields, with the facts flat: ``size``, ``mtime_ns``, ``blake2b``, then ``keeper_size`` and so on."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _FLAT:
                out.update(to_keys(value, FileDigest, _FLAT[f.name]))
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Step:
        """The step a manifest entry records (keys that are not the step's are ignored).

        Raises
        ------
        KeyError, TypeError
            When the entry lacks a fact, or another field without a default.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in _FLAT:
                values[f.name] = from_keys(entry, FileDigest, _FLAT[f.name])
            elif f.name in entry:
                values[f.name] = entry[f.name]
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """``{"group", "action", "path", "keep", "target", "status", "reason"}`` with display paths; the target of a
        file moved to the trash is its path there."""
        target = self.trash[0] if self.trash and self.status in ("done", "started") else self.target
        return {"group": self.group, "action": self.action, "path": display_path(self.path),
                "keep": display_path(self.keeper), "target": None if target is None else display_path(target),
                "status": self.status, "reason": self.reason}


def _move_names(roots: Sequence[str]) -> list[str]:
    """Folder names under DIR for each root: none for a single root, else the root's name made unique."""
    if len(roots) <= 1:
        return [""] * len(roots)
    names: list[str] = []
    for r in roots:
        base = os.path.basename(os.path.normpath(r)) or "root"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _relative(path: str, roots: Sequence[str], names: Sequence[str]) -> str:
    best = max((i for i, r in enumerate(roots) if os.path.commonpath([r, path]) == os.path.normpath(r)),
               key=lambda i: len(roots[i]), default=None)
    if best is None:
        raise ValueError(f"{path} lies under none of the index roots")
    return os.path.join(names[best], os.path.relpath(path, roots[best]))


def plan(groups: Iterable[Group], action: Action, dest: str | None = None, *,
         roots: Sequence[str] = ()) -> list[Step]:
    """One step per duplicate of each group (every member but the keeper), in group order.

    Parameters
    ----------
    groups : iterable of Group
        From :func:`hashdup.dedup.find_groups`; ``members[0]`` is the keeper.
    action : {"move", "symlink", "hardlink", "delete"}
    dest : str, optional
        The folder duplicates are moved into (required for "move"): a duplicate goes to
        ``dest/<its path relative to its index root>``, under ``dest/<root name>/`` when the index has several roots.
    roots : sequence of str
        The index's roots (absolute), for "move".

    Returns
    -------
    list of Step
        Status "planned". A file that is the keeper of any group, or already planned, is left out.
    """
    if action not in DESTRUCTIVE:
        raise ValueError(f"action must be one of {', '.join(DESTRUCTIVE)}, got {action!r}")
    if (action == "move") != (dest is not None):
        raise ValueError("a destination folder goes with action 'move', and only with it")
    groups = list(groups)
    keepers = {g.keep.abspath for g in groups}
    names = _move_names(roots)
    move_to = os.path.abspath(dest) if dest is not None else None  # set exactly when action == "move"
    steps, seen = [], set(keepers)
    for g in groups:
        k = g.keep
        for m in g.duplicates:
            if m.abspath in seen:
                continue
            seen.add(m.abspath)
            if move_to is not None:
                target: str | None = os.path.join(move_to, _relative(m.abspath, roots, names))
            else:
                target = k.abspath if action in LINKS else None
            steps.append(Step(g.number, action, m.abspath, k.abspath, target, m.facts, k.facts))
    return steps


def check(step: Step, *, content: bool = True, _keepers: dict[str, Any] | None = None) -> str | None:
    """Why ``step`` must not be applied, or None when the duplicate and its keeper are exactly as indexed.

    Parameters
    ----------
    step : Step
    content : bool
        Also hash the contents (done only when size and time match); False for a cheap look (dry runs).

    Returns
    -------
    str or None
        A one-line reason, e.g. "changed since it was indexed (modification time)".
    """
    facts, k_facts = step.facts, step.keeper_facts
    reason, st = unchanged(step.path, facts.size, facts.mtime_ns, facts.blake2b, "the file", content=content)
    if reason:
        return reason
    cache = {} if _keepers is None else _keepers
    if step.keeper not in cache:
        cache[step.keeper] = unchanged(step.keeper, k_facts.size, k_facts.mtime_ns, k_facts.blake2b, "its keeper",
                                        content=content, follow=True)
    k_reason, k_st = cache[step.keeper]
    if k_reason:
        return k_reason
    assert st is not None and k_st is not None
    if (st.st_dev, st.st_ino) == (k_st.st_dev, k_st.st_ino):
        return "the file is the keeper itself (a hard link to it)"
    if step.action == "hardlink" and st.st_dev != k_st.st_dev:
        return "its keeper is on another file system; a hard link cannot cross file systems"
    if step.action == "move" and step.target is not None and os.path.lexists(step.target):
        return f"the target {display_path(step.target)} already exists; not overwritten"
    return None


def preview(steps: Sequence[Step]) -> list[Step]:
    """A dry run: mark each step "planned", or "skipped" with a reason found without reading contents.

    Nothing is changed on disk and no manifest is written; :func:`apply` also hashes the contents.
    """
    keepers: dict[str, Any] = {}
    for s in steps:
        s.reason = check(s, content=False, _keepers=keepers)
        s.status = "skipped" if s.reason else "planned"
    return list(steps)


def in_trash(step: Step) -> trash.Trashed:
    assert step.trash is not None and step.trash[0] is not None
    return trash.Trashed(step.trash[0], step.trash[1])


def _act(step: Step, backup: str | None) -> None:
    if step.action == "delete" and step.trash is not None:
        trash.commit(step.path, in_trash(step))
    elif step.action == "delete":
        os.unlink(step.path)
    elif step.action == "move":
        assert step.target is not None
        os.makedirs(os.path.dirname(step.target), exist_ok=True)
        transfer(step.path, step.target, step.facts.blake2b)
    else:
        assert backup is not None and step.target is not None
        make_backup(step.path, backup, step.facts.blake2b)
        try:
            replace_with_link(step.path, step.target, symbolic=step.action == "symlink")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(backup)
            raise
        fsync_dir(os.path.dirname(step.path))


def error_text(e: OSError) -> str:
    where = f": {display_path(os.fsdecode(e.filename))}" if e.filename else ""
    return f"{e.strerror or e}{where}"


def apply(steps: Sequence[Step], manifest: str, *, index: str, dest: str | None = None, permanent: bool = False,
          on_step: Any = None) -> list[Step]:
    """Check and apply each step, journalling it in a new manifest; returns the steps with their outcome.

    Parameters
    ----------
    steps : sequence of Step
        From :func:`plan`, all with the same action.
    manifest : str
        The manifest to create (refused if it exists); backups of linked files go to ``manifest + ".files"``.
    index, dest : str
        Recorded in the manifest's header.
    permanent : bool
        Deletes unlink the files; by default they are moved to the trash (:mod:`hashdup.io.trash`), from which
        :func:`undo` (or the desktop) restores them.
    on_step : callable, optional
        Called with each step once it has its outcome.

    Returns
    -------
    list of Step
        Status "done", "skipped" (``reason``: the file or its keeper changed, the target exists, ...) or
        "failed" (``reason``: the operating system's error; the file was left as it was). A full disk (ENOSPC,
        EDQUOT) stops the run: the later steps are "skipped" with the reason :data:`NOT_ATTEMPTED`. An error
        writing the manifest itself is raised (the manifest stays accurate up to its last line).
    """
    actions = {s.action for s in steps}
    if len(actions) > 1:
        raise ValueError(f"steps mix actions {sorted(actions)}")
    action = next(iter(actions), None)
    header = {"format": FORMAT, "version": VERSION, "index": os.path.abspath(index), "action": action,
              "dest": dest and os.path.abspath(dest), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "permanent": bool(permanent and action == "delete")}
    journal = ActionLog(manifest, header)
    keepers: dict[str, Any] = {}
    full: OSError | None = None
    try:
        for n, step in enumerate(steps, start=1):
            if full is not None:  # the disk is full: the rest is not attempted (and said so, if the journal can)
                step.status, step.reason = "skipped", f"{NOT_ATTEMPTED}: {error_text(full)}"
                with contextlib.suppress(OSError):
                    journal.record(n, step.entry())
                if on_step is not None:
                    on_step(step)
                continue
            step.reason = check(step, _keepers=keepers)
            if step.reason:
                step.status = "skipped"
                journal.record(n, step.entry())
            else:
                if step.action in LINKS:
                    step.backup = os.path.relpath(journal.backup_path(n, step.path), os.path.dirname(journal.path))
                    if step.action == "hardlink":  # the keeper's inode, which the link will share
                        k_st = keepers[step.keeper][1]
                        step.link = [k_st.st_dev, k_st.st_ino]
                if step.action == "delete" and not permanent:
                    try:  # the name in the trash is reserved, then journalled, then the file is moved there
                        reserved = trash.reserve(step.path)
                    except OSError as e:
                        step.status, step.reason = "failed", error_text(e)
                        journal.record(n, step.entry())
                        if on_step is not None:
                            on_step(step)
                        continue
                    step.trash = [reserved.path, reserved.info]
                step.status = "started"
                journal.record(n, step.entry())
                try:
                    _act(step, step.backup and os.path.join(os.path.dirname(journal.path), step.backup))
                    step.status = "done"
                except OSError as e:
                    step.status, step.reason = "failed", error_text(e)
                    if isinstance(e, FileExistsError) and step.action == "move":
                        step.status, step.reason = "skipped", "the target appeared meanwhile; not overwritten"
                    step.backup = None
                    if step.trash is not None:
                        trash.cancel(in_trash(step))
                        step.trash = None
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        full = e
                journal.write({"n": n, "status": step.status, "reason": step.reason, "backup": step.backup,
                               "trash": step.trash})
            if on_step is not None:
                on_step(step)
    finally:
        journal.close()
    return list(steps)
