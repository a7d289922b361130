"""The ``hashdup dedup``, ``undo`` and ``report`` commands (registered on the group in :mod:`hashdup.cli`): option
parsing and printing only; the work is in :mod:`hashdup.dedup` (:mod:`~hashdup.dedup.actions`,
:mod:`~hashdup.dedup.report`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, cast

import click

from hashdup.cli.common import StageProgress, emit, format_options, index_option, open_index, quiet_option, say

# hashdup.dedup's KEEP_POLICIES, LINKAGES and actions.ACTIONS, kept here so that --help imports nothing heavy
KEEP_POLICIES = ["original", "resolution", "size", "oldest", "newest", "path"]
LINKAGES = ["star", "single", "complete"]  # hashdup.dedup.LINKAGES, default first
DEDUP_ACTIONS = ["list", "move", "symlink", "hardlink", "delete"]  # hashdup.dedup.actions.ACTIONS


def group_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options that decide the groups, shared by dedup and report."""
    f = click.option("--verify/--no-verify", default=True, show_default=True,
                     help="Decide candidate pairs by their descriptors and, where those are not conclusive, by "
                          "matching the images' local features; --no-verify groups by code distance alone.")(f)
    f = click.option("--mirror/--no-mirror", default=True, show_default=True,
                     help="Also match left-right mirrored copies.")(f)
    f = click.option("--linkage", type=click.Choice(LINKAGES), default="star", show_default=True,
                     help="star: every member is a duplicate of the group's keeper; single: connected pairs (chains "
                          "can join unrelated images); complete: every member a duplicate of every other.")(f)
    f = click.option("--keep", type=click.Choice(KEEP_POLICIES), default="original", show_default=True,
                     help="The image of each group that is kept: the one the others were derived from (full size, "
                          "central among the group's descriptors, best encoding, not named a copy, oldest); most "
                          "pixels (then largest file, then oldest); largest file; oldest or newest file; first "
                          "path.")(f)
    return click.option("--radius", type=click.IntRange(min=0), default=None,
                        help="Hamming radius of the candidate pairs [default: 10/64 of the code length when "
                             "verifying; 3/64 with --no-verify, where it decides alone].")(f)


def _find_groups(idx: Any, radius: int | None, quiet: bool, **options: Any) -> list:
    """find_groups with a progress bar on stderr while pairs are verified (only on a terminal, never with -q)."""
    from hashdup.dedup.groups import find_groups

    progress = StageProgress(quiet, {"verifying": "pairs"})
    try:
        return find_groups(idx, radius, progress=progress, on_problem=lambda m: progress.echo(f"hashdup: warning: {m}"),
                           **options)
    finally:
        progress.close()


@click.command()
@click.argument("dest", required=False, metavar="[DIR]", type=click.Path(file_okay=False))
@group_options
@click.option("--action", type=click.Choice(DEDUP_ACTIONS), default="list", show_default=True,
              help="What to do with every image of a group but its keeper: list the groups, move them into DIR, "
                   "replace them by symbolic or hard links to the keeper, or delete them (into the desktop's trash, "
                   "from which hashdup undo restores them).")
@click.option("--yes", is_flag=True,
              help="Act; without it, move/symlink/hardlink/delete only print what they would do.")
@click.option("--force", is_flag=True,
              help="Act even with --no-verify and a --radius above the default for the code length (groups made by "
                   "code distance alone, at a radius that joins unrelated images).")
@click.option("--permanent", is_flag=True,
              help="With --action delete --yes: unlink the files instead of moving them to the trash (cannot be "
                   "undone).")
@click.option("--manifest", type=click.Path(dir_okay=False),
              help="Journal of the changes, for hashdup undo [default: ./hashdup-actions-<UTC time>.jsonl].")
@format_options
@index_option
@quiet_option
def dedup(dest: str | None, radius: int | None, keep: str, linkage: str, mirror: bool, verify: bool, action: str,
          yes: bool, force: bool, permanent: bool, manifest: str | None, fmt: str, index_dir: str, quiet: bool) -> None:
    """Print groups of near-duplicate images in the index, or act on their duplicates.

    Candidate pairs come from the binary codes (within --radius bits, and each image's nearest codes); each is
    decided by the distance of the images' descriptors and, where that is not conclusive, by matching local
    features of the two files (ORB + RANSAC) and comparing the aligned pixels. Byte-identical files are always
    duplicates; mirrored copies are matched unless --no-mirror. Each group keeps one image ("keep", chosen by
    --keep); with --action, every other image of the group is moved, linked or deleted, but only with --yes, and
    only if it and its keeper are unchanged since indexing (size, modification time, content hash). Deleted files
    go to the desktop's trash (freedesktop.org; --permanent unlinks them). Changes are journalled in a manifest that
    `hashdup undo` reverses (moves, links and deletes into the trash). Exit status 1 when any file was skipped.

    \b
    Example:
        hashdup dedup | jq -r '.[] | .keep as $k | .paths[] | select(. != $k)'
        hashdup dedup --action move ./dups             # dry run: what would move
        hashdup dedup --action move ./dups --yes       # move, write hashdup-actions-*.jsonl
        hashdup undo hashdup-actions-20250101T120000Z.jsonl
    """
    from hashdup import pipeline
    from hashdup.dedup import actions
    from hashdup.dedup.manifest import default_manifest

    if (action == "move") != (dest is not None):
        raise click.UsageError("--action move needs a destination folder DIR" if action == "move"
                               else f"DIR goes with --action move, not --action {action}")
    if permanent and action != "delete":
        raise click.UsageError("--permanent goes with --action delete")
    if manifest is not None and action == "list":
        raise click.UsageError("--manifest goes with --action move, symlink, hardlink or delete")
    if manifest is not None and os.path.lexists(manifest):
        raise click.BadParameter(f"{manifest} already exists; a manifest is never overwritten",
                                 param_hint="--manifest")
    if action != "list" and yes:  # every path checked before the first pair is verified
        _check_writable(os.path.dirname(os.path.abspath(manifest or default_manifest())), "--manifest")
    if dest is not None and os.path.lexists(dest) and not os.path.isdir(dest):
        raise click.BadParameter(f"{dest} exists and is not a folder", param_hint="DIR")
    options: dict[str, Any] = {"keep": keep, "linkage": linkage, "mirror": mirror, "verify": verify}
    idx = open_index(index_dir)
    try:
        wide = not verify and radius is not None and radius > pipeline.default_radius(idx.n_bits)
        if wide and action != "list" and yes and not force:
            raise click.UsageError(
                f"--radius {radius} is above the default {pipeline.default_radius(idx.n_bits)} for {idx.n_bits}-bit "
                "codes and --no-verify lets the codes alone decide: such groups join unrelated images. Look at the "
                "plan without --yes, then add --force to act on it (or drop --no-verify)")
        groups = _find_groups(idx, radius, quiet, **options)
        roots = list(idx.stored.catalogue.roots)
        n_images = len(idx)
    finally:
        idx.close()
    big = [g for g in groups if len(g.members) > max(10, n_images // 10)] if not verify else []
    for g in big[:3]:
        say(quiet, f"hashdup: warning: group {g.number} holds {len(g.members)} of {n_images} images: with "
                    f"--no-verify{f' and --radius {radius}' if radius is not None else ''} the codes alone joined "
                    "them; look before acting")
    stale = {p: r for g in groups for p, r in g.stale().items()}
    if stale:
        first = next(iter(stale.items()))
        say(quiet, f"hashdup: warning: {len(stale)} file{'s' if len(stale) > 1 else ''} vanished or changed since "
                    "indexing (e.g. "
                    f"{first[0]}: {first[1]}); they are marked and never acted on; run `hashdup index` to refresh")
    if action == "list":
        emit([g.to_json() for g in groups], fmt, ["group", "keep", "match", "distance", "path"],
              [row for g in groups for row in g.table_rows()])
        say(quiet, f"hashdup: {len(groups)} groups, {sum(len(g.members) for g in groups)} images")
        return
    steps = actions.plan(groups, cast(actions.Action, action), dest, roots=roots)  # click.Choice, and not "list"
    columns = ["group", "status", "path", "keep", "target", "reason"]
    what = actions.PAST[action + (" --permanent" if permanent else "")] + (f" to {dest}" if dest else "")
    if not yes:
        actions.preview(steps)
        emit([s.to_json() for s in steps], fmt, columns)
        n_skip = sum(s.status == "skipped" for s in steps)
        say(quiet, f"hashdup: dry run: {len(steps) - n_skip} files would be {what}"
                    + (f", {n_skip} skipped (see reason)" if n_skip else "") + "; add --yes to act")
        return
    if not steps:
        emit([], fmt, columns)
        say(quiet, "hashdup: no duplicates; nothing done, no manifest written")
        return
    def tell(s: actions.Step) -> None:
        if s.status != "done" and not (s.reason or "").startswith(actions.NOT_ATTEMPTED):
            say(quiet, f"hashdup: {s.status} {s.to_json()['path']}: {s.reason}")

    manifest = manifest or default_manifest()
    done = actions.apply(steps, manifest, index=index_dir, dest=dest, permanent=permanent, on_step=tell)
    emit([s.to_json() for s in done], fmt, columns)
    counts = {k: sum(s.status == k for s in done) for k in ("done", "skipped", "failed")}
    stopped = [s for s in done if (s.reason or "").startswith(actions.NOT_ATTEMPTED)]
    if stopped:
        say(False, f"hashdup: error: {(stopped[0].reason or '').split(': ', 1)[-1]}: stopped with {len(stopped)} of "
                    f"{len(done)} files not attempted; the manifest {manifest} records what was done "
                    f"(hashdup undo {manifest} reverses it)")
    say(quiet, f"hashdup: {counts['done']} files {what}, {counts['skipped']} skipped, {counts['failed']} failed; "
                f"manifest {manifest}" + ("; deleted files cannot be restored" if permanent
                                          else f" (hashdup undo {manifest} reverses it)"))
    if counts["done"] != len(done):
        sys.exit(1)


def _check_writable(folder: str, hint: str) -> None:
    if not os.path.isdir(folder):
        raise click.BadParameter(f"the folder {folder} does not exist", param_hint=hint)
    if not os.access(folder, os.W_OK):
        raise click.BadParameter(f"cannot write in {folder}", param_hint=hint)


@click.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@format_options
@quiet_option
def undo(manifest: str, fmt: str, quiet: bool) -> None:
    """Reverse the changes recorded in MANIFEST by `hashdup dedup --action ... --yes`.

    Moved files are moved back, linked files are put back from the backups beside the manifest (MANIFEST.files/) and
    deleted files from the trash, each only if its content is the indexed one and nothing else now occupies its
    original path; files deleted with --permanent cannot be restored. The manifest records what was undone, so
    running undo twice is harmless. Exit status 1 when anything could not be undone.

    \b
    Example:
        hashdup undo hashdup-actions-20250101T120000Z.jsonl
    """
    from hashdup.dedup import actions
    from hashdup.dedup.undo import undo as undo_manifest

    def tell(s: actions.Step) -> None:
        if s.status != "undone":
            say(quiet, f"hashdup: not undone ({s.status}) {s.to_json()['path']}: {s.reason}")

    results = undo_manifest(manifest, on_step=tell)
    emit([s.to_json() for s in results], fmt, ["group", "action", "status", "path", "keep", "target", "reason"])
    n_undone = sum(s.status == "undone" for s in results)
    say(quiet, f"hashdup: {n_undone} of {len(results)} changes undone")
    if n_undone != len(results):
        sys.exit(1)


@click.command()
@click.option("-o", "--output", default="hashdup-report.html", show_default=True,
              type=click.Path(dir_okay=False, allow_dash=True), help="HTML file to write; '-' writes to stdout.")
@group_options
@index_option
@quiet_option
def report(output: str, radius: int | None, keep: str, linkage: str, mirror: bool, verify: bool,
           index_dir: str, quiet: bool) -> None:
    """Write one self-contained HTML page of the near-duplicate groups.

    Thumbnails (inline, no external files), sizes, resolutions, distances, and the keeper of each group marked;
    readable on a phone. The file is replaced atomically; nothing goes to stdout unless -o -.

    \b
    Example:
        hashdup report -o report.html
    """
    from hashdup import pipeline
    from hashdup.dedup import report as html_report

    if output != "-":  # before any pair is verified
        _check_writable(os.path.dirname(os.path.abspath(output)), "-o")
    options = {"keep": keep, "linkage": linkage, "mirror": mirror, "verify": verify}
    idx = open_index(index_dir)
    try:
        groups = _find_groups(idx, radius, quiet, **options)
        facts = html_report.index_facts(pipeline.info(idx), radius=radius, **options)
    finally:
        idx.close()
    kwargs = {"index_info": facts, "on_problem": lambda p, why: say(quiet, f"hashdup: cannot show {p}: {why}")}
    if output == "-":
        stats = html_report.write(groups, sys.stdout.buffer, **kwargs)
    else:
        stats = html_report.save(groups, output, **kwargs)
    say(quiet, f"hashdup: wrote {'stdout' if output == '-' else output}: {stats.groups} groups, {stats.images} "
                f"images, {stats.duplicates} duplicates, {html_report.human_bytes(stats.reclaimable_bytes)} "
                f"reclaimable" + (f"; {stats.unreadable} images could not be shown" if stats.unreadable else ""))
