"""Every relative Markdown link of README.md and docs/*.md leads to a file that exists and, when it has a ``#anchor``,
to a heading of that file (GitHub's anchors: the heading's text lower-cased, punctuation other than ``-`` and ``_``
dropped, spaces turned into ``-``, ``-1``, ``-2`` ... added to repeated ones). Links inside code are not links."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]

LINK = re.compile(r"(?<!\\)!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of the lines outside fenced and indented code blocks, code spans blanked."""
    out: list[tuple[int, str]] = []
    fenced = code = False
    prev_blank = True
    for n, line in enumerate(text.splitlines(), start=1):
        blank = not line.strip()
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and not blank:
            # An indented code block starts after a blank line (an indented line right after text continues it).
            code = line.startswith("    ") and (prev_blank or code)
            if not code:
                out.append((n, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)))
        prev_blank = blank
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced or line.startswith("    ") else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            k = seen.get(base, 0)
            seen[base] = k + 1
            out.add(base if k == 0 else f"{base}-{k}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """``(line number, target)`` of every link and image of a page, leaving out web and mail addresses."""
    out = []
    for n, line in prose_lines(path.read_text()):
        for m in LINK.finditer(line):
            target = m.group(1)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("//"):
                out.append((n, target))
    return out


def broken(page: Path) -> list[str]:
    problems = []
    for n, target in links(page):
        where = f"{page.relative_to(REPO)}:{n}: ({target})"
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not dest.exists():
            problems.append(f"{where}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(REPO)}")
    return problems


def test_slugs_follow_github():
    assert slug("`hashdup index`") == "hashdup-index"
    assert slug("Readers during a write, and the lock") == "readers-during-a-write-and-the-lock"
    assert slug("100,000 images (`bench/scale.py`)") == "100000-images-benchscalepy"
    assert slug("How pairs are decided: two stages") == "how-pairs-are-decided-two-stages"
    assert slug("snake_case and kebab-case") == "snake_case-and-kebab-case"


def test_the_checker_finds_broken_links(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section, here\n")
    page.write_text("# Page\n\n[ok](other.md#a-section-here) [self](#page) [web](https://example.org/x)\n"
                    "[gone](missing.md) [bad anchor](other.md#nowhere) `[code](missing2.md)`\n\n"
                    "    [indented code](missing3.md)\n\n```\n[fenced](missing4.md)\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert [p.split(": ", 1)[1] for p in broken(page)] == ["(missing.md): no file missing.md",
                                                          "(other.md#nowhere): no heading #nowhere in other.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_lead_somewhere(page: Path):
    problems = broken(page)
    assert not problems, "\n".join(problems)


def test_the_readme_links_every_docs_page():
    linked = {(REPO / t.partition("#")[0]).resolve() for _, t in links(REPO / "README.md") if t.partition("#")[0]}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md does not link to docs/{', docs/'.join(missing)}"
    assert (REPO / "bench" / "RESULTS.md").resolve() in linked

