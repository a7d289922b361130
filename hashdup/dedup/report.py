"""``hashdup report``: one self-contained HTML page of the near-duplicate groups.

The page has no external resources: the CSS is inline and every thumbnail is a base64 JPEG ``data:`` URI made by
:func:`hashdup.io.thumbnails.thumbnail`. It is written as it is made (:func:`iter_html` yields one member at a time), so
only one thumbnail is in memory at any moment whatever the number of groups. A file that has gone or cannot be
decoded gets a placeholder with the reason.

Every piece of text that comes from the file system (paths, formats, reasons) is untrusted: it goes through
:func:`text`, which shows the bytes of a non-UTF-8 name (held as surrogate escapes) as ``\\xNN``, shows control and
bidirectional-override characters as escapes, and then escapes HTML.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from hashdup.dedup import Group, Member

DEFAULT_TITLE = "hashdup: duplicate images"
DEFAULT_OUTPUT = "hashdup-report.html"

#: How a member was linked to its group, in words (see :class:`hashdup.dedup.Member`).
MATCH_WORDS = {
    "keeper": "keeper",
    "identical": "byte-identical file",
    "code": "close binary code",
    "metric": "close under the learned metric",
    "geometric": "local features agree",
}

# C0 and C1 controls, and the bidirectional embedding/override/isolate characters that can make a name read as
# another one (U+202A–U+202E, U+2066–U+2069), plus the line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@dataclass
class ReportStats:
    """What a report holds: groups, images, duplicates (images that are not keepers), the bytes their removal would
    free, and how many thumbnails were made and how many files could not be shown."""

    groups: int = 0
    images: int = 0
    duplicates: int = 0
    reclaimable_bytes: int = 0
    thumbnails: int = 0
    unreadable: int = 0


def text(value: object) -> str:
    """Untrusted text as safe HTML: valid UTF-8, controls visible as escapes, ``<>&"'`` escaped.

    A file name that is not valid UTF-8 reaches Python as surrogate escapes (``\\udcff``); its raw bytes are shown
    as ``\\xff``. Any other lone surrogate is shown as ``\\udXXX``.
    """
    s = str(value)
    try:
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    s = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)
    return html.escape(s, quote=True)


def human_bytes(n: int) -> str:
    """A byte count in binary units: ``"812 B"``, ``"1.5 KiB"``, ``"23.4 MiB"``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    return f"{n} B"  # pragma: no cover - unreachable


def summarize(groups: Sequence[Group]) -> ReportStats:
    """Counts over the groups (see :class:`ReportStats`); thumbnails are counted while the page is made."""
    return ReportStats(groups=len(groups), images=sum(len(g.members) for g in groups),
                       duplicates=sum(len(g.duplicates) for g in groups),
                       reclaimable_bytes=sum(m.facts.size for g in groups for m in g.duplicates))


def index_facts(info: dict[str, Any], **settings: Any) -> dict[str, str]:
    """The lines of the page header that describe the index, from :func:`hashdup.pipeline.info` and the dedup
    settings (``radius=3, keep="resolution"``, ...)."""
    enc, desc = info.get("encoder", {}), info.get("descriptor", {})
    facts = {"index": str(info.get("index", "")), "indexed images": str(info.get("indexed", "")),
             "codes": f"{enc.get('n_bits', '?')}-bit {enc.get('name', '?')} on {desc.get('name', '?')}"}
    if info.get("errors"):
        facts["unreadable when indexed"] = str(info["errors"])
    facts.update({k.replace("_", " "): str(v) for k, v in settings.items() if v is not None})
    return facts


_CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;padding:12px;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:#1b1b1b;background:#f3f3f1}
header,main,footer{max-width:1400px;margin:0 auto}
h1{font-size:1.45rem;margin:.2em 0 .5em;overflow-wrap:anywhere}
.totals{display:grid;grid-template-columns:repeat(auto-fit,minmax(9.5rem,1fr));gap:8px;margin:0 0 10px}
.totals div{background:#fff;border-radius:8px;padding:8px 12px}
.totals dt{font-size:.85rem;color:#555}
.totals dd{margin:0;font-size:1.3rem;font-weight:600}
.meta{display:flex;flex-wrap:wrap;gap:2px 16px;margin:0;font-size:.9rem;color:#444}
.meta div{overflow-wrap:anywhere;min-width:0}
.meta dt{display:inline;color:#666}.meta dd{display:inline;margin:0 0 0 .3em}
.group{background:#fff;border-radius:10px;padding:12px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.15)}
.group h2{font-size:1.15rem;margin:0 0 10px}
.group h2 small{font-weight:400;color:#555;font-size:.9rem;white-space:nowrap}
.members{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,THUMBpx),1fr));gap:12px}
.member{margin:0;min-width:0;border:2px solid #d4d4d4;border-radius:8px;padding:8px}
.member.keeper{border:4px solid #1a7f37;background:#f0faf2}
.thumb{display:flex;align-items:center;justify-content:center;height:THUMBpx;background:#e6e6e6;border-radius:4px;
overflow:hidden}
.thumb img{display:block;max-width:100%;max-height:100%;width:auto;height:auto}
.thumb.missing{color:#8a1c1c;font-size:.9rem;padding:10px;text-align:center;overflow-wrap:anywhere}
.badge{display:inline-block;font-size:.8rem;font-weight:700;letter-spacing:.04em;padding:2px 9px;border-radius:999px;
margin:8px 0 2px}
.badge-keep{background:#1a7f37;color:#fff}
.badge-dup{background:#e4e4e4;color:#333}
.path{margin:4px 0;font:.9rem/1.35 ui-monospace,"DejaVu Sans Mono",monospace;overflow-wrap:anywhere;
word-break:break-all}
.facts{display:grid;grid-template-columns:auto minmax(0,1fr);gap:1px 10px;margin:4px 0 0;font-size:.9rem}
.facts dt{color:#555}.facts dd{margin:0;overflow-wrap:anywhere}
.empty{background:#fff;border-radius:10px;padding:24px;font-size:1.2rem;text-align:center}
footer{font-size:.85rem;color:#555;margin-top:16px}
"""


def _member_html(m: Member, keeper: bool, thumb: Callable[[Member], tuple[str | None, str]]) -> str:
    uri, reason = thumb(m)
    if uri is not None:
        picture = f'<div class="thumb"><img src="{uri}" alt="{text(m.path)}"></div>'
    else:
        picture = f'<div class="thumb missing" role="img">cannot show this image: {text(reason)}</div>'
    badge = ('<span class="badge badge-keep">KEEP</span>' if keeper
             else '<span class="badge badge-dup">duplicate</span>')
    facts = m.facts
    shown = [("size", f'<span title="{facts.size} bytes">{human_bytes(facts.size)}</span>'),
             ("resolution", f"{facts.width}\u00d7{facts.height}" if facts.width and facts.height else "unknown"),
             ("format", text(facts.format or "unknown")),
             ("distance", "0 (keeper)" if keeper else f"{m.distance} bit{'s' if m.distance != 1 else ''}"),
             ("match", text(MATCH_WORDS.get(m.match, m.match)))]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in shown)
    return (f'<figure class="member{" keeper" if keeper else ""}" data-id="{m.id}">{picture}'
            f'<figcaption>{badge}<p class="path">{text(m.path)}</p><dl class="facts">{dl}</dl></figcaption>'
            f"</figure>\n")


def _chunks(groups: Sequence[Group], stats: ReportStats, title: str, thumb_px: int, generated: str,
            index_info: dict[str, Any] | None, on_problem: Callable[[str, str], None] | None) -> Iterator[str]:
    from hashdup.io import thumbnails

    def thumb(m: Member) -> tuple[str | None, str]:
        reasons: list[str] = []
        data = thumbnails.thumbnail(m.abspath, thumb_px, on_problem=lambda _p, r: reasons.append(r))
        if data is None:
            stats.unreadable += 1
            reason = reasons[0] if reasons else "cannot be read"
            if on_problem is not None:
                on_problem(m.path, reason)
            return None, reason
        stats.thumbnails += 1
        return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii"), ""

    yield ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
           '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
           f'<meta name="generator" content="hashdup">\n<title>{text(title)}</title>\n'
           f"<style>{_CSS.replace('THUMB', str(int(thumb_px)))}</style>\n</head>\n<body>\n")
    totals = [("groups", str(stats.groups)), ("images", str(stats.images)), ("duplicates", str(stats.duplicates)),
              ("reclaimable", f'<span title="{stats.reclaimable_bytes} bytes">'
                              f"{human_bytes(stats.reclaimable_bytes)}</span>")]
    meta = [("generated", text(generated))] + [(text(k), text(v)) for k, v in (index_info or {}).items()]
    yield (f'<header class="summary">\n<h1>{text(title)}</h1>\n<dl class="totals">'
           + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in totals) + '</dl>\n<dl class="meta">'
           + "".join(f"<div><dt>{k}:</dt><dd>{v}</dd></div>" for k, v in meta) + "</dl>\n</header>\n<main>\n")
    if not groups:
        yield '<p class="empty" id="no-duplicates">No duplicates found.</p>\n'
    for g in groups:
        n = len(g.members)
        yield (f'<section class="group" id="group-{g.number}" data-group="{g.number}" data-members="{n}">\n'
               f"<h2>Group {g.number} <small>{n} images \u00b7 max distance {g.max_distance}</small></h2>\n"
               '<div class="members">\n')
        for i, m in enumerate(g.members):
            yield _member_html(m, i == 0, thumb)
        yield "</div>\n</section>\n"
    note = f" {stats.unreadable} could not be shown." if stats.unreadable else ""
    yield (f"</main>\n<footer>Made by hashdup: {stats.thumbnails} thumbnails.{note} Sizes are file sizes; the "
           "distance is the Hamming distance from the keeper's code; reclaimable is the total size of the "
           "duplicates.</footer>\n</body>\n</html>\n")


def _generated(generated: str | dt.datetime | None) -> str:
    if generated is None:
        generated = dt.datetime.now(dt.UTC).astimezone()
    if isinstance(generated, dt.datetime):
        return generated.isoformat(sep=" ", timespec="seconds")
    return str(generated)


def iter_html(groups: Sequence[Group], *, title: str = DEFAULT_TITLE, thumb_px: int = 240,
              generated: str | dt.datetime | None = None, index_info: dict[str, Any] | None = None,
              on_problem: Callable[[str, str], None] | None = None,
              stats: ReportStats | None = None) -> Iterator[str]:
    """The report as an iterator of HTML fragments, one per member after the header.

    Parameters
    ----------
    groups : sequence of Group
        As :func:`hashdup.dedup.find_groups` returns them; ``members[0]`` is the keeper.
    title : str
    thumb_px : int
        Longest side of the thumbnails, and the smallest column width of the grid, in CSS pixels.
    generated : str or datetime, optional
        When the report was made (shown in the header); now by default.
    index_info : dict, optional
        Extra ``name: value`` lines for the header (see :func:`index_facts`).
    on_problem : callable, optional
        Called as ``on_problem(path, reason)`` for every image shown as a placeholder.
    stats : ReportStats, optional
        Filled in while iterating (thumbnails made, unreadable files).
    """
    if thumb_px < 16:
        raise ValueError(f"thumb_px must be ≥ 16, got {thumb_px}")
    stats = ReportStats() if stats is None else stats
    counts = summarize(groups)
    stats.groups, stats.images, stats.duplicates, stats.reclaimable_bytes = (
        counts.groups, counts.images, counts.duplicates, counts.reclaimable_bytes)
    return _chunks(groups, stats, title, thumb_px, _generated(generated), index_info, on_problem)


def render(groups: Sequence[Group], *, title: str = DEFAULT_TITLE, thumb_px: int = 240,
           generated: str | dt.datetime | None = None, index_info: dict[str, Any] | None = None,
           on_problem: Callable[[str, str], None] | None = None) -> str:
    """The whole report as one HTML5 string (see :func:`iter_html`; use :func:`write` for large results)."""
    return "".join(iter_html(groups, title=title, thumb_px=thumb_px, generated=generated, index_info=index_info,
                             on_problem=on_problem))


def write(groups: Sequence[Group], out: BinaryIO, **options: Any) -> ReportStats:
    """Write the report as UTF-8 to a binary stream, fragment by fragment; options as :func:`iter_html`."""
    stats = ReportStats()
    for chunk in iter_html(groups, stats=stats, **options):
        out.write(chunk.encode("utf-8", "backslashreplace"))
    out.flush()
    return stats


def save(groups: Sequence[Group], path: str | os.PathLike[str], **options: Any) -> ReportStats:
    """Write the report to ``path`` atomically (a temporary file renamed into place when complete)."""
    from hashdup.io.atomic import atomic_open

    with atomic_open(path) as f:
        return write(groups, f, **options)
