"""The examples of README.md and of docs/*.md, run: every ``$ `` command of their indented blocks, in order, in a
fresh folder per page holding a copy of sample_data/, its output compared with the lines the page shows under it, so
that the pages cannot drift from the program.

Each example is its own test (``README.md:38``, ``docs/commands.md:120``). A page's examples share one folder and
run in the page's order, since later ones use what earlier ones made (the index, a manifest); a test run alone, or
out of order, first replays the page's earlier examples in a fresh folder.

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
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MASKS = [(re.compile(r"\b\d+(\.\d+)? s\b"), "<t> s"), (re.compile(r"\(\d+(\.\d+)? files/s\)"), "(<r> files/s)")]
README_MAX_BYTES = 15_000
HAVE_JQ = shutil.which("jq") is not None


def examples(text: str) -> list[tuple[int, str, list[str]]]:
    """``(line number, command, expected output lines)`` of every ``$ `` line of a page's indented blocks."""
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


def name(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


class Workspace:
    """A page's folder: a copy of sample_data/ in which the page's examples run, in order, each once."""

    def __init__(self, base: Path):
        self.cwd = base / "work"
        shutil.copytree(REPO / "sample_data", self.cwd / "sample_data")
        # Its own desktop trash (a `delete` example never reaches the user's), and no index but the page's own.
        env = {k: v for k, v in os.environ.items() if k != "HASHDUP_INDEX"}
        self.env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "COLUMNS": "120", "XDG_DATA_HOME": str(base / "xdg-data")}
        self.done = 0  # how many of the page's examples have run here

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run one example's command. Without jq, the part before ``| jq`` runs, for what it changes."""
        if "| jq" in command and not HAVE_JQ:
            command = command.split("| jq", 1)[0]
        return subprocess.run(command, shell=True, cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=600)


@pytest.fixture(scope="session")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Workspace]:
    return {}


def _cases() -> list:
    return [pytest.param(page, i, id=f"{name(page)}:{line_no}")
            for page in PAGES for i, (line_no, _, _) in enumerate(examples(page.read_text()))]


def test_the_matcher_can_fail():
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"]) and not matches(["a", "...", "d"], ["a", "b"])
    assert matches(["in 0.8 s"], ["in 12.25 s"]) and not matches(["x"], ["x", "y"])
    assert not matches(["a", "...", "c", "...", "e"], ["a", "e", "c"])


def test_the_parser_finds_nested_and_consecutive_examples():
    text = ("x\n\n    $ a\n    out\n    hashdup: err\n\n- item\n\n      $ b\n      $ c\n      more\n\n"
            "    not a command\n")
    assert examples(text) == [(3, "a", ["out", "hashdup: err"]), (9, "b", []), (10, "c", ["more"])]


def test_the_readme_is_the_front_door():
    """At most 15 KB; it opens with the two set-up commands; its tour runs every main command once."""
    text = README.read_text()
    assert len(text.encode()) <= README_MAX_BYTES, f"README.md is {len(text.encode())} bytes"
    lines = text.splitlines()
    first = next(i for i, x in enumerate(lines) if x.startswith("    "))
    assert [x.split("#")[0].strip() for x in lines[first : first + 2]] == ["make demo", "make test"]
    assert "##" not in "".join(lines[:first]), "the set-up commands come before any section"
    commands = [command for _, command, _ in examples(text)]
    for needed in ("hashdup index", "hashdup query", "hashdup dedup", "hashdup dedup --action", "hashdup undo",
                   "hashdup report", "hashdup info"):
        assert any(c.startswith(needed) for c in commands), f"the README's tour has no `$ {needed}` example"


def test_every_page_with_examples_is_run():
    """The examples moved from the README to docs/ are still run."""
    assert len(examples(README.read_text())) >= 8
    assert len(examples((REPO / "docs" / "commands.md").read_text())) >= 8


@pytest.mark.parametrize(("page", "i"), _cases())
def test_example_prints_what_the_page_shows(page: Path, i: int, workspaces: dict[Path, Workspace],
                                            tmp_path_factory: pytest.TempPathFactory):
    """(Commands that pipe into ``jq`` are compared only where jq is installed; .ci/run installs it.)"""
    found = examples(page.read_text())
    line_no, command, expected = found[i]
    ws = workspaces.get(page)
    if ws is None or ws.done > i:
        ws = workspaces[page] = Workspace(tmp_path_factory.mktemp(name(page).replace("/", "-")))
    while ws.done < i:  # this page's earlier examples, when they did not run just before
        ws.run(found[ws.done][1])
        ws.done += 1
    res = ws.run(command)
    ws.done = i + 1
    if "| jq" in command and not HAVE_JQ:
        pytest.skip("jq is not installed")
    want_err = [x for x in expected if x.startswith("hashdup:")]
    want_out = [x for x in expected if not x.startswith("hashdup:")]
    got_err = [x for x in res.stderr.splitlines() if x.strip()]
    got_out = [x for x in res.stdout.splitlines() if x.strip()]
    assert matches(want_err, got_err) and matches(want_out, got_out), (
        f"{name(page)}:{line_no}: $ {command}\n--- stdout\n{res.stdout}--- stderr\n{res.stderr}")
