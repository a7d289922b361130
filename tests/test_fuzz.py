"""Hostile input: a seeded fuzz corpus through ``read_file`` + ``decode``, decompression bombs refused before any pixel
is allocated, file-system trouble end to end through ``hashdup index``, and index files refused before any memory
map is made. The corpus is in ``tests/fuzz_corpus.py``, its oracle and runner in ``tests/fuzz_runner.py``;
``scripts/fuzz.py`` runs a longer corpus."""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import re
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from hashdup import pipeline
from hashdup.errors import ImageError, IndexFileError
from hashdup.indexing import build as build_module
from hashdup.io import images

from . import fuzz_corpus as fc
from . import fuzz_runner as fr

FUZZ_SEED = int(os.environ.get("HASHDUP_FUZZ_SEED", "0"))
FUZZ_CASES = int(os.environ.get("HASHDUP_FUZZ_CASES", "2000"))


# ---------------------------------------------------------------------------------------------------- the corpus


def test_fuzz_corpus(tmp_path):
    """Every case decodes to a valid image or is refused with a one-line reason: no other exception, no crash, no
    case over 10 s, none raising peak memory by more than 256 MiB (each case in an isolated worker)."""
    report = fr.run_corpus(FUZZ_SEED, range(FUZZ_CASES), tmp_path, workers=2, case_timeout=10.0)
    first = "\n".join(f"  case {FUZZ_SEED}:{r['index']} ({r['kind']}): {r['detail'][:400]}"
                      for r in report.failures[:5])
    assert not report.failures, (
        f"{report.summary()}\nfirst failures (rerun one with `python scripts/fuzz.py --seed {FUZZ_SEED} --case N`):\n"
        f"{first}")
    assert report.cases == FUZZ_CASES
    # both outcomes are common: the mutations neither all break the files nor all leave them intact
    assert report.ok > 0.1 * FUZZ_CASES and report.refused > 0.3 * FUZZ_CASES, report.summary()


def test_corpus_covers_every_seed_and_mutation_and_is_reproducible():
    cases = [fc.make_case(FUZZ_SEED, i) for i in range(FUZZ_CASES)]
    seeds = {c.kind.split("/")[0] for c in cases}
    kinds = {c.kind.split("/")[1] for c in cases}
    assert seeds == set(fc.seed_files())
    assert kinds == set(fc.BYTE_MUTATIONS) | set(fc.FORMAT_MUTATIONS) | set(fc.OTHER_KINDS)
    again = fc.make_case(FUZZ_SEED, 123)
    assert again == cases[123]
    assert len({c.data for c in cases[:200]}) > 190  # different cases, not one case repeated
    assert [fc.make_case(FUZZ_SEED + 1, i).data for i in range(50)] != [c.data for c in cases[:50]]  # seeds differ


def test_seed_files_are_small_valid_images_of_each_kind():
    seeds = fc.seed_files()
    want = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP"}
    for name, (ext, data) in seeds.items():
        out = images.decode(data, 32, name=name)
        assert out.format == want[name.split("-")[0]], name
        assert 40 <= max(out.width, out.height) <= 96 and out.pixels.std() > 10, name  # a picture, not a blank
        assert images.is_image_name("x" + ext)
    from PIL import Image

    modes = {name: Image.open(io.BytesIO(data)) for name, (_, data) in seeds.items()}
    assert modes["tiff-cmyk-packbits"].mode == "CMYK" and modes["png-16bit"].mode.startswith("I;16")
    assert modes["png-palette"].mode == "P" and modes["gif-animated"].n_frames == 3
    assert modes["webp-animated"].n_frames == 3 and modes["jpeg-progressive"].info.get("progressive")


def test_the_runner_reports_crashes_hangs_exceptions_bad_reasons_and_memory(tmp_path, monkeypatch):
    """The fuzz test can fail: faults injected into decode on cases 3, 5, 7, 9 and 11 are each reported against their
    case, and the other cases still run (a fresh worker after the crash and the hang)."""
    monkeypatch.setenv(fr.INJECT, "3:crash,5:hang,7:raise,9:two-lines,11:hog")
    report = fr.run_corpus(FUZZ_SEED, range(14), tmp_path, workers=1, case_timeout=3.0)
    assert report.cases == 14
    got = {r["index"]: r["detail"] for r in report.failures}
    assert sorted(got) == [3, 5, 7, 9, 11], got
    assert got[3].startswith("crash") and got[5].startswith("hang") and "Timeout" in got[5]
    assert got[7] == "ValueError: injected"
    assert "one-line" in got[9] and "peak memory" in got[11]


# ------------------------------------------------------------------------------ bombs: refused before allocation


def _record_decoding(monkeypatch) -> list[tuple[str, tuple[int, int]]]:
    """Record every call of a Pillow ``load`` (where pixel memory is allocated and the decoder runs)."""
    from PIL import Image, ImageFile

    Image.init()
    calls: list[tuple[str, tuple[int, int]]] = []
    todo, classes = [ImageFile.ImageFile], []
    while todo:
        cls = todo.pop()
        classes.append(cls)
        todo.extend(cls.__subclasses__())
    for cls in classes:
        if "load" in cls.__dict__:
            real = cls.__dict__["load"]

            def load(self, _real=real):
                calls.append((type(self).__name__, self.size))
                return _real(self)

            monkeypatch.setattr(cls, "load", load)
    return calls


@pytest.mark.parametrize("seed, width, height", [
    ("png", 100_000, 100_000), ("png-palette", 8000, 8000), ("png-1bit", 2049, 2048),
    ("jpeg", 65535, 65535), ("jpeg-progressive", 8000, 8000),
    ("gif", 65535, 65535), ("gif-animated", 8000, 8000),
    ("tiff", 100_000, 100_000), ("tiff-lzw", 8000, 8000),
    ("webp-lossless", 16384, 16384), ("webp-lossless", 8192, 8192), ("webp", 16383, 16383),
    ("webp-animated", 100_000, 100_000), ("bmp", 100_000, 100_000), ("bmp", 8000, -8000),
])
def test_decompression_bombs_are_refused_before_decoding(monkeypatch, seed, width, height):
    data = fc.set_dimensions(fc.seed_files()[seed][1], seed, width, height)
    assert len(data) < 20_000 and abs(width * height) > images.MAX_PIXELS_PER_BYTE * len(data)
    calls = _record_decoding(monkeypatch)
    with pytest.raises(ImageError) as e:
        images.decode(data, 32, name="bomb")
    assert e.value.reason.startswith("decompression bomb refused: "), e.value.reason
    assert f"{width}x{abs(height)} pixels" in e.value.reason or f"({abs(width * height)} pixels)" in e.value.reason
    assert calls == []  # nothing was decoded, so nothing was allocated
    images.decode(fc.seed_files()[seed][1], 32)  # the recorder sees the decoding of the intact file
    assert calls and calls[-1][1] != (width, height)


def test_the_bytes_per_pixel_rule_starts_above_bomb_free_pixels(monkeypatch):
    """A tiny file may claim up to 2^22 pixels (it then fails as corrupt or truncated, not as a bomb); one row more
    and it is a bomb. Real photos of any size pass: they take far fewer pixels per byte."""
    free = images.BOMB_FREE_PIXELS
    with pytest.raises(ImageError) as e:
        images.decode(_png_claiming(2048, free // 2048), 32)
    assert "bomb" not in e.value.reason
    with pytest.raises(ImageError) as e:
        images.decode(_png_claiming(2048, free // 2048 + 1), 32)
    assert e.value.reason.startswith("decompression bomb refused: 2048x2049 pixels from a file of ")
    from PIL import Image

    photo = Image.open(fc.PHOTO).convert("RGB").resize((2600, 1732))  # 4.5 Mpx, above the bomb-free size
    for fmt in ("JPEG", "PNG", "WEBP"):
        buf = io.BytesIO()
        photo.save(buf, fmt, quality=30, compress_level=1)
        assert images.decode(buf.getvalue(), 32).width == 2600


def test_jpeg_with_thousands_of_scans_is_refused_at_once():
    """libjpeg passes over the whole image for each scan: 4096 x 4096 with 5000 empty scans would take seconds."""
    data = fc.seed_files()["jpeg-progressive"][1]
    assert 2 < data.count(b"\xff\xda") <= images.MAX_JPEG_SCANS
    at, _, n = fc._jpeg_segments(data)[-1]
    big = fc.set_dimensions(data, "jpeg-progressive", 4096, 4096)
    bomb = big[:at] + big[at : at + 2 + n] * 5000 + b"\xff\xd9"
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match=r"corrupt JPEG file \(5000 scans, more than 256\)"):
        images.decode(bomb, 32)
    assert time.perf_counter() - t0 < 1.0
    assert images.decode(data, 32).format == "JPEG"  # a real progressive JPEG has a handful of scans


@pytest.mark.parametrize("message, reason", [
    ("\n\n   the real line  \nsecond line", "corrupt image (the real line)"),
    ("", "corrupt image (ValueError)"),
    ("x" * 500, "corrupt image (" + "x" * 197 + "...)"),
])
def test_decoder_errors_become_one_line_reasons(monkeypatch, message, reason):
    from PIL import Image

    def broken(*args, **kwargs):
        raise ValueError(message) if message else ValueError()

    monkeypatch.setattr(Image, "open", broken)
    with pytest.raises(ImageError) as e:
        images.decode(b"\x89PNG\r\n\x1a\n", 32)
    assert e.value.reason == reason

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(Image, "open", no_memory)
    with pytest.raises(ImageError) as e:
        images.decode(b"\x89PNG\r\n\x1a\n", 32)
    assert e.value.reason == "not enough memory to decode the image"


def test_formats_outside_hashdups_list_are_not_tried():
    """Pillow would open these (TGA has no signature at all; EPS would start Ghostscript): hashdup does not."""
    from PIL import Image

    for fmt in ("TGA", "PCX", "PPM", "SGI"):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, fmt)
        assert Image.open(io.BytesIO(buf.getvalue())).format == fmt
        with pytest.raises(ImageError, match="not an image"):
            images.decode(buf.getvalue(), 16, name="x.jpg")


# --------------------------------------------------------------------------------------------- files, one by one


def _in_thread(fn, timeout=10.0):
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) when it blocks."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_read_file_refuses_what_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")  # opening a FIFO for reading blocks until a writer comes: never here
    os.symlink("fifo.jpg", tmp_path / "pipe.jpg")
    (tmp_path / "folder.jpg").mkdir()
    os.symlink("self.jpg", tmp_path / "self.jpg")
    os.symlink("missing.jpg", tmp_path / "broken.jpg")
    cases = {"fifo.jpg": "^not a regular file \\(a FIFO", "pipe.jpg": "^not a regular file \\(a FIFO",
             "folder.jpg": "^not a regular file \\(a folder\\)$", "self.jpg": "^symbolic link loop$",
             "broken.jpg": "^broken symbolic link$", "gone.jpg": "^cannot read file: No such file"}
    for name, reason in cases.items():
        with pytest.raises(ImageError) as e:
            _in_thread(lambda name=name: images.read_file(tmp_path / name, only_images=True))
        assert re.search(reason, e.value.reason), (name, e.value.reason)
    (tmp_path / "regular.png").write_bytes(fc.seed_files()["png"][1])  # and a regular file is read whole
    assert images.read_file(tmp_path / "regular.png").data == fc.seed_files()["png"][1]


def test_a_fifo_named_like_an_image_is_reported_by_an_index_run(tmp_path):
    """Before: the walk skipped it silently, though the README said it was reported."""
    from hashdup.io.walk import walk

    os.mkfifo(tmp_path / "fifo.jpg")
    os.mkfifo(tmp_path / "notes")  # not named like an image: ignored, as any other non-image file
    (tmp_path / "a.png").write_bytes(fc.seed_files()["png"][1])
    assert sorted(f.relpath for f in walk([tmp_path]).files) == ["a.png", "fifo.jpg"]
    summary = _in_thread(lambda: pipeline.build_index([tmp_path], tmp_path / "idx", workers=1))
    assert [(os.path.basename(p), r) for p, r in summary.skipped] == \
        [("fifo.jpg", "not a regular file (a FIFO, socket or device)")]


def _nest(folder: Path, names: list[str], file_at: int | None = None) -> None:
    """Folders ``folder/names[0]/names[1]/...`` made one at a time relative to the last (no path-length limit)."""
    here = os.getcwd()
    try:
        os.chdir(folder)
        for depth, name in enumerate(names, start=1):
            os.mkdir(name)
            os.chdir(name)
            if depth == file_at:
                Path("x.jpg").write_bytes(b"x")
    finally:
        os.chdir(here)


def test_deep_folders_need_no_recursion_and_paths_past_path_max_are_reported(tmp_path):
    """The walk's stack does not grow with the depth of the tree (Python's limit is 1000 frames; here the walk gets
    40 frames for 150 levels), and folders whose path exceeds PATH_MAX are reported, not fatal."""
    import sys

    from hashdup.io.walk import walk

    _nest(tmp_path, ["a"] * 150, file_at=150)
    _nest(tmp_path, ["b" * 250] * 20, file_at=10)  # 5000 bytes: past PATH_MAX (4096) below level 16
    frames, f = 0, sys._getframe()
    while f:
        frames, f = frames + 1, f.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(frames + 40)
    try:
        res = walk([tmp_path])
    finally:
        sys.setrecursionlimit(limit)
    assert [f.relpath for f in res.files] == ["a/" * 150 + "x.jpg", ("b" * 250 + "/") * 10 + "x.jpg"]
    assert len(res.problems) == 1
    assert re.fullmatch("cannot (open|list) folder: File name too long", res.problems[0][1])


# --------------------------------------------------------------------------------------- end to end: hashdup index


class _Main:
    """``hashdup.cli.main`` as a click command for CliRunner, so that exit codes are the console script's."""

    name = "hashdup"

    def main(self, args=None, prog_name=None, **kwargs):
        from hashdup.cli import main

        main(list(args))


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _hostile_folder(root: Path, photo_paths: list[Path]) -> tuple[set[str], dict[str, str]]:
    """A folder of 4 good photos and every kind of trouble; returns (good names, {bad name: reason regex})."""
    root.mkdir()
    good = {"a.jpg", "b.jpg", "sub/c.jpg", os.fsdecode(b"caf\xe9.jpg")}
    for name, src in zip(sorted(good), photo_paths[:4], strict=True):
        (root / name).parent.mkdir(exist_ok=True)
        shutil.copy(src, root / name)
    photo = photo_paths[4].read_bytes()
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("these are not pixels\n" * 20)
    (root / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    (root / "small-bomb.png").write_bytes(_png_claiming(8000, 8000))
    (root / "truncated.jpg").write_bytes(photo[: len(photo) // 2])
    (root / "vanishes.jpg").write_bytes(photo)
    (root / os.fsdecode(b"bad\xff.png")).write_bytes(hashlib.sha256(b"not a png").digest() * 10)
    os.symlink("nowhere.jpg", root / "broken.jpg")
    os.symlink("self.jpg", root / "self.jpg")
    os.symlink(".", root / "sub" / "loop")  # a folder loop: entered once, no error
    os.mkfifo(root / "fifo")
    os.symlink("fifo", root / "pipe.jpg")
    bad = {"empty.jpg": "^empty file", "notes.jpg": "^not an image", "bomb.png": "^decompression bomb",
           "small-bomb.png": "^decompression bomb", "truncated.jpg": "^truncated image",
           "vanishes.jpg": "^cannot read file: No such file", os.fsdecode(b"bad\xff.png"): "^(not an image|corrupt)",
           "broken.jpg": "^broken symbolic link$", "self.jpg": "^symbolic link loop$",
           "pipe.jpg": "^not a regular file"}
    return good, bad


def test_index_skips_hostile_files_with_a_reason_each(tmp_path, photo_paths, monkeypatch):
    from hashdup import pipeline

    root = tmp_path / "photos"
    good, bad = _hostile_folder(root, photo_paths)
    real_walk = build_module.walk

    def walk_then_delete(*args, **kwargs):  # the file is listed, then vanishes before it is read
        found = real_walk(*args, **kwargs)
        assert any(f.relpath == "vanishes.jpg" for f in found.files)
        (root / "vanishes.jpg").unlink()
        return found

    monkeypatch.setattr(build_module, "walk", walk_then_delete)
    idx = tmp_path / "index"
    runner = CliRunner()
    r = _in_thread(lambda: runner.invoke(_Main(), ["index", str(root), "--index", str(idx)]), timeout=120)
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    for name, reason in bad.items():
        shown = str(root / name).encode("utf-8", "backslashreplace").decode()  # undecodable bytes as \udcXX
        hits = [ln for ln in lines if ln.startswith(f"hashdup: skipped {shown}: ")]
        assert len(hits) == 1, (name, r.stderr)
        assert re.search(reason, hits[0].split(": ", 2)[2]), hits[0]
    assert f"indexed {len(good)} of {len(good) + len(bad)} image files" in r.stderr

    r = runner.invoke(_Main(), ["info", "--index", str(idx)])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["indexed"] == len(good) and info["errors"] == len(bad)
    skipped = {os.fsencode(s["path"]): s["error"] for s in info["skipped"]}  # \udcXX escapes back to the bytes
    assert set(skipped) == {os.fsencode(str(root / name)) for name in bad}
    for name, reason in bad.items():
        error = skipped[os.fsencode(str(root / name))]
        assert re.search(reason, error) and "\n" not in error, (name, error)
    idx_obj = pipeline.Index(idx)
    try:
        indexed = {os.fsencode(p) for p in idx_obj.paths(range(len(idx_obj)))}
    finally:
        idx_obj.close()
    assert indexed == {os.fsencode(str(root / name)) for name in good}  # the non-UTF-8 name among them


def test_unreadable_file_is_skipped_with_a_reason(tmp_path, photo_paths):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading a file")
    root = tmp_path / "photos"
    root.mkdir()
    for p in photo_paths[:2]:
        shutil.copy(p, root / p.name)
    (root / "locked.jpg").write_bytes(photo_paths[2].read_bytes())
    (root / "locked.jpg").chmod(0)
    r = CliRunner().invoke(_Main(), ["index", str(root), "--index", str(tmp_path / "index")])
    assert r.exit_code == 0, r.output
    assert f"hashdup: skipped {root / 'locked.jpg'}: cannot read file: Permission denied" in r.stderr


# --------------------------------------------------------------------------- index files: refused before mapping


@pytest.fixture
def maps(monkeypatch) -> list[str]:
    """Paths of every memory map made from Python while the test runs (numpy.memmap and np.load go through
    mmap.mmap)."""
    made: list[str] = []

    class Recorded(mmap.mmap):
        def __new__(cls, fileno, *args, **kwargs):
            made.append(os.readlink(f"/proc/self/fd/{fileno}"))
            return super().__new__(cls, fileno, *args, **kwargs)

    monkeypatch.setattr(mmap, "mmap", Recorded)
    return made


@pytest.fixture
def index_copy(built_index, tmp_path) -> Path:
    folder = tmp_path / "index"
    shutil.copytree(built_index[1], folder)
    return folder


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "index.json").read_text())


def _files(folder: Path) -> tuple[Path, Path]:
    m = _manifest(folder)
    return folder / m["files"]["codes"]["name"], folder / m["files"]["buckets"]["name"]


def _write_manifest(folder: Path, manifest: dict) -> None:
    from hashdup.io.store import _manifest_checksum

    manifest["checksum"] = _manifest_checksum(manifest)
    (folder / "index.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def test_an_intact_index_opens_and_maps_its_codes(index_copy, maps):
    from hashdup import pipeline

    idx = pipeline.Index(index_copy)
    try:
        codes, buckets = _files(index_copy)
        assert str(codes) in maps and str(buckets) not in maps
        assert len(idx.buckets) == len(idx) and str(buckets) in maps  # the tables are mapped on first use
    finally:
        idx.close()


def _mutations(path: Path, header_size: int, row: int) -> list[tuple[str, bytes]]:
    data = path.read_bytes()
    out = []
    for at in range(header_size):  # one flipped byte at every header position
        b = bytearray(data)
        b[at] ^= 0xFF if at % 2 else 0x01
        out.append((f"header byte {at} flipped", bytes(b)))
    body = bytearray(data)
    body[header_size + (len(data) - header_size) // 2] ^= 0x10
    out += [("body byte flipped", bytes(body)), ("zero bytes", b""), ("header only", data[:header_size]),
            ("half a header", data[: header_size // 2]), ("one byte short", data[:-1]),
            ("one row short", data[:-row]), ("one byte more", data + b"\0"), ("one row more", data + b"\0" * row),
            ("8 KiB of garbage more", data + bytes(range(256)) * 32)]
    return out


def test_mutated_code_files_are_refused_before_any_memory_map(index_copy, maps):
    """Through the index (with its manifest) and alone: every header byte, truncations, extensions, a body flip."""
    from hashdup import pipeline
    from hashdup.io.codefile import HEADER_SIZE, CodeFile

    codes, _ = _files(index_copy)
    original = codes.read_bytes()
    row = CodeFile.open(codes).row_stride
    maps.clear()
    for what, data in _mutations(codes, HEADER_SIZE, row):
        codes.write_bytes(data)
        with pytest.raises(IndexFileError) as e:
            pipeline.Index(index_copy)
        assert e.value.path == str(codes) and e.value.problem and "\n" not in e.value.problem, what
        with pytest.raises(IndexFileError):
            CodeFile.open(codes)
        assert str(codes) not in maps, f"{what}: mapped before it was refused"
    codes.write_bytes(original)
    pipeline.Index(index_copy).close()
    assert str(codes) in maps


def test_mutated_feature_files_are_refused_before_any_memory_map(index_copy, maps):
    """The feature file is opened on first use (by dedup): every mutation is refused there and alone, unmapped."""
    from hashdup import pipeline
    from hashdup.io.featurefile import HEADER_SIZE, FeatureFile

    feats = index_copy / _manifest(index_copy)["files"]["features"]["name"]
    original = feats.read_bytes()
    maps.clear()
    for what, data in _mutations(feats, HEADER_SIZE, 8):
        feats.write_bytes(data)
        with pytest.raises(IndexFileError) as e:
            FeatureFile.open(feats)
        assert e.value.path == str(feats) and e.value.problem and "\n" not in e.value.problem, what
        try:
            idx = pipeline.Index(index_copy)  # the manifest records its size: most mutations stop here
        except IndexFileError as e:
            assert e.path == str(feats), what
        else:
            with pytest.raises(IndexFileError):
                _ = idx.stored.features
            idx.close()
        assert str(feats) not in maps, f"{what}: mapped before it was refused"
    feats.write_bytes(original)
    idx = pipeline.Index(index_copy)
    assert len(idx.stored.features) == len(idx) and str(feats) in maps
    idx.close()


def test_mutated_bucket_files_are_refused_before_any_memory_map(index_copy, maps):
    from hashdup import pipeline
    from hashdup.index.buckets import HEADER_SIZE, BucketTables

    _, buckets = _files(index_copy)
    original = buckets.read_bytes()
    n_rows = BucketTables.open(buckets).n_rows
    maps.clear()
    for what, data in _mutations(buckets, HEADER_SIZE, 4 * n_rows):
        buckets.write_bytes(data)
        with pytest.raises(IndexFileError) as e:
            BucketTables.open(buckets)
        assert e.value.path == str(buckets) and e.value.problem and "\n" not in e.value.problem, what
        assert str(buckets) not in maps, f"{what}: mapped before it was refused"
    buckets.write_bytes(original[:-1])
    with pytest.raises(IndexFileError, match="bytes, manifest says"):  # the manifest records its size
        pipeline.Index(index_copy)
    buckets.write_bytes(bytes([original[0] ^ 1]) + original[1:])
    idx = pipeline.Index(index_copy)  # same size: the index opens, the tables are refused when first used
    try:
        with pytest.raises(IndexFileError, match="not a hashdup bucket-table file"):
            _ = idx.buckets
    finally:
        idx.close()
    assert str(buckets) not in maps


def _edit(manifest: dict, what: str) -> dict:
    if what == "wrong code size":
        manifest["files"]["codes"]["bytes"] += 8
    elif what == "wrong catalogue checksum":
        manifest["files"]["catalogue"]["blake2b"] = hashlib.blake2b(b"", digest_size=16).hexdigest()
    elif what == "wrong descriptor count":
        manifest["descriptor"]["n_features"] += 1
    elif what == "code file outside the folder":
        manifest["files"]["codes"]["name"] = "../" + manifest["files"]["codes"]["name"]
    elif what == "absolute file name":
        manifest["files"]["catalogue"]["name"] = "/etc/passwd"
    elif what == "missing field":
        del manifest["encoder"]["n_bits"]
    elif what == "wrong field type":
        manifest["files"]["codes"]["bytes"] = str(manifest["files"]["codes"]["bytes"])
    return manifest


@pytest.mark.parametrize("what, problem", [
    ("wrong code size", "bytes, manifest says"),
    ("wrong catalogue checksum", "catalogue file checksum mismatch"),
    ("wrong descriptor count", "feature count"),
    ("code file outside the folder", "not a file name"),
    ("absolute file name", "not a file name"),
    ("missing field", "malformed manifest"),
    ("wrong field type", "malformed manifest"),
])
def test_manifests_with_wrong_content_are_refused(index_copy, maps, what, problem):
    """Checksummed again after the edit, so that the content checks, not the checksum, must catch it."""
    from hashdup import pipeline

    _write_manifest(index_copy, _edit(_manifest(index_copy), what))
    with pytest.raises(IndexFileError, match=problem):
        pipeline.Index(index_copy)
    if what != "wrong descriptor count":  # found only after the files were opened and checked
        assert maps == []


@pytest.mark.parametrize("what, content, problem", [
    ("zero bytes", b"", "unreadable manifest"),
    ("edited without its checksum", None, "manifest checksum mismatch"),
    ("truncated", "half", "unreadable manifest"),
    ("nested a million deep", b"[" * 1_000_000 + b"]" * 1_000_000, "unreadable manifest: nested too deeply"),
    ("not JSON", b"\xff\xfe garbage", "unreadable manifest"),
    ("another format", b'{"format": "other", "version": 1}', "not a hashdup index manifest"),
    ("17 MiB", b'{"format": "hashdup-index"' + b" " * (17 << 20) + b"}", "manifest is over"),
])
def test_broken_manifests_are_refused_with_a_reason(index_copy, maps, what, content, problem):
    from hashdup import pipeline

    path = index_copy / "index.json"
    if content is None:
        m = _manifest(index_copy)
        m["counts"]["files"] += 1
        path.write_text(json.dumps(m))
    elif content == "half":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(IndexFileError, match=problem) as e:
        pipeline.Index(index_copy)
    assert "\n" not in str(e.value) and maps == []


def test_the_cli_reports_a_refused_index_in_one_line(index_copy):
    codes, _ = _files(index_copy)
    data = bytearray(codes.read_bytes())
    data[30] ^= 0xFF  # the row count
    codes.write_bytes(bytes(data))
    r = CliRunner().invoke(_Main(), ["info", "--index", str(index_copy)])
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith(f"hashdup: error: {codes}: ") and r.stderr.count("\n") == 1

