"""``hashdup index`` and ``hashdup forget``: building the index of a library and taking folders out of it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

import click
from click.core import ParameterSource

from hashdup.cli.common import StageProgress, index_option, quiet_option, say
from hashdup.errors import HashdupError
from hashdup.io.walk import display_path

if TYPE_CHECKING:
    from hashdup.descriptors import DescriptorName
    from hashdup.encoders import EncoderName

ENCODER_NAMES = ["lsh", "median", "pca", "itq", "spectral", "itml", "rbm"]  # hashdup.encoders.ENCODERS, kept
# here so that --help does not import the encoders


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--descriptor", type=click.Choice(["gist", "color", "gist+color"]), default="gist+color",
              show_default=True, help="Image descriptor (GIST and a colour histogram by default: each catches "
                                      "copies the other misses).")
@click.option("--image-size", type=click.IntRange(16, 1024), default=None,
              help="Side of the square image the descriptor sees [default: 128 for gist, 64 for color].")
@click.option("--encoder", type=click.Choice(ENCODER_NAMES), default="lsh", show_default=True,
              help="Binary encoder; itml and rbm learn from --labels, --labels-from-dirs, --pairs or, without them, "
                   "from self-supervised edits.")
@click.option("--bits", "n_bits", type=click.IntRange(8, 1024), default=64, show_default=True, help="Code length.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the encoder.")
@click.option("--hidden", is_flag=True, help="Also index hidden files and folders.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="CSV of path,label rows: class labels for itml / rbm.")
@click.option("--labels-from-dirs", is_flag=True, help="Label each image by the name of its parent folder.")
@click.option("--pairs", type=click.Path(exists=True, dir_okay=False),
              help="CSV of path_a,path_b,similar|dissimilar rows: pair constraints for itml / rbm.")
@click.option("--self-supervised/--no-self-supervised", default=True, show_default=True,
              help="Without labels or pairs, train itml / rbm on synthetic edits of the indexed images.")
@click.option("--edits", "n_edits", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of edited copies for self-supervised training.")
@click.option("--refit", is_flag=True, help="Fit the encoder again on every image; by default an existing index's "
              "encoder is reused (and only new images encoded) while --encoder, --bits, --seed and the supervision "
              "options stay the same.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes that decode and describe images [default: the CPU cores available].")
@click.option("--dask", metavar="ADDRESS", default=None,
              help="Decode and describe on a Dask cluster, e.g. tcp://scheduler:8786 (pip install 'hashdup[dask]'); "
                   "its workers must see the same paths.")
@click.option("--replace", is_flag=True,
              help="Index exactly PATHS: files under the index's other folders leave it (by default PATHS are added).")
@index_option
@quiet_option
def index(paths: tuple[str, ...], descriptor: str, image_size: int | None, encoder: str, n_bits: int, seed: int,
          hidden: bool, labels: str | None, labels_from_dirs: bool, pairs: str | None, self_supervised: bool,
          n_edits: int, index_dir: str, quiet: bool, workers: int | None = None, dask: str | None = None,
          refit: bool = False, replace: bool = False) -> None:
    """Index the images under PATHS (folders, walked recursively, or files), adding them to the index.

    An index is a library that grows: PATHS are added to the folders it already holds, and with no PATHS those are
    scanned again (--replace indexes exactly PATHS; `hashdup forget` removes a folder). Unchanged files (same size
    and modification time) are not read again, new and modified files are added, files no longer found are removed;
    the settings not given (--descriptor, --image-size, --encoder, --bits, --seed) are the index's own. The new index
    replaces the old one atomically; a run that is interrupted resumes where it stopped. Files that cannot be read
    are reported on stderr with a reason and skipped.

    \b
    Example:
        hashdup index ./photos --bits 64
        hashdup index ./more-photos       # added to the same index
        hashdup index                     # scan every folder of the index again
    """
    from hashdup import pipeline
    from hashdup.descriptors import make_descriptor
    from hashdup.supervision import Supervision

    progress = StageProgress(quiet, {"describing": "images", "editing": "edits", "hashing": "files",
                                     "training": "steps"})

    def problem(path: str, reason: str) -> None:
        progress.echo(f"hashdup: skipped {path}: {reason}")

    params: dict[str, Any] = {"image_size": image_size} if image_size else {}
    if replace and not paths:
        raise click.UsageError("--replace needs the PATHS to index")
    previous = _previous_settings(index_dir)
    if not paths and previous is None:
        raise click.UsageError(f"no index at {index_dir} yet: give the folders to index")
    if previous is not None:  # what is not given is the index's own, so that a rescan changes nothing else
        ctx = click.get_current_context()
        given = {name for name in ("descriptor", "image_size", "encoder", "n_bits", "seed", "labels",
                                   "labels_from_dirs", "pairs", "self_supervised", "n_edits")
                 if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
        if not given & {"descriptor", "image_size"}:
            descriptor, params = previous["descriptor"]["name"], dict(previous["descriptor"].get("params") or {})
        if "encoder" not in given:
            encoder = previous["encoder"]["name"]
        if "n_bits" not in given:
            n_bits = int(previous["encoder"]["n_bits"])
        if "seed" not in given:
            seed = int((previous["encoder"].get("params") or {}).get("random_state", seed))
        stored = previous.get("supervision") or {}
        if stored and not given & {"labels", "labels_from_dirs", "pairs", "self_supervised", "n_edits"}:
            labels, pairs = stored.get("labels"), stored.get("pairs")
            labels_from_dirs = bool(stored.get("labels_from_dirs"))
            self_supervised, n_edits = bool(stored.get("self_supervised", True)), int(stored.get("n_edits", n_edits))
    try:
        desc = make_descriptor(descriptor, **params)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--image-size") from e
    from hashdup.encoders import make_encoder

    try:  # every option checked before the first image is read
        make_encoder(encoder, n_bits=n_bits).check_n_features(desc.n_features)
    except ValueError as e:
        raise click.BadParameter(f"{e} (--descriptor {descriptor})", param_hint="--bits") from e
    try:
        sup = Supervision(labels=labels, labels_from_dirs=labels_from_dirs, pairs=pairs,
                          self_supervised=self_supervised, n_edits=n_edits)
    except ValueError as e:
        raise click.UsageError("give at most one of --labels, --labels-from-dirs and --pairs") from e
    try:
        # names from click.Choice or from the index itself, and make_descriptor / make_encoder accepted them above
        s = pipeline.build_index(paths, index_dir, descriptor=cast("DescriptorName", descriptor),
                                 descriptor_params=params, encoder=cast("EncoderName", encoder), n_bits=n_bits,
                                 seed=seed, hidden=hidden, supervision=sup, progress=progress, on_problem=problem,
                                 workers=workers, dask=dask, refit=refit, replace=replace)
    finally:
        progress.close()
    rate = s.files / s.seconds if s.seconds else 0.0
    if s.stale_lock:
        say(quiet, f"hashdup: took over the lock left by an interrupted run ({s.stale_lock})")
    if s.rebuild:
        say(quiet, f"hashdup: nothing reused from the previous index: {s.rebuild}")
    say(quiet, f"hashdup: indexed {s.indexed} of {s.files} image files into {s.index} in {s.seconds:.1f} s "
                f"({rate:.0f} files/s): {s.added} added, {s.updated} updated, {s.removed} removed, {s.unchanged} "
                f"unchanged ({s.decoded} decoded" + (f", {s.rehashed} hashed to confirm" if s.rehashed else "")
                + (f", {s.resumed} resumed from an interrupted run" if s.resumed else "")
                + f"); {len(s.skipped)} skipped, {s.exact_duplicates} exact duplicates, "
                f"{s.ignored} non-image files ignored" + (f", {s.links} links to files already seen" if s.links else "")
                + ("; encoder reused (--refit to fit it again)" if s.encoder_reused
                   else f"; {encoder} fitted" + (f" because {s.refit}" if s.refit and not s.rebuild else ""))
                + (f", trained on {s.training}" if s.training != "unsupervised" else "")
                + "; folders: " + ", ".join(display_path(p) + (" (new)" if p in s.new_paths and len(s.paths) > 1
                                                               else "") for p in s.paths))


def _previous_settings(index_dir: str) -> dict[str, Any] | None:
    """The manifest of the index in ``index_dir``, or None when there is none (or it cannot be read)."""
    from hashdup.io.store import read_manifest

    try:
        m = read_manifest(index_dir)
        m["descriptor"]["name"], m["encoder"]["name"], m["encoder"]["n_bits"]  # the fields used must be there
    except (HashdupError, OSError, KeyError, TypeError):
        return None
    return m


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@index_option
@quiet_option
def forget(paths: tuple[str, ...], index_dir: str, quiet: bool) -> None:
    """Remove folders (or files) from the index: their images leave it, the files themselves are not touched.

    Each of PATHS must be one the index was given (`hashdup info` lists them as "paths"). The others are scanned
    again, as by `hashdup index` with no PATHS, and the index keeps its settings.

    \b
    Example:
        hashdup forget ./old-photos
    """
    from hashdup.indexing import library_paths

    previous = _previous_settings(index_dir)
    if previous is None:
        raise click.UsageError(f"no index at {index_dir}")
    held = [os.fsdecode(p) for p in (previous.get("paths") or previous.get("roots") or [])]
    gone = [os.path.abspath(p) for p in paths]
    unknown = [p for p in gone if p not in held]
    if unknown:
        raise click.BadParameter(f"{unknown[0]} is not one of the index's paths ({', '.join(map(display_path, held))})",
                                 param_hint="PATHS")
    keep = [p for p in held if p not in gone]
    if not keep:
        raise click.UsageError("that would leave the index empty; delete its folder instead")
    missing = [p for p in keep if not os.path.lexists(p)]
    if missing:
        raise click.UsageError(f"{missing[0]} is missing too; forget it as well, or reconnect it")
    library_paths(index_dir, keep, replace=True)
    ctx = click.get_current_context()
    ctx.invoke(index, paths=tuple(keep), replace=True, index_dir=index_dir, quiet=quiet)
