"""``hashdup report``: the HTML page (parsed back with the standard library's parser), the CLI, thumbnails, and the
page rendered in a real headless Chromium (skipped, with the reason, only where no Chromium can be found)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashdup.dedup import KEEP_POLICIES, Group, Member, find_groups, report
from hashdup.io import thumbnails
from hashdup.io.facts import FileFacts

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
DATA_URI = "data:image/jpeg;base64,"


# --- helpers -------------------------------------------------------------------------------------------------------
class Page(HTMLParser):
    """The parts of a report a reader sees: groups with their members, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.groups: list[dict] = []
        self.tags: list[tuple[str, dict]] = []
        self.totals: dict[str, str] = {}
        self._field: str | None = None
        self._dt: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        cls = (a.get("class") or "").split()
        if tag == "section" and "group" in cls:
            self.groups.append({"number": int(a["data-group"]), "members": []})
        elif tag == "figure" and "member" in cls:
            self.groups[-1]["members"].append({"id": int(a["data-id"]), "keeper": "keeper" in cls, "badge": "",
                                               "path": "", "img": None, "missing": ""})
        elif tag == "img" and self.groups:
            self.groups[-1]["members"][-1]["img"] = a.get("src")
        elif "missing" in cls:
            self._field = "missing"
        elif "path" in cls:
            self._field = "path"
        elif "badge" in cls:
            self._field = "badge"
        elif tag == "dt" and not self.groups:
            self._field = "dt"
        elif tag == "dd" and not self.groups and self._dt in ("groups", "images", "duplicates", "reclaimable"):
            self._field = "dd"
        elif tag == "span" and "title" in a and self._dt == "reclaimable" and not self.groups:
            self.totals["reclaimable_title"] = a["title"]

    def handle_endtag(self, tag):
        if tag in ("p", "span", "div", "dt", "dd"):
            self._field = None

    def handle_data(self, data):
        if self._field == "dt":
            self._dt = data.strip()
        elif self._field == "dd":
            self.totals[self._dt] = self.totals.get(self._dt, "") + data
        elif self._field is not None and self.groups:
            self.groups[-1]["members"][-1][self._field] += data


def _copy_sample(dest: Path, names: list[str] | None = None) -> Path:
    if names is None:
        shutil.copytree(SAMPLE, dest)
    else:
        for n in names:
            (dest / n).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SAMPLE / n, dest / n)
    return dest


def _cli(args: list[str]):
    from hashdup.cli import main

    class _Main:  # CliRunner adapter so that the exit codes are those of the console script
        name = "hashdup"

        def main(self, args=None, prog_name=None, **kwargs):
            main(list(args))

    return CliRunner().invoke(_Main(), args)


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory):
    """sample_data copied and indexed with the defaults; its groups; the report written by the CLI."""
    from hashdup import pipeline

    base = tmp_path_factory.mktemp("report")
    imgs = _copy_sample(base / "images")
    index_dir = base / "index"
    pipeline.build_index([imgs], index_dir)
    idx = pipeline.Index(index_dir)
    try:
        groups = find_groups(idx)
    finally:
        idx.close()
    out = base / "report.html"
    r = _cli(["report", "--index", str(index_dir), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return {"images": imgs, "index": index_dir, "groups": groups, "html": out}


def _member(path: Path, display: str | None = None, **kw) -> Member:
    st = path.stat() if path.exists() else None
    facts = FileFacts(st.st_size if st else 123, 0, "", 640, 480, "JPEG")
    fields = {"id": 0, "path": display or str(path), "abspath": os.fsdecode(path), "facts": facts}
    return Member(**{**fields, **kw})


# --- the page ------------------------------------------------------------------------------------------------------
def test_every_group_and_member_is_on_the_page(sample_index):
    groups = sample_index["groups"]
    text = sample_index["html"].read_text("utf-8")
    page = Page(text)
    assert len(groups) >= 6  # sample_data plants 6 groups
    assert [g["number"] for g in page.groups] == [g.number for g in groups]
    for shown, g in zip(page.groups, groups, strict=True):
        assert [m["id"] for m in shown["members"]] == [m.id for m in g.members]
        assert [m["keeper"] for m in shown["members"]] == [True] + [False] * len(g.duplicates)
        assert [m["badge"] for m in shown["members"]] == ["KEEP"] + ["duplicate"] * len(g.duplicates)
        assert [m["path"] for m in shown["members"]] == [m.path for m in g.members]
        for m, member in zip(shown["members"], g.members, strict=True):
            assert m["img"].startswith(DATA_URI), m
            thumb = Image.open(io.BytesIO(base64.b64decode(m["img"][len(DATA_URI):], validate=True)))
            assert thumb.format == "JPEG" and max(thumb.size) == min(240, max(member.facts.width, member.facts.height))
            # the thumbnail is upright: its orientation is the one the index recorded for the file
            assert (thumb.width >= thumb.height) == (member.facts.width >= member.facts.height), member.path


def test_page_is_self_contained_and_phone_ready(sample_index):
    text = sample_index["html"].read_text("utf-8")
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) in page.tags
    for tag, a in page.tags:
        for attr in ("src", "href", "srcset", "data", "action"):
            assert attr not in a or a[attr].startswith("data:"), (tag, a)
        assert tag not in ("link", "script", "iframe", "object"), tag
    assert not re.search(r"url\(|@import|https?://", text)


def test_summary_counts_match_the_files(sample_index):
    groups = sample_index["groups"]
    page = Page(sample_index["html"].read_text("utf-8"))
    dup_paths = [m.abspath for g in groups for m in g.members[1:]]
    assert int(page.totals["groups"]) == len(groups)
    assert int(page.totals["images"]) == len(dup_paths) + len(groups)
    assert int(page.totals["duplicates"]) == len(dup_paths)
    on_disk = sum(os.stat(p).st_size for p in dup_paths)  # oracle: the files themselves, not the catalogue
    assert page.totals["reclaimable_title"] == f"{on_disk} bytes"


def test_hostile_file_names_are_escaped(tmp_path):
    evil = "<script>alert('x')\u202egpj.exe&\"q\" <img src=x onerror=alert(1)>.jpg"  # no '/': a file name
    raw = b"caf\xe9 \xff.jpg"  # not UTF-8: Python holds it as surrogate escapes
    shutil.copy(SAMPLE / "photos" / "chelsea.jpg", tmp_path / evil)
    shutil.copy(SAMPLE / "photos" / "chelsea.jpg", os.path.join(os.fsencode(tmp_path), raw))
    bad_name = os.fsdecode(os.path.join(os.fsencode(tmp_path), raw))
    assert "\udce9" in bad_name
    g = Group(1, [_member(tmp_path / evil, display=evil, id=1),
                  _member(Path(bad_name), display=os.fsdecode(raw), id=2, distance=1, match="code")])
    out = io.BytesIO()
    report.write([g], out, title="<b>title</b>")
    text = out.getvalue().decode("utf-8")  # strict: the page is valid UTF-8
    assert "<script" not in text and "<b>" not in text and "<img src=x" not in text and "\u202e" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)" in text
    page = Page(text)
    shown = [m["path"] for m in page.groups[0]["members"]]
    assert shown == [evil.replace("\u202e", "\\u202e"), "caf\\xe9 \\xff.jpg"]
    assert all(m["img"].startswith(DATA_URI) for m in page.groups[0]["members"])  # both files were read
    assert not [t for t, _ in page.tags if t == "script"]


def test_text_escapes_control_characters_and_lone_surrogates():
    assert report.text("a\nb\x00c\x9b") == "a\\nb\\x00c\\x9b"
    assert report.text("\ud800x") == "\\ud800x"
    assert report.text("ok & <b>") == "ok &amp; &lt;b&gt;"


def test_deleted_and_corrupt_files_get_placeholders(tmp_path):
    from hashdup import pipeline

    names = ["photos/chelsea.jpg", "copies/chelsea_q30.jpg", "photos/grace_hopper.jpg",
             "copies/grace_hopper_copy.jpg", "photos/camera.jpg", "photos/rocket.jpg"]
    imgs = _copy_sample(tmp_path / "images", names)
    pipeline.build_index([imgs], tmp_path / "index")
    idx = pipeline.Index(tmp_path / "index")
    try:
        groups = find_groups(idx)
    finally:
        idx.close()
    assert len(groups) >= 2  # at least the byte-identical pair and the recompressed pair
    gone, spoilt = Path(groups[0].members[1].abspath), Path(groups[1].members[0].abspath)
    gone.unlink()
    spoilt.write_text("not a picture any more")
    out = tmp_path / "out" / "r.html"
    out.parent.mkdir()
    r = _cli(["report", "--index", str(tmp_path / "index"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    assert f"{gone.name}: cannot read file: No such file or directory" in r.stderr
    assert f"{spoilt.name}: not an image (unknown format)" in r.stderr
    assert f"wrote {out}" in r.stderr and "2 images could not be shown" in r.stderr
    assert sorted(os.listdir(out.parent)) == ["r.html"]  # no temporary file left behind
    shown = Page(out.read_text("utf-8")).groups
    assert len(shown) == len(groups)
    members = [m for g in shown for m in g["members"]]
    missing = {m["path"].rsplit("/", 1)[-1]: m["missing"] for m in members if m["img"] is None}
    assert set(missing) == {gone.name, spoilt.name}
    assert "No such file or directory" in missing[gone.name] and "not an image" in missing[spoilt.name]
    assert shown[1]["members"][0]["keeper"]  # a keeper that cannot be shown is still marked
    assert sum(m["img"] is not None for m in members) == len(members) - 2

    r = _cli(["report", "--index", str(tmp_path / "index"), "-o", str(out), "-q"])
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == ""


def test_empty_result_page():
    text = report.render([], generated="2024-01-01 00:00")
    page = Page(text)
    assert page.groups == [] and "No duplicates found." in text
    assert page.totals["groups"] == "0" and page.totals["images"] == "0" and page.totals["reclaimable"] == "0 B"


def test_cli_stdout_only_with_dash_and_keep_policy(sample_index):
    idx = str(sample_index["index"])
    r = _cli(["report", "--index", idx, "-o", "-", "--keep", "path", "-q"])
    assert r.exit_code == 0 and r.stderr == ""
    page = Page(r.stdout)
    assert len(page.groups) == len(sample_index["groups"])
    for g in page.groups:  # keep=path: the keeper is the first path in sort order
        paths = [m["path"] for m in g["members"]]
        assert paths[0] == min(paths) and g["members"][0]["keeper"]
    r = _cli(["report", "--index", idx, "-o", "-", "--keep", "bogus"])
    assert r.exit_code == 2
    r = _cli(["report", "--index", str(sample_index["images"] / "nowhere"), "-o", "-"])
    assert r.exit_code == 1 and r.stdout == ""


def test_cli_keep_choices_are_the_library_policies():
    from hashdup.cli.dedup_commands import report as command

    keep = next(p for p in command.params if p.name == "keep")
    assert tuple(keep.type.choices) == KEEP_POLICIES


def test_iter_html_yields_one_member_at_a_time(sample_index):
    groups = sample_index["groups"]
    chunks = list(report.iter_html(groups))
    assert all(c.count(DATA_URI) <= 1 for c in chunks)
    assert sum(c.count(DATA_URI) for c in chunks) == sum(len(g.members) for g in groups)


def test_human_bytes():
    assert [report.human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 2**20, 3 * 2**30)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB"]


# --- thumbnails ----------------------------------------------------------------------------------------------------
def test_thumbnail_is_upright_small_and_never_enlarged(tmp_path):
    rotated = thumbnails.thumbnail(SAMPLE / "copies" / "china_exif_rotated.jpg", 200)
    plain = thumbnails.thumbnail(SAMPLE / "photos" / "china.jpg", 200)
    a, b = (np.asarray(Image.open(io.BytesIO(x)).convert("L"), dtype=float) for x in (rotated, plain))
    assert a.shape == b.shape and a.shape[1] == 200  # 640x427 upright, scaled to a longest side of 200
    assert abs(a.shape[0] - 200 * 427 / 640) <= 1
    assert np.abs(a - b).mean() < 12  # the same picture, the same way up
    assert np.abs(a - b[::-1, ::-1]).mean() > 2 * np.abs(a - b).mean()
    Image.new("RGBA", (30, 20), (255, 0, 0, 0)).save(tmp_path / "small.png")
    small = Image.open(io.BytesIO(thumbnails.thumbnail(tmp_path / "small.png", 240)))
    assert small.size == (30, 20) and small.mode == "RGB"
    assert np.asarray(small).min() > 240  # transparent pixels come out white


def test_thumbnail_reasons_for_bad_files(tmp_path):
    seen = []
    for name in ("bad/truncated.jpg", "bad/notes.jpg", "photos/none.jpg"):
        assert thumbnails.thumbnail(SAMPLE / name, 64, on_problem=lambda p, r: seen.append(r)) is None
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert thumbnails.thumbnail(tmp_path / "empty.jpg", 64, on_problem=lambda p, r: seen.append(r)) is None
    assert seen[0].startswith("truncated image") and seen[1] == "not an image (unknown format)"
    assert "No such file or directory" in seen[2] and seen[3] == "empty file (0 bytes)"


# --- in a real browser ---------------------------------------------------------------------------------------------
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "headless_shell")
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}  # an iPhone 12-14 sized viewport

#: Evaluated in the loaded page by the test harness (the report itself has no script): measures what a reader sees
#: and returns the measurements; the assertions are made in Python.
VERDICT_JS = """(function () {
  var root = document.documentElement, docW = root.clientWidth;
  var v = {innerWidth: window.innerWidth, width: docW, scrollWidth: root.scrollWidth, groups: 0, hidden: [],
           outside: [], keepers: {}, images: 0, decoded: 0, minFont: 1000};
  function shown(e) {
    var r = e.getBoundingClientRect(), cs = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && parseFloat(cs.opacity) > 0;
  }
  document.querySelectorAll('section.group').forEach(function (g) {
    var r = g.getBoundingClientRect(), id = g.getAttribute('data-group');
    v.groups++;
    if (!shown(g)) v.hidden.push(id);
    if (r.left < -0.5 || r.right > docW + 0.5) v.outside.push(id);
    v.keepers[id] = 0;
    g.querySelectorAll('.keeper .badge-keep').forEach(function (b) {
      if (shown(b) && b.getBoundingClientRect().right <= docW + 0.5) v.keepers[id]++;
    });
  });
  document.querySelectorAll('img').forEach(function (im) {
    v.images++;
    if (im.complete && im.naturalWidth > 0) v.decoded++;
  });
  document.querySelectorAll('.path, .facts dt, .facts dd, h2, .badge').forEach(function (e) {
    v.minFont = Math.min(v.minFont, parseFloat(getComputedStyle(e).fontSize));
  });
  return v;
})()"""


def find_chromium() -> str | None:
    """HASHDUP_CHROMIUM, or the first Chromium-like browser on PATH."""
    env = os.environ.get("HASHDUP_CHROMIUM")
    if env:
        return shutil.which(env) or (env if os.access(env, os.X_OK) else None)
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium: install Debian's chromium package (apt-get install chromium) to run this test")
    return exe


FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--no-first-run", "--force-device-scale-factor=1")


class DevTools:
    """A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: commands on
    the browser's fd 3, answers on its fd 4, each message JSON ended by a NUL byte); no extra package needed.

    Used instead of ``--dump-dom`` because headless Chromium does not make its window narrower than 500 px: phone
    width comes from device emulation (``Emulation.setDeviceMetricsOverride``, mobile, so the page's meta viewport
    is honoured as on a phone).
    """

    def __init__(self, exe: str, profile: Path, timeout: float = 60.0) -> None:
        import fcntl

        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()
        hi_r, hi_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, out_w))  # clear of fds 3 and 4
        for fd in (cmd_r, out_w):
            os.close(fd)

        def pipe_fds() -> None:  # in the child: fds 3 and 4 become the pipes (close-on-exec copies vanish at exec)
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        # close_fds=False: Python's own descriptors are not inheritable (PEP 446); only 0-4 reach the browser
        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                                      "about:blank"], preexec_fn=pipe_fds, close_fds=False,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(hi_r)
        os.close(hi_w)
        self.timeout, self.buf, self.last_id, self.events = timeout, b"", 0, []

    def _message(self, deadline: float) -> dict:
        import select
        import time

        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.out_r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.out_r, 1 << 20)
            if not chunk:
                raise EOFError(f"Chromium closed the pipe (exit status {self.proc.poll()})")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        import time

        self.last_id += 1
        msg = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._message(deadline)
            if m.get("id") == self.last_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_for(self, event: str, session: str) -> dict:
        import time

        deadline = time.monotonic() + self.timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == event and e.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._message(deadline))

    def open_phone(self, url: str) -> str:
        """Load ``url`` in a new tab emulating a phone; return the session once its load event has fired."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", PHONE, session)
        self.send("Page.enable", {}, session)
        self.send("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        return session

    def evaluate(self, expression: str, session: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"script failed: {r['exceptionDetails']}")
        return r["result"]["value"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.out_r)


def _verdict(exe: str, page: Path, tmp: Path) -> dict:
    browser = DevTools(exe, tmp / "profile")
    try:
        session = browser.open_phone(page.as_uri())
        return browser.evaluate(VERDICT_JS, session)
    finally:
        browser.close()


def test_report_screenshot_in_chromium(chromium, sample_index, tmp_path):
    shot = tmp_path / "phone.png"
    cmd = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=390,2400",
           f"--screenshot={shot}", sample_index["html"].as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert shot.is_file()
    img = Image.open(shot)
    assert img.format == "PNG" and img.size == (390, 2400)
    pixels = np.asarray(img.convert("RGB"), dtype=float)
    assert pixels.std() > 20  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 1000  # photographs were drawn, not just text


def test_every_group_is_visible_in_chromium_at_phone_width(chromium, sample_index, tmp_path):
    groups = sample_index["groups"]
    v = _verdict(chromium, sample_index["html"], tmp_path)
    assert v["innerWidth"] == v["width"] == 390  # the meta viewport gives a 390 px layout, not a 980 px one
    assert v["groups"] == len(groups) >= 6
    assert v["hidden"] == [] and v["outside"] == []
    assert v["scrollWidth"] <= v["width"]  # no horizontal scrolling
    assert v["keepers"] == {str(g.number): 1 for g in groups}
    assert v["images"] == v["decoded"] == sum(len(g.members) for g in groups)
    assert v["minFont"] >= 12


def test_chromium_verdict_catches_a_broken_page(chromium, sample_index, tmp_path):
    """The harness can fail: a hidden group, an overflowing group, a hidden badge and a broken image are reported,
    and without the meta viewport a phone lays the page out at 980 px."""
    text = sample_index["html"].read_text("utf-8")
    text = text.replace(DATA_URI, "data:image/jpeg;base64,AAAA", 1)
    text = text.replace("</style>", "#group-2{display:none}#group-3{width:700px}"
                                     "#group-4 .badge-keep{visibility:hidden}</style>")
    text = re.sub(r'<meta name="viewport"[^>]*>', "", text)
    broken = tmp_path / "broken.html"
    broken.write_text(text, "utf-8")
    v = _verdict(chromium, broken, tmp_path)
    assert v["width"] == 980
    assert v["hidden"] == ["2"] and v["outside"] == []
    assert v["keepers"]["2"] == 0 and v["keepers"]["4"] == 0 and v["keepers"]["1"] == 1
    assert v["decoded"] == v["images"] - 1
    text = text.replace("<head>", '<head>\n<meta name="viewport" content="width=device-width, initial-scale=1">', 1)
    broken.write_text(text, "utf-8")
    v = _verdict(chromium, broken, tmp_path)
    assert v["width"] == 390 and v["outside"] == ["3"] and v["scrollWidth"] > v["width"]


def test_an_unwritable_report_path_is_refused_before_any_pair_is_verified(tmp_path, built_index):
    """Before: the error came after the whole dedup, naming a temporary file."""
    from click.testing import CliRunner

    from hashdup.cli import cli

    _, index_dir = built_index
    r = CliRunner().invoke(cli, ["report", "--index", str(index_dir), "-o", str(tmp_path / "no" / "r.html")])
    assert r.exit_code == 2 and "-o" in r.output and "does not exist" in r.output
