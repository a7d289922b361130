"""Reading images: formats, modes, EXIF orientation, reduced-size JPEG decoding, and bad input."""

import contextlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from hashdup.errors import ImageError
from hashdup.io import images

from .conftest import rgb_noise


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_formats_decode_to_square_rgb(fmt):
    src = Image.fromarray(rgb_noise(90, 120, seed=1))
    out = images.decode(encode(src, fmt), 64)
    assert out.pixels.shape == (64, 64, 3) and out.pixels.dtype == np.uint8
    assert (out.width, out.height) == (120, 90)
    assert out.format == fmt
    ref = np.asarray(src.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.float64)
    tol = 40 if fmt == "GIF" else 12  # GIF quantises to 256 colours
    assert np.abs(out.pixels - ref).mean() < tol


@pytest.mark.parametrize("fmt, sniffed", [("HEIF", "HEIF"), ("AVIF", "AVIF")])
def test_heif_and_avif(fmt, sniffed):
    """HEIC/HEIF through the pillow-heif extra (installed with the test extra), AVIF through Pillow or the extra."""
    assert images.HEIF_SUPPORT
    src = Image.fromarray(rgb_noise(48, 64, seed=3))
    data = encode(src, fmt, quality=90)
    assert images.sniff_format(data[:16]) == sniffed
    out = images.decode(data, 32)
    assert (out.width, out.height) == (64, 48)
    ref = np.asarray(src.resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.float64)
    assert np.abs(out.pixels - ref).mean() < 12


def test_format_comes_from_content_not_extension(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(Image.fromarray(rgb_noise(32, 32)), "PNG"))
    assert images.load(path, 32).format == "PNG"
    assert images.sniff_format(path.read_bytes()[:16]) == "PNG"


def test_gif_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    px = images.decode(buf.getvalue(), 16).pixels
    assert (px[..., 0] > 200).all() and (px[..., 2] < 50).all()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "JPEG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(fmt, orientation):
    src = Image.fromarray(rgb_noise(40, 60, seed=orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(src, fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    out = images.decode(data, 32)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    expected = np.asarray(upright.resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=3.0))
    if fmt == "JPEG":  # lossy, and decoded through a different path (DCT scaling): close, not identical
        assert np.abs(out.pixels.astype(int) - expected).mean() < 3
    else:
        np.testing.assert_array_equal(out.pixels, expected)
    assert (out.width, out.height) == upright.size == ((40, 60) if orientation >= 5 else (60, 40))


def test_exif_rotated_jpeg_equals_upright_photo(sample_dir):
    upright = images.load(sample_dir / "photos" / "china.jpg", 64)
    rotated = images.load(sample_dir / "copies" / "china_exif_rotated.jpg", 64)
    assert (rotated.width, rotated.height) == (upright.width, upright.height)
    assert np.abs(rotated.pixels.astype(int) - upright.pixels).mean() < 4


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
def test_large_jpeg_is_decoded_at_reduced_size(fmt):
    big = Image.fromarray(rgb_noise(1800, 2400, seed=2))
    extra = {"save_all": True, "append_images": [big.resize((240, 180))]} if fmt == "MPO" else {}
    out = images.decode(encode(big, fmt, quality=85, **extra), 128)
    assert out.format == fmt
    assert (out.width, out.height) == (2400, 1800)
    assert out.decoded_size == (300, 225)  # DCT scaling by 1/8, still ≥ 128 on both sides
    assert out.pixels.shape == (128, 128, 3)


def test_transparent_pixels_become_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 4:, 3] = 255  # left half fully transparent, right half opaque red
    for img in (Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba, "RGBA").convert("LA")):
        px = images.decode(encode(img, "PNG"), 8).pixels
        assert (px[:, :4] == 255).all()
    px = images.decode(encode(Image.fromarray(rgba, "RGBA"), "PNG"), 8).pixels
    assert (px[:, 5:] == [255, 0, 0]).all()
    pal = Image.fromarray(rgba, "RGBA").convert("P")
    pal.info["transparency"] = pal.getpixel((0, 0))
    assert (images.decode(encode(pal, "PNG", transparency=pal.getpixel((0, 0))), 8).pixels[:, :4] == 255).all()


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    arr = np.full((8, 8), 32768, np.uint16)
    arr[:, 4:] = 65535
    px = images.decode(encode(Image.fromarray(arr), "PNG"), 8).pixels
    assert abs(int(px[0, 0, 0]) - 128) <= 1 and px[0, 7, 0] == 255


def test_cmyk_and_bilevel():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    px = images.decode(encode(cmyk, "JPEG"), 16).pixels
    assert px[..., 0].mean() > 200 and px[..., 1].mean() < 60
    bw = Image.fromarray(np.tile([0, 255], (16, 8)).astype(np.uint8)).convert("1")
    px = images.decode(encode(bw, "PNG"), 16).pixels
    assert set(np.unique(px)) == {0, 255}


def _png_header_only(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"hello, I am a text file\n" * 4, "not an image"),
        (_png_header_only(100_000, 100_000), "decompression bomb"),
        (_png_header_only(64, 64), "truncated|corrupt"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "corrupt"),
    ],
)
def test_bad_input_raises_image_error_with_reason(data, reason):
    with pytest.raises(ImageError, match=reason) as e:
        images.decode(data, 32, name="x.jpg")
    assert "\n" not in e.value.reason and e.value.path == "x.jpg"


def test_truncated_and_bit_flipped_real_jpeg(sample_dir):
    data = (sample_dir / "photos" / "rocket.jpg").read_bytes()
    with pytest.raises(ImageError, match="truncated"):
        images.decode(data[: len(data) // 3], 32)
    rng = np.random.default_rng(0)
    for _ in range(20):  # flipped bytes may still decode (to garbage) but must never raise anything else
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), 8):
            flipped[pos] ^= 0xFF
        with contextlib.suppress(ImageError):
            images.decode(bytes(flipped), 32)


def test_pixel_limit_is_configurable():
    data = encode(Image.fromarray(rgb_noise(30, 30)), "PNG")
    with pytest.raises(ImageError, match=r"decompression bomb.*30x30.*899"):
        images.decode(data, 16, max_pixels=899)
    images.decode(data, 16, max_pixels=900)


def test_read_file(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    assert images.read_file(tmp_path / "notes.txt", only_images=True) is None
    (tmp_path / "notes.jpg").write_text("not an image")
    content = images.read_file(tmp_path / "notes.jpg", only_images=True)
    assert content.data == b"not an image" and content.stat.size == 12
    assert content.stat.mtime_ns == (tmp_path / "notes.jpg").stat().st_mtime_ns
    (tmp_path / "IMG_0001").write_bytes(encode(Image.new("RGB", (4, 4)), "PNG"))  # no extension, PNG content
    assert images.read_file(tmp_path / "IMG_0001", only_images=True) is not None
    with pytest.raises(ImageError, match="too large"):
        images.read_file(tmp_path / "notes.jpg", max_bytes=5)
    with pytest.raises(ImageError, match="cannot read"):
        images.read_file(tmp_path / "missing.jpg")
