"""The ``hashdup`` command line: option parsing and printing only; the work is in :mod:`hashdup.pipeline`.

stdout carries data (JSON by default); progress, per-file problems and summaries go to stderr. Exit status: 0 ok,
1 error (including any query image that could not be read), 2 usage.
"""

from __future__ import annotations

import os
import sys

import click

from hashdup import __version__
from hashdup.cli.dedup_commands import dedup, report, undo
from hashdup.cli.index_commands import ENCODER_NAMES, forget, index
from hashdup.cli.search_commands import eval_, info, query
from hashdup.errors import HashdupError


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


for _command in (index, forget, query, info, eval_, dedup, undo, report):
    cli.add_command(_command)

__all__ = ["ENCODER_NAMES", "cli", "main"]


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
