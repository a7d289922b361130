"""``hashdup query``, ``hashdup info`` and ``hashdup eval``: searching an index, describing it, and measuring
encoders."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from hashdup.cli.common import emit, format_options, index_option, open_index, quiet_option, say, write_stdout
from hashdup.cli.index_commands import ENCODER_NAMES
from hashdup.errors import HashdupError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


@click.command()
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
    idx = open_index(index_dir)
    try:
        rows, failed = pipeline.query(idx, list(images), k=k, radius=radius, approx=approx, probes=probes,
                                      on_problem=lambda p, r: click.echo(f"hashdup: cannot read {p}: {r}", err=True))
    finally:
        idx.close()
    stale = [r for r in rows if "stale" in r]
    emit(rows, fmt, ["query", "rank", "distance", "path"],
          [{**r, "path": r["path"] + f"  [{r['stale']}]"} if "stale" in r else r for r in rows])
    if stale:
        click.echo(f"hashdup: warning: {len(stale)} result{'s' if len(stale) > 1 else ''} vanished or changed "
                   "since indexing (e.g. "
                   f"{stale[0]['path']}: {stale[0]['stale']}); run `hashdup index` to refresh", err=True)
    if failed:
        sys.exit(1)


@click.command()
@index_option
def info(index_dir: str) -> None:
    """Describe the index: counts, descriptor, encoder, sizes on disk, skipped files (JSON).

    \b
    Example:
        hashdup info | jq .skipped
    """
    from hashdup import pipeline
    from hashdup.cli import formats

    idx = open_index(index_dir)
    try:
        write_stdout(formats.to_json(pipeline.info(idx)))
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


@click.command(name="eval")
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
@click.option("--no-kdtree", is_flag=True, help="Skip the kd-tree row: the same exact ranking from a kd-tree, with "
              "its build time (fit_s) and query time (encode_s).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write precision-recall curves to this PNG "
              "(needs the plot extra: pip install 'hashdup[plot]').")
@format_options
@index_option
@quiet_option
def eval_(features: str | None, labels: str | None, labels_from_dirs: bool, encoders: list[str], bits_list: list[int],
          n_queries: int, n_train: int | None, seed: int, no_euclidean: bool, no_kdtree: bool, plot: str | None,
          fmt: str, index_dir: str, quiet: bool) -> None:
    """Measure encoders the way the hashing papers do: mAP, precision within radius 2, precision@100.

    A random set of queries (seeded) is searched in the rest (the database) on which the encoders are trained; an
    item is relevant when its label equals the query's. Two exact float references come first: `euclidean`, a
    linear scan, and `kdtree`, a kd-tree giving the same ranking (fit_s is its build time, encode_s the query time).

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
    X: NDArray[np.floating]  # float64 from a features file, float32 from an index
    if features:
        X, y = evaluation.load_features(features)
    elif labels or labels_from_dirs:
        from hashdup import pipeline

        idx = open_index(index_dir)
        try:
            X, y = pipeline.labelled_descriptors(idx, labels=labels, from_dirs=labels_from_dirs)
        finally:
            idx.close()
    else:
        raise click.UsageError("eval needs labels: --features FILE.npz, or an index with --labels or "
                               "--labels-from-dirs")
    for b in bits_list:
        if not 8 <= b <= 1024:
            raise click.BadParameter(f"code lengths must be between 8 and 1024, got {b}", param_hint="--bits")
    if not n_queries < len(X):
        raise click.BadParameter(f"must be smaller than the {len(X)} labelled items", param_hint="--queries")

    def report(r: evaluation.Result) -> None:
        say(quiet, f"hashdup: {r.encoder} {r.bits} bits: mAP {r.map:.4f} (fit {r.fit_s:.1f} s)")

    try:
        results = evaluation.evaluate(X, y, encoders, bits_list, n_queries=n_queries, n_train=n_train, seed=seed,
                                      euclidean=not no_euclidean, kdtree=not no_kdtree, on_result=report)
    except ValueError as e:
        raise HashdupError(str(e)) from e
    emit([r.as_dict() for r in results], fmt, ["encoder", "bits", "map", "p_at_r2", "p_at_100", "fit_s", "encode_s"])
    if plot:
        evaluation.plot_pr(results, plot)
