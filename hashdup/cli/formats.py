"""Rendering results for stdout: JSON (default), JSON Lines, and tables for people (drawn by rich)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def to_json(data: Any) -> str:
    """Pretty JSON with a trailing newline; non-ASCII kept as is."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def to_jsonl(rows: Sequence[Any]) -> str:
    """One compact JSON object per line."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on or could not show escaped, as in a Python literal:
    control characters (``\\n``, ``\\t``, ``\\x1b``, C1 controls), and the raw bytes of a file name that is not
    valid UTF-8 (kept by Python as lone surrogates, shown as ``\\xNN``). A backslash is doubled only when the
    text holds something escaped, so that ordinary Windows-style names read as they are."""
    def escape(ch: str) -> str:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # surrogateescape: one raw byte
            return f"\\x{o - 0xDC00:02x}"
        if ch in _NAMED:
            return _NAMED[ch]
        if o < 0x20 or 0x7F <= o < 0xA0 or 0xD800 <= o <= 0xDFFF:
            return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"
        return ch

    if all(ch.isprintable() or ch == " " for ch in text) and not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return text
    return "".join("\\\\" if ch == "\\" else escape(ch) for ch in text)


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def to_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A table of ``columns`` for people, drawn by rich: a header underlined, numbers right-aligned, list values
    joined with commas, no cell wrapped or cut (a path stays whole, to be copied), every cell made
    :func:`printable` and shown as plain text (the console reads no markup: a file named ``[b]x.jpg`` stays so)."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return printable(", ".join(map(str, v)) if isinstance(v, list) else str(v))

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="", highlight=False)
    for c in columns:
        numeric = (all(isinstance(r.get(c), (int, float, type(None))) for r in rows)
                   and any(isinstance(r.get(c), (int, float)) for r in rows))
        table.add_column(c, justify="right" if numeric else "left", no_wrap=True)
    for r in rows:
        table.add_row(*(cell(r.get(c, "")) for c in columns))
    out = io.StringIO()
    width = sum(len(c) for c in columns) + sum(max((len(cell(r.get(c, ""))) for r in rows), default=0)
                                               for c in columns) + 4 * len(columns) + 8
    Console(file=out, width=width, color_system=None, force_terminal=False, highlight=False, emoji=False,
            markup=False).print(table)
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())
