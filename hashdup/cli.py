"""The ``hashdup`` command line: option parsing and printing only; the work is in :mod:`hashdup.pipeline`.

stdout carries data (JSON by default); progress, per-file problems and summaries go to stderr. Exit status: 0 ok,
1 error (including any query image that could not be read), 2 usage.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from hashdup import __version__
from hashdup._cli_common import _emit, _open, _say, _write, format_options, index_option, quiet_option
from hashdup.cli_dedup import dedup, report, undo
from hashdup.errors import HashdupError
from hashdup.io.walk import display_path

ENCODER_NAMES = ["lsh", "median", "pca", "itq", "spectral", "itml", "rbm"]  # hashdup.encoders.ENCODERS, kept
# here so that --help does not import the encoders


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hashdup")
def cli() -> None:
    """Find duplicate and similar images with compact binary codes.

    \b
    hashdup index ./photos            describe every image, fit an encoder, write codes
    hashdup query img.jpg -k 12       the 12 most similar indexed images, as JSON
    hashdup dedup                     groups of near-duplicates, as JSON
    hashdup report -o report.html     the groups as one HTML page with thumbnails
    hashdup info                      what the index holds
    """


@cli.command()
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

    bar = None
    show_bar = not quiet and sys.stderr.isatty()

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal bar
        if not show_bar:
            return
        if bar is None or bar.desc != stage:
            from tqdm import tqdm

            if bar is not None:
                bar.close()
            unit = {"describing": "img", "editing": "edit", "hashing": "file"}.get(stage, "step")
            bar = tqdm(total=total, unit=unit, desc=stage, file=sys.stderr, leave=False, dynamic_ncols=True)
        bar.update(done - bar.n)

    def problem(path: str, reason: str) -> None:
        if not quiet:
            (bar.write if bar is not None else lambda m: click.echo(m, err=True))(f"hashdup: skipped {path}: {reason}")

    params: dict[str, Any] = {"image_size": image_size} if image_size else {}
    if replace and not paths:
        raise click.UsageError("--replace needs the PATHS to index")
    previous = _previous_settings(index_dir)
    if not paths and previous is None:
        raise click.UsageError(f"no index at {index_dir} yet: give the folders to index")
    if previous is not None:  # what is not given is the index's own, so that a rescan changes nothing else
        ctx = click.get_current_context()
        given = {name for name in ("descriptor", "image_size", "encoder", "n_bits", "seed", "labels", "labels_from_dirs",
                                   "pairs", "self_supervised", "n_edits")
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
            labels, labels_from_dirs, pairs = stored.get("labels"), bool(stored.get("labels_from_dirs")), stored.get("pairs")
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
        s = pipeline.build_index(paths, index_dir, descriptor=descriptor, descriptor_params=params, encoder=encoder,
                                 n_bits=n_bits, seed=seed, hidden=hidden, supervision=sup, progress=progress,
                                 on_problem=problem, workers=workers, dask=dask, refit=refit, replace=replace)
    finally:
        if bar is not None:
            bar.close()
    rate = s.files / s.seconds if s.seconds else 0.0
    if s.stale_lock:
        _say(quiet, f"hashdup: took over the lock left by an interrupted run ({s.stale_lock})")
    if s.rebuild:
        _say(quiet, f"hashdup: nothing reused from the previous index: {s.rebuild}")
    _say(quiet, f"hashdup: indexed {s.indexed} of {s.files} image files into {s.index} in {s.seconds:.1f} s "
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
    from hashdup.errors import HashdupError
    from hashdup.io.store import read_manifest

    try:
        m = read_manifest(index_dir)
        m["descriptor"]["name"], m["encoder"]["name"], m["encoder"]["n_bits"]  # the fields used must be there
    except (HashdupError, OSError, KeyError, TypeError):
        return None
    return m


@cli.command()
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


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-k", "k", type=click.IntRange(min=1), default=None,
              help="Number of results per query [default: 12; all matches with --radius].")
@click.option("--radius", type=click.IntRange(min=0), default=None,
              help="Return every image within this Hamming distance (inclusive).")
@click.option("--approx", is_flag=True, help="Search the LSH bucket tables instead of every code: faster on large "
              "indexes, may miss far neighbours.")
@click.option("--probes", type=click.IntRange(0, 3), default=1, show_default=True,
              help="With --approx: also probe buckets whose keys differ in up to this many bits.")
@format_options
@index_option
@quiet_option
def query(images: tuple[str, ...], k: int | None, radius: int | None, approx: bool, probes: int, fmt: str,
          index_dir: str, quiet: bool) -> None:
    """Find the indexed images most similar to each of IMAGES.

    The query images need not be in the index; an indexed query is left out of its own results. Rows are ordered
    by query, distance, path.

    \b
    Example:
        hashdup query holiday.jpg -k 5
        hashdup query holiday.jpg --radius 6 --jsonl | jq -r .path
        hashdup query holiday.jpg -k 5 --approx
    """
    from hashdup import pipeline

    if k is None and radius is None:
        k = 12
    idx = _open(index_dir)
    try:
        rows, failed = pipeline.query(idx, list(images), k=k, radius=radius, approx=approx, probes=probes,
                                      on_problem=lambda p, r: click.echo(f"hashdup: cannot read {p}: {r}", err=True))
    finally:
        idx.close()
    stale = [r for r in rows if "stale" in r]
    _emit(rows, fmt, ["query", "rank", "distance", "path"],
          [{**r, "path": r["path"] + f"  [{r['stale']}]"} if "stale" in r else r for r in rows])
    if stale:
        click.echo(f"hashdup: warning: {len(stale)} result{'s' if len(stale) > 1 else ''} vanished or changed "
                   "since indexing (e.g. "
                   f"{stale[0]['path']}: {stale[0]['stale']}); run `hashdup index` to refresh", err=True)
    if failed:
        sys.exit(1)


@cli.command()
@index_option
def info(index_dir: str) -> None:
    """Describe the index: counts, descriptor, encoder, sizes on disk, skipped files (JSON).

    \b
    Example:
        hashdup info | jq .skipped
    """
    from hashdup import formats, pipeline

    idx = _open(index_dir)
    try:
        _write(formats.to_json(pipeline.info(idx)))
    finally:
        idx.close()


def _csv_list(kind: type, choices: list[str] | None = None) -> Callable[[click.Context, click.Parameter, str], list]:
    def convert(ctx: click.Context, param: click.Parameter, value: str) -> list:
        try:
            items = [kind(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None
        if not items:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}")
        bad = [v for v in items if choices is not None and v not in choices]
        if bad:
            raise click.BadParameter(f"{', '.join(map(str, bad))}: choose from {', '.join(choices or [])}")
        return items
    return convert


@cli.command(name="eval")
@click.option("--features", type=click.Path(exists=True, dir_okay=False),
              help="An .npz file holding X (n, d) float and y (n,) int; without it, the index's descriptors.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), help="With an index: CSV of path,label rows.")
@click.option("--labels-from-dirs", is_flag=True, help="With an index: label images by their parent folder.")
@click.option("--encoder", "encoders", default="lsh,pca,itq,spectral", show_default=True,
              callback=_csv_list(str, ENCODER_NAMES), help="Comma-separated encoders to measure.")
@click.option("--bits", "bits_list", default="16,32,64", show_default=True, callback=_csv_list(int),
              help="Comma-separated code lengths.")
@click.option("--queries", "n_queries", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Random queries; the rest is the database.")
@click.option("--train", "n_train", type=click.IntRange(min=1), default=None,
              help="Train on this many database items [default: all].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of the encoders.")
@click.option("--no-euclidean", is_flag=True, help="Skip the exact Euclidean ranking (the float reference).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write precision-recall curves to this PNG "
              "(needs the plot extra: pip install 'hashdup[plot]').")
@format_options
@index_option
@quiet_option
def eval_(features: str | None, labels: str | None, labels_from_dirs: bool, encoders: list[str], bits_list: list[int],
          n_queries: int, n_train: int | None, seed: int, no_euclidean: bool, plot: str | None, fmt: str,
          index_dir: str, quiet: bool) -> None:
    """Measure encoders the way the hashing papers do: mAP, precision within radius 2, precision@100.

    A random set of queries (seeded) is searched in the rest (the database) on which the encoders are trained; an
    item is relevant when its label equals the query's.

    \b
    Example:
        hashdup eval --features mnist.npz --encoder lsh,pca,itq,spectral,itml,rbm --bits 16,32,64 --table
        hashdup eval --labels-from-dirs --encoder lsh,itml --bits 64
    """
    from hashdup import evaluation

    if features and (labels or labels_from_dirs):
        raise click.UsageError("--features holds its own labels; --labels and --labels-from-dirs go with an index")
    if bool(labels) and labels_from_dirs:
        raise click.UsageError("give --labels or --labels-from-dirs, not both")
    if plot and not os.access(os.path.dirname(os.path.abspath(plot)), os.W_OK):
        raise click.BadParameter(f"cannot write to the folder of {plot}", param_hint="--plot")
    if features:
        X, y = evaluation.load_features(features)
    elif labels or labels_from_dirs:
        from hashdup import pipeline

        idx = _open(index_dir)
        try:
            X, y = pipeline.labelled_descriptors(idx, labels=labels, from_dirs=labels_from_dirs)
        finally:
            idx.close()
    else:
        raise click.UsageError("eval needs labels: --features FILE.npz, or an index with --labels or --labels-from-dirs")
    for b in bits_list:
        if not 8 <= b <= 1024:
            raise click.BadParameter(f"code lengths must be between 8 and 1024, got {b}", param_hint="--bits")
    if not n_queries < len(X):
        raise click.BadParameter(f"must be smaller than the {len(X)} labelled items", param_hint="--queries")

    def report(r: "evaluation.Result") -> None:
        _say(quiet, f"hashdup: {r.encoder} {r.bits} bits: mAP {r.map:.4f} (fit {r.fit_s:.1f} s)")

    try:
        results = evaluation.evaluate(X, y, encoders, bits_list, n_queries=n_queries, n_train=n_train, seed=seed,
                                      euclidean=not no_euclidean, on_result=report)
    except ValueError as e:
        raise HashdupError(str(e)) from e
    _emit([r.as_dict() for r in results], fmt, ["encoder", "bits", "map", "p_at_r2", "p_at_100", "fit_s", "encode_s"])
    if plot:
        evaluation.plot_pr(results, plot)


for _command in (dedup, undo, report):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hashdup`` console script: maps hashdup's errors to exit status 1."""
    try:
        cli.main(args=argv, prog_name="hashdup", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("hashdup: aborted", err=True)
        sys.exit(130)
    except HashdupError as e:
        click.echo(f"hashdup: error: {e}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as e:  # writing the index: permissions, a full disk, a path that is a file
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"hashdup: error: {e.strerror or e}{where}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
