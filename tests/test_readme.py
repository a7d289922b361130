"""The README's examples, run: every ``$ `` command of its code blocks, in order, in a fresh folder holding a copy of
sample_data/, its output compared with the lines the README shows under it, so that the README cannot drift from
the program.

Comparison: lines starting with ``hashdup:`` are what stderr must print, the others what stdout must print, each in
order; a line ``...`` stands for any number of lines; run times and rates are masked (``0.8 s`` → ``<t> s``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MASKS = [(re.compile(r"\b\d+(\.\d+)? s\b"), "<t> s"), (re.compile(r"\(\d+(\.\d+)? files/s\)"), "(<r> files/s)")]


def examples(text: str) -> list[tuple[int, str, list[str]]]:
    """``(line number, command, expected output lines)`` of every ``$ `` line of the README's indented blocks."""
    out: list[tuple[int, str, list[str]]] = []
    current: list[str] | None = None
    indent = 0
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("$ ") and line.startswith("    "):
            indent = len(line) - len(line.lstrip())
            current = []
            out.append((n, stripped[2:], current))
        elif current is not None and stripped and line.startswith(" " * indent) and not line.startswith("```"):
            current.append(line[indent:].rstrip())
        else:
            current = None
    return out


def mask(line: str) -> str:
    for pattern, repl in MASKS:
        line = pattern.sub(repl, line)
    return line.rstrip()


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` is ``expected`` with each ``...`` line standing for any run of lines."""
    parts: list[list[str]] = [[]]
    for line in expected:
        if line.strip() == "...":
            parts.append([])
        else:
            parts[-1].append(mask(line))
    actual = [mask(x) for x in actual]
    if len(parts) == 1:
        return actual == parts[0]
    first, *middle, last = parts
    if actual[: len(first)] != first or (last and actual[len(actual) - len(last):] != last):
        return False
    pos, end = len(first), len(actual) - len(last)
    for part in middle:
        while pos + len(part) <= end and actual[pos : pos + len(part)] != part:
            pos += 1
        if pos + len(part) > end:
            return False
        pos += len(part)
    return pos <= end


def test_the_matcher_can_fail():
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"]) and not matches(["a", "...", "d"], ["a", "b"])
    assert matches(["in 0.8 s"], ["in 12.25 s"]) and not matches(["x"], ["x", "y"])
    assert not matches(["a", "...", "c", "...", "e"], ["a", "e", "c"])


def test_readme_examples_print_what_the_readme_shows(tmp_path):
    """(Commands that pipe into ``jq`` are run only where jq is installed; .ci/run installs it.)"""
    shutil.copytree(REPO / "sample_data", tmp_path / "sample_data")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "COLUMNS": "120"}
    found = examples(README.read_text())
    assert len(found) >= 8  # the tour: index, query, dedup, actions, undo, report, info
    wrong = []
    jq = shutil.which("jq") is not None
    for line_no, command, expected in found:
        if "| jq" in command and not jq:
            continue
        res = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        want_err = [x for x in expected if x.startswith("hashdup:")]
        want_out = [x for x in expected if not x.startswith("hashdup:")]
        got_err = [x for x in res.stderr.splitlines() if x.strip()]
        got_out = [x for x in res.stdout.splitlines() if x.strip()]
        if not (matches(want_err, got_err) and matches(want_out, got_out)):
            wrong.append(f"README.md:{line_no}: $ {command}\n--- stdout\n{res.stdout}--- stderr\n{res.stderr}")
    assert not wrong, "\n\n".join(wrong)
