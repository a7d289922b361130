"""What the ``hashdup`` commands share: output to stdout, messages to stderr, common options, opening an index."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

FORMATS = ("json", "jsonl", "table")


def write_stdout(text: str) -> None:
    """Write UTF-8 to stdout. Bytes of file names that are not valid UTF-8 (held as surrogate escapes) come out as
    ``\\udcXX``: a valid JSON escape, which ``json.loads`` then ``os.fsencode`` turn back into the original bytes."""
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace"))
    sys.stdout.flush()


def say(ctx_quiet: bool, message: str) -> None:
    if not ctx_quiet:
        click.echo(message, err=True)


def index_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--index", "index_dir", default=".hashdup", show_default=True, envvar="HASHDUP_INDEX",
                        type=click.Path(file_okay=False), help="Index folder (or set HASHDUP_INDEX).")(f)


def quiet_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-q", "--quiet", is_flag=True, help="Print nothing on stderr but errors.")(f)


def format_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--table", "fmt", flag_value="table", help="Aligned text table for people.")(f)
    f = click.option("--jsonl", "fmt", flag_value="jsonl", help="One JSON object per line.")(f)
    return click.option("--json", "fmt", flag_value="json", default=True, help="A JSON array (default).")(f)


def emit(rows: list[dict[str, Any]], fmt: str, columns: list[str],
          table_rows: list[dict[str, Any]] | None = None) -> None:
    """Write ``rows`` as JSON, JSON Lines or a table of ``columns``; ``table_rows``, when given, are what the table
    shows instead (one line per member of a group, say, where a JSON row holds the whole group)."""
    from hashdup.cli import formats

    if fmt == "jsonl":
        write_stdout(formats.to_jsonl(rows))
    elif fmt == "table":
        write_stdout(formats.to_table(rows if table_rows is None else table_rows, columns))
    else:
        write_stdout(formats.to_json(rows))


def open_index(index_dir: str):
    from hashdup import pipeline

    return pipeline.Index(index_dir)


class StageProgress:
    """``progress(stage, done, total)`` drawn on stderr by rich, one bar per stage (``units`` names what a stage
    counts); nothing at all when stderr is not a terminal or with ``--quiet``. Use :meth:`echo` for messages while
    it runs (they print above the bar) and :meth:`close` at the end."""

    def __init__(self, quiet: bool, units: dict[str, str] | None = None) -> None:
        self.quiet = quiet
        self.enabled = not quiet and sys.stderr.isatty()
        self.units = units or {}
        self._bar: Any = None
        self._task: Any = None
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[unit]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
            self._bar.start()
        if stage != self._stage:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(stage, total=total, unit=self.units.get(stage, ""))
            self._stage = stage
        self._bar.update(self._task, completed=done, total=total)

    def echo(self, message: str) -> None:
        """``message`` on stderr (unless quiet), above the bar when one is drawn."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False, emoji=False, soft_wrap=True)
        else:
            click.echo(message, err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
