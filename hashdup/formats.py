"""Rendering results for stdout: JSON (default), JSON Lines, and aligned tables for people."""

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
    """An aligned text table; list values are joined with commas, numbers right-aligned, every cell made
    :func:`printable`."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return printable(", ".join(map(str, v)) if isinstance(v, list) else str(v))

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float, type(None))) for r in rows)
               and any(isinstance(r.get(c), (int, float)) for r in rows) for c in columns]
    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()
    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out) + "\n"
