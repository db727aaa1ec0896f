"""The image-reading layer and the JPEG kernel, checked against Pillow.

Tolerances. With the same libjpeg-turbo settings (islow IDCT, fancy
upsampling) the compiled decoder and Pillow's bundled libjpeg-turbo agree
exactly on every image here; the full-decode tolerance (max 1, mean 0.01)
only leaves room for a different libjpeg-turbo release. A region decode is
exactly the same crop of the full decode: the kernel decodes a column of
margin on each side so that chroma upsampling at the crop's edges sees the
same neighbours.
"""
from __future__ import annotations

import io
import os
import re
import struct
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image, ImageOps, features

import fastload as fl
from fastload._kernels import _batch
from fastload.errors import DecodeError
from fastload.image.decode import DEFAULT_MAX_PIXELS, image_size, pillow_decode, read_image
from fastload.image.values import to_image_value
from helpers import encode, photo_like, write_image_folder

needs_turbo = pytest.mark.skipif(not _batch.HAVE_LIBJPEG_TURBO, reason="built without libjpeg-turbo")

MAX_DIFF, MEAN_DIFF = 1, 0.01   # full decode vs Pillow, see the module docstring
JPEG_KINDS = {
    "420": dict(quality=90),
    "444": dict(quality=90, subsampling=0),
    "422": dict(quality=90, subsampling=1),
    "progressive": dict(quality=75, progressive=True),
    "restarts": dict(quality=90, restart_marker_blocks=3),
}


def pil_rgb(data, draft=None) -> np.ndarray:
    """The reference: Pillow's decode, EXIF-transposed, as RGB."""
    im = Image.open(io.BytesIO(data))
    if draft:
        im.draft(None, draft)
    return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def assert_close(a, b, max_diff=MAX_DIFF, mean_diff=MEAN_DIFF):
    assert a.shape == b.shape and a.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= max_diff and diff.mean() <= mean_diff, (diff.max(), diff.mean())


def with_exif(data: bytes, orientation: int, big_endian=False, prefix=b"Exif\0\0") -> bytes:
    """Insert an APP1 EXIF segment holding only the Orientation tag after SOI."""
    e = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    tiff += struct.pack(e + "H", 1) + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(e + "I", 0)
    payload = prefix + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def set_jpeg_size(data: bytes, w: int, h: int) -> bytes:
    """Patch the SOF0 marker's declared size."""
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]


def jpeg_of(img, kind):
    """``img`` as a JPEG of one of JPEG_KINDS, or "gray" (its first channel)."""
    return encode(img[..., 0], quality=90) if kind == "gray" else encode(img, **JPEG_KINDS[kind])


@pytest.fixture(scope="module")
def photo():
    return photo_like(301, 463, seed=3)


@pytest.fixture
def decoder():
    return _batch.JpegDecoder()


# ---- the compiled decoder against Pillow ---------------------------------

@needs_turbo
@pytest.mark.parametrize("kind", sorted(JPEG_KINDS) + ["gray"])
@pytest.mark.parametrize("h, w", [(1, 1), (33, 17), (20, 3000), (3000, 20), (301, 463)])
def test_full_decode_matches_pillow(decoder, kind, h, w):
    data = jpeg_of(photo_like(h, w, seed=h + w), kind)
    pixels, region = decoder.decode(data)
    assert_close(pixels, pil_rgb(data))
    assert region == {"width": w, "height": h, "scaled_width": w, "scaled_height": h,
                      "off_x": 0, "off_y": 0, "denom": 1}
    assert pixels.flags.c_contiguous and pixels.flags.writeable


@needs_turbo
def test_grayscale_is_expanded_to_rgb(decoder, photo):
    data = jpeg_of(photo, "gray")
    assert decoder.info(data)["colorspace"] == "gray"
    pixels, _ = decoder.decode(data)
    assert (pixels[..., 0] == pixels[..., 2]).all()


@needs_turbo
def test_cmyk_is_left_to_pillow(decoder, photo):
    data = encode(Image.fromarray(photo).convert("CMYK"), quality=90)
    assert decoder.info(data)["colorspace"] == "cmyk"
    with pytest.raises(_batch.Unsupported, match="colour space"):
        decoder.decode(data)
    np.testing.assert_array_equal(read_image(data), pil_rgb(data))


@needs_turbo
@pytest.mark.parametrize("kind", sorted(JPEG_KINDS) + ["gray"])
@pytest.mark.parametrize("denom", [1, 2, 4, 8])
def test_region_is_the_crop_of_the_full_decode(decoder, photo, kind, denom):
    data = jpeg_of(photo, kind)
    full, info = decoder.decode(data, max_denom=denom, min_size=(1, 1))
    assert info["denom"] == denom
    rng = np.random.default_rng(denom)
    for _ in range(40):
        x0, x1 = np.sort(rng.choice(464, 2, replace=False))
        y0, y1 = np.sort(rng.choice(302, 2, replace=False))
        if (x1 - x0) < denom or (y1 - y0) < denom:
            continue
        part, r = decoder.decode(data, region=(x0, y0, x1, y1), max_denom=denom, min_size=(1, 1))
        assert r["denom"] == denom
        # the region rounded outward at the chosen scale: scaled pixel j is source pixels
        # [j * denom, (j + 1) * denom), the last one padded past the edge (not x * scaled / full)
        assert (r["off_x"], r["off_y"]) == (x0 // denom, y0 // denom)
        assert part.shape == (-(-y1 // denom) - r["off_y"], -(-x1 // denom) - r["off_x"], 3)
        np.testing.assert_array_equal(
            part, full[r["off_y"]:r["off_y"] + part.shape[0], r["off_x"]:r["off_x"] + part.shape[1]])


@needs_turbo
@pytest.mark.parametrize("kind", sorted(JPEG_KINDS))
@pytest.mark.parametrize("denom", [2, 4, 8])
def test_dct_scaling_matches_pillow_draft(decoder, photo, kind, denom):
    data = encode(photo, **JPEG_KINDS[kind])
    pixels, r = decoder.decode(data, max_denom=8, min_size=(463 // denom, 301 // denom))
    assert r["denom"] == denom and pixels.shape == (-(-301 // denom), -(-463 // denom), 3)
    assert_close(pixels, pil_rgb(data, draft=(463 // denom, 301 // denom)))


@needs_turbo
@pytest.mark.parametrize("region, min_size, max_denom, denom", [
    (None, (0, 0), 1, 1),
    (None, (0, 0), 8, 8),
    (None, (100, 100), 8, 2),      # 301 // 4 = 75 rows would be too few
    (None, (100, 70), 8, 4),
    (None, (100, 70), 2, 2),       # capped by max_denom
    ((10, 10, 458, 258), (224, 124), 8, 2),
    ((10, 10, 458, 258), (225, 124), 8, 1),
    ((0, 0, 463, 301), (58, 1), 8, 4),   # 463 / 8 < 58
])
def test_denominator_choice(decoder, photo, region, min_size, max_denom, denom):
    data = encode(photo, quality=90)
    shape, planned = decoder.decoded_shape(data, region, min_size, max_denom)
    pixels, r = decoder.decode(data, region, min_size, max_denom)
    assert r == planned and r["denom"] == denom and pixels.shape == shape


@needs_turbo
def test_out_receives_the_pixels(decoder, photo):
    data = encode(photo, quality=90)
    region = (40, 30, 200, 170)
    expected, _ = decoder.decode(data, region)
    shape, _ = decoder.decoded_shape(data, region)
    out = np.zeros(shape, np.uint8)
    result, _ = decoder.decode(data, region, out=out)
    assert np.shares_memory(result, out)
    np.testing.assert_array_equal(out, expected)

    big = np.zeros((200, 300, 3), np.uint8)   # larger: the result is a view of its corner
    result, _ = decoder.decode(data, region, out=big)
    assert result.shape == shape and np.shares_memory(result, big)
    np.testing.assert_array_equal(big[:shape[0], :shape[1]], expected)
    assert not big[shape[0]:].any() and not big[:, shape[1]:].any()

    for bad in (np.zeros((shape[0] - 1, shape[1], 3), np.uint8), np.zeros(shape, np.float32),
                np.zeros(shape[:2] + (4,), np.uint8), big[:, ::2]):
        with pytest.raises(ValueError):
            decoder.decode(data, region, out=bad)


@needs_turbo
@pytest.mark.parametrize("progressive", [False, True])
def test_a_truncated_stream_fails_whatever_the_region(decoder, photo, progressive):
    """Without its EOI marker a stream is decoded to its last row, also when the region ends above
    the missing data (skipping to the very end would decode nothing)."""
    data = encode(photo, quality=90, progressive=progressive)[:-300]
    for region, max_denom in (((10, 10, 40, 30), 1), ((0, 0, 463, 8), 8), (None, 1)):
        # Pillow's to judge (it refuses it, or decodes it under LOAD_TRUNCATED_IMAGES)
        with pytest.raises(_batch.Unsupported, match=r"Premature end of JPEG file \(truncated\): Pillow decides"):
            decoder.decode(data, region, min_size=(4, 4), max_denom=max_denom)
    full = encode(photo, quality=90, progressive=progressive)
    assert decoder.decode(full, (10, 10, 40, 30))[0].shape == (20, 30, 3)


@needs_turbo
def test_decoder_reused_across_sizes_and_errors(decoder):
    images = [encode(photo_like(h, w, seed=h), **kw) for h, w, kw in [
        (480, 640, dict(quality=90)), (17, 9, dict(quality=80, subsampling=0)),
        (300, 200, dict(quality=70, progressive=True)), (1000, 30, dict(quality=95))]]
    images.insert(2, images[0][:5000])            # a failure in the middle must not stick
    images.insert(4, encode(photo_like(50, 60)[..., 0]))
    for data in images * 2:
        if len(data) == 5000:
            with pytest.raises(_batch.Unsupported, match="truncated"):
                decoder.decode(data)
        else:
            assert_close(decoder.decode(data)[0], pil_rgb(data))


@needs_turbo
def test_info(decoder, photo):
    data = encode(photo, quality=90, progressive=True)
    assert decoder.info(data) == {"width": 463, "height": 301, "components": 3, "colorspace": "ycc",
                                  "orientation": 0, "progressive": True}
    assert decoder.info(encode(photo, "PNG")) is None
    assert decoder.info(b"") is None


@needs_turbo
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "ndarray"])
def test_any_bytes_like_input(decoder, photo, kind):
    data = encode(photo, quality=90)
    wrapped = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview,
               "ndarray": lambda b: np.frombuffer(b, np.uint8)}[kind](data)
    np.testing.assert_array_equal(decoder.decode(wrapped)[0], decoder.decode(data)[0])
    np.testing.assert_array_equal(read_image(wrapped), decoder.decode(data)[0])


def test_version():
    assert _batch.jpeg_version() == "none" if not _batch.HAVE_LIBJPEG_TURBO \
        else _batch.jpeg_version().startswith("libjpeg-turbo ")


@pytest.mark.skipif(_batch.HAVE_LIBJPEG_TURBO, reason="checks the build without libjpeg-turbo")
def test_without_libjpeg_turbo_everything_is_unsupported(decoder, photo):
    data = encode(photo, quality=90)
    for call in (decoder.info, decoder.decode, decoder.decoded_shape):
        with pytest.raises(_batch.Unsupported):
            call(data)
    np.testing.assert_array_equal(read_image(data), pil_rgb(data))


# ---- EXIF orientation -------------------------------------------------

@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(photo, orientation, big_endian):
    data = with_exif(encode(photo, quality=90), orientation, big_endian)
    expected = pil_rgb(data)
    assert expected.shape[:2] == ((463, 301) if orientation >= 5 else (301, 463))
    assert_close(read_image(data), expected)
    assert image_size(data) == expected.shape[1::-1]
    assert image_size(data, exif=False) == (463, 301)
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert_close(read_image(data, exif=False), stored)
    if _batch.HAVE_LIBJPEG_TURBO:
        d = _batch.JpegDecoder()
        assert d.info(data)["orientation"] == orientation
        if orientation > 1:   # the kernel leaves transposing to Pillow
            with pytest.raises(_batch.Unsupported):
                d.decode(data)
        assert_close(d.decode(data, exif=False)[0], stored)


@needs_turbo
@pytest.mark.parametrize("payload", [
    b"Exif\0\0II*\0\xff\xff\xff\x7f",                 # IFD offset far past the end
    b"Exif\0\0MM\0*\0\0\0\x08\x00\x40",               # 64 entries announced, none there
    b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x09\0",   # orientation 9: invalid
    b"Exif\0\0XX",
])
def test_malformed_exif_is_no_orientation(decoder, photo, payload):
    jpeg = encode(photo, quality=90)
    data = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]
    assert decoder.info(data)["orientation"] == 0
    np.testing.assert_array_equal(decoder.decode(data)[0], decoder.decode(jpeg)[0])



def with_app1(data: bytes, payload: bytes) -> bytes:
    """Insert an APP1 segment after SOI."""
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def with_xmp(data: bytes, packet: bytes) -> bytes:
    return with_app1(data, b"http://ns.adobe.com/xap/1.0/\0" + packet)


def xmp_packet(orientation=None, element=False) -> bytes:
    """An XMP packet holding tiff:Orientation as an attribute or an element (None: no orientation)."""
    attr = f' tiff:Orientation="{orientation}"' if orientation is not None and not element else ""
    elem = f"<tiff:Orientation>{orientation}</tiff:Orientation>" if orientation is not None and element else ""
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/"{attr}>{elem}'
            '</rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def raw_profile(orientation) -> str:
    """EXIF as ImageMagick writes it into a PNG text chunk ("Raw profile type exif": hex lines)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    block = exif.tobytes()
    hexed = block.hex()
    return f"\nexif\n{len(block):8d}\n" + "\n".join(hexed[i:i + 72] for i in range(0, len(hexed), 72)) + "\n"


def png_with_text(img, kind: str, key: str, value: str) -> bytes:
    """A PNG with one text chunk (kind "tEXt", "zTXt" or "iTXt") before its image data."""
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    if kind == "iTXt":
        info.add_itxt(key, value)
    else:
        info.add_text(key, value, zip=kind == "zTXt")
    return encode(img, "PNG", pnginfo=info)


_XMP, _RAW = "XML:com.adobe.xmp", "Raw profile type exif"
PILLOW = tuple(int(v) for v in PIL.__version__.split(".")[:2])
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}   # as EXIF defines each orientation, and exif_transpose undoes it
# Files whose orientation Pillow's getexif reads outside an Exif block (XMP; EXIF in PNG text), behind a
# doubled Exif prefix, or where the Exif block's tag overrides XMP's: name -> the file of a photo, whose orientation is the digit ending
# its name (none: 1).
ORIENTATION_CASES = {
    "jpeg-xmp-6": lambda a: with_xmp(encode(a, quality=90), xmp_packet(6)),
    "jpeg-xmp-element-8": lambda a: with_xmp(encode(a, quality=90), xmp_packet(8, element=True)),
    "jpeg-xmp-without": lambda a: with_xmp(encode(a, quality=90), xmp_packet()),
    "jpeg-exif-without-tag-xmp-5": lambda a: with_xmp(encode(a, quality=90, exif=Image.Exif().tobytes()),
                                                      xmp_packet(5)),
    "jpeg-xmp-6-under-exif-3": lambda a: with_xmp(with_exif(encode(a, quality=90), 3), xmp_packet(6)),
    "jpeg-exif-prefixed-twice-6": lambda a: with_exif(encode(a, quality=90), 6, prefix=b"Exif\0\0" * 2),
    "jpeg-malformed-exif-xmp-6": lambda a: with_xmp(
        with_app1(encode(a, quality=90), b"Exif\0\0II*\0\xff\xff\xff\x7f"), xmp_packet(6)),
    "png-itxt-xmp-6": lambda a: png_with_text(a, "iTXt", _XMP, xmp_packet(6).decode()),
    "png-text-xmp-7": lambda a: png_with_text(a, "tEXt", _XMP, xmp_packet(7).decode()),
    "png-ztxt-xmp-8": lambda a: png_with_text(a, "zTXt", _XMP, xmp_packet(8).decode()),
    "png-xmp-without": lambda a: png_with_text(a, "iTXt", _XMP, xmp_packet().decode()),
    "png-raw-profile-6": lambda a: png_with_text(a, "zTXt", _RAW, raw_profile(6)),
    "png-raw-profile-text-5": lambda a: png_with_text(a, "tEXt", _RAW, raw_profile(5)),
}


@pytest.mark.parametrize("name", sorted(ORIENTATION_CASES))
def test_orientation_outside_the_exif_block_as_exif_transpose_reads_it(tmp_path, photo, name):
    data = ORIENTATION_CASES[name](photo)
    orientation = int(name[-1]) if name[-1].isdigit() else 1
    with warnings.catch_warnings():   # the malformed block: Pillow warns, then reads the XMP
        warnings.simplefilter("ignore")
        stored = Image.open(io.BytesIO(data)).convert("RGB")
        expected = np.asarray(stored.transpose(TRANSPOSE[orientation]) if orientation > 1 else stored)
        assert (expected.shape[:2] != photo.shape[:2]) == (orientation >= 5)
        if PILLOW >= (11, 2) or name.startswith("png"):   # older Pillows read a JPEG's XMP for getxmp only
            np.testing.assert_array_equal(pil_rgb(data), expected)
        assert_close(read_image(data), expected)
        np.testing.assert_array_equal(pillow_decode(data, name), expected)
        path = tmp_path / name
        path.write_bytes(data)
        assert image_size(data) == image_size(path) == expected.shape[1::-1]   # the header-only size agrees
        assert image_size(data, exif=False) == (463, 301)
        assert_close(read_image(data, exif=False), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


# ---- the Pillow route -------------------------------------------------------

def rgb_variants():
    img = photo_like(37, 53, seed=9)
    rgba = np.dstack([img, np.linspace(0, 255, 53, dtype=np.uint8)[None].repeat(37, 0)])
    pal = Image.fromarray(img).quantize(16)
    frames = [Image.fromarray(np.roll(img, 7 * k, axis=1)) for k in range(3)]
    variants = {
        "cmyk-jpeg": encode(Image.fromarray(img).convert("CMYK"), "JPEG", quality=90),
        "png-rgb": encode(img, "PNG"),
        "png-rgba": encode(rgba, "PNG"),
        "png-la": encode(Image.fromarray(rgba).convert("LA"), "PNG"),
        "png-l": encode(img[..., 0], "PNG"),
        "png-1": encode(Image.fromarray(img[..., 0]).convert("1"), "PNG"),
        "png-p-transparency": encode(pal, "PNG", transparency=3),
        "gif-animated": encode(frames[0].quantize(64), "GIF", save_all=True, append_images=frames[1:]),
        "bmp": encode(img, "BMP"),
        "tiff-rgb": encode(img, "TIFF"),
        "tiff-cmyk": encode(Image.fromarray(img).convert("CMYK"), "TIFF"),
    }
    if features.check("webp"):   # a Pillow built without libwebp (pillow-simd from source can be) has none
        variants["webp-lossless"] = encode(img, "WEBP", lossless=True)
        variants["webp-animated"] = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    return variants


@pytest.mark.parametrize("kind, data", sorted(rgb_variants().items()))
def test_other_formats_match_pillow(kind, data):
    pixels = read_image(data, name=kind)
    np.testing.assert_array_equal(pixels, pil_rgb(data))
    assert pixels.flags.writeable and pixels.flags.c_contiguous
    np.testing.assert_array_equal(pillow_decode(data, kind), pixels)
    assert image_size(data) == (53, 37)


@pytest.mark.parametrize("mode, values, expected", [
    ("I;16", np.array([[0, 128, 129, 385, 65535]], np.uint16), [0, 0, 1, 1, 255]),
    ("I", np.array([[-5, 257, 32896, 65535, 70000]], np.int32), [0, 1, 128, 255, 255]),
    ("F", np.array([[-3.0, 0.4, 127.5, 254.6, np.nan, 1e9]], np.float32), [0, 0, 128, 255, 0, 255]),
])
def test_high_bit_depth_modes(mode, values, expected):
    im = Image.fromarray(values)
    assert im.mode == mode
    for fmt in ("TIFF", "PNG") if mode == "I;16" else ("TIFF",):
        data = encode(im, fmt)
        pixels = read_image(data)
        assert pixels.shape == values.shape + (3,)
        np.testing.assert_array_equal(pixels[..., 0], np.array([expected], np.uint8))
        assert (pixels == pixels[..., :1]).all()
        # the same image given as a record's PIL value gives the file's pixels
        np.testing.assert_array_equal(to_image_value(Image.open(io.BytesIO(data))), pixels)
    np.testing.assert_array_equal(to_image_value(im), pixels)


@pytest.mark.parametrize("orientation", [1, 5])   # 5 turns the axes without running one backwards
def test_pillow_draft_reports_its_scale(photo, orientation):
    data = with_exif(encode(photo, quality=90), orientation)
    turned = orientation == 5
    want = (37, 57) if turned else (57, 37)   # oriented (w, h); 463x301 / 8 is 58x38
    pixels, full, scale = pillow_decode(data, "x.jpg", draft_size=want)
    assert pixels.shape == ((58, 38, 3) if turned else (38, 58, 3))
    # the oriented full size and draft()'s scale, not the size ratio (58 / 463 is not 1 / 8)
    assert full == image_size(data) == ((301, 463) if turned else (463, 301)) and scale == 8
    np.testing.assert_array_equal(read_image(data, draft=want), pixels)
    pixels, full, scale = pillow_decode(encode(photo, "PNG"), "x.png", draft_size=want)
    assert full == (463, 301) and scale == 1 and pixels.shape == photo.shape


# ---- sources and failures ------------------------------------------------

def test_paths_and_sizes(tmp_path, photo):
    files = write_image_folder(tmp_path, ["b", "a"], per_class=2, size_range=(20, 40), seed=1)
    assert [label for _, label in files] == [0, 0, 1, 1] and "/a/" in files[0][0]
    for path, _ in files:
        expected = pil_rgb(Path(path).read_bytes())
        assert_close(read_image(path), expected)
        assert image_size(path) == expected.shape[1::-1]
    # a large APP2 (ICC) segment pushes the frame header past image_size's first read
    big = tmp_path / "icc.jpg"
    big.write_bytes(encode(photo, quality=90, icc_profile=b"\0" * 150_000))
    assert image_size(big) == (463, 301)
    assert image_size(big.read_bytes()) == (463, 301)


def bad_inputs(tmp_path):
    good = encode(photo_like(120, 160, seed=4), quality=90)
    sos = good.index(b"\xff\xda")
    rng = np.random.default_rng(5)
    cases = {f"cut{n}.jpg": good[:n] for n in (3, 40, sos, sos + 30, len(good) // 2, len(good) - 2)}
    cases["empty.jpg"] = b""
    cases["text.jpg"] = b"this is not an image\n" * 10
    cases["random.jpg"] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    cases["progressive-cut.jpg"] = encode(photo_like(120, 160), quality=90, progressive=True)[:3000]
    for i in range(4):   # valid headers, then noise: corrupt entropy-coded data
        noise = rng.integers(0, 256, len(good) - sos - 40, dtype=np.uint8).tobytes()
        cases[f"noise{i}.jpg"] = good[:sos + 14] + noise + b"\xff\xd9"
    cases["cut.png"] = encode(photo_like(120, 160), "PNG")[:2000]
    paths = []
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    return paths


def test_bad_files_raise_decode_error_naming_the_file(tmp_path):
    for path in bad_inputs(tmp_path):
        with pytest.raises(DecodeError, match=os.path.basename(path)) as e:
            read_image(path)
        assert e.value.record == path
        with pytest.raises(DecodeError, match="<bytes>"):
            read_image(Path(path).read_bytes())
        with pytest.raises(DecodeError, match="mine"):
            pillow_decode(Path(path).read_bytes(), "mine")


def test_unreadable_files(tmp_path):
    missing = tmp_path / "gone.jpg"
    for call in (read_image, image_size):
        with pytest.raises(DecodeError, match="gone.jpg: cannot read file: No such file"):
            call(missing)
        with pytest.raises(DecodeError, match="cannot read file: Is a directory"):
            call(tmp_path)
        with pytest.raises(DecodeError, match="empty"):
            call(b"")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads everything")
def test_permission_denied(tmp_path):
    path = tmp_path / "secret.jpg"
    path.write_bytes(encode(photo_like(8, 8)))
    path.chmod(0)
    with pytest.raises(DecodeError, match="secret.jpg: cannot read file: Permission denied"):
        read_image(path)


def test_pixel_limit(photo):
    huge = set_jpeg_size(encode(photo, quality=90), 60000, 50000)
    # the kernel's message, or Pillow's own (equal) limit on its route
    with pytest.raises(DecodeError, match=r"huge.jpg: .*(60000x50000|3000000000 pixels).*limit of 178956970"):
        read_image(huge, name="huge.jpg")
    assert DEFAULT_MAX_PIXELS == 178_956_970
    small = encode(photo, quality=90)
    for data in (small, encode(photo, "PNG"), with_exif(small, 6)):
        with pytest.raises(DecodeError, match="over the limit of 100000"):
            read_image(data, max_pixels=100_000, name="p")
        assert read_image(data, max_pixels=463 * 301).shape[0] in (301, 463)
        assert read_image(data, max_pixels=None).size == 463 * 301 * 3


def test_pillow_globals_untouched(tmp_path):
    from PIL import ImageFile
    before = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    for path in bad_inputs(tmp_path):
        with pytest.raises(DecodeError):
            read_image(path)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


# ---- threads ------------------------------------------------------------------

def test_threads_decode_like_serial():
    datas = [encode(photo_like(200 + 13 * i, 300 - 11 * i, seed=i), **kw)
             for i, kw in enumerate(list(JPEG_KINDS.values()) * 3)]
    datas.append(encode(photo_like(90, 80), "PNG"))
    serial = [read_image(d) for d in datas]
    for workers in (2, 4):
        with ThreadPoolExecutor(workers) as pool:
            for _ in range(3):
                for got, want in zip(pool.map(read_image, datas), serial):
                    np.testing.assert_array_equal(got, want)


@needs_turbo
def test_shared_decoder_refuses_concurrent_use():
    d = _batch.JpegDecoder()
    data = encode(photo_like(1500, 1500), quality=95, progressive=True)
    errors, barrier = [], threading.Barrier(4)

    def work():
        barrier.wait()
        for _ in range(3):
            try:
                d.decode(data)
            except RuntimeError as e:
                errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("two threads" in str(e) for e in errors)   # an error, never a crash
    assert_close(d.decode(data)[0], pil_rgb(data))


@pytest.mark.parametrize("load_truncated", [False, True])
def test_a_truncated_jpeg_gets_pillows_verdict_under_its_setting(tmp_path, monkeypatch, load_truncated):
    # LOAD_TRUNCATED_IMAGES, which the README says is read, had Pillow's route decode a cut JPEG
    # while the linked route still refused it (a cut PNG was already left to Pillow).
    from PIL import ImageFile
    for progressive in (False, True):
        data = encode(photo_like(24, 32, seed=3), quality=90, progressive=progressive)
        sos = data.index(b"\xff\xda")
        path = tmp_path / f"cut{int(progressive)}.jpg"
        path.write_bytes(data[:sos + (len(data) - sos) // 2])
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
        loader = fl.Loader(fl.ImageFiles([str(path)]), batch_size=1, transforms=[fl.Resize((24, 32))],
                           dtype="uint8", layout="NHWC")
        if load_truncated:
            with Image.open(path) as im:
                want = np.asarray(im.convert("RGB"))
            np.testing.assert_array_equal(next(iter(loader))[0], want)
        else:
            with pytest.raises(DecodeError, match=rf"{re.escape(str(path))}: .*truncated"):
                next(iter(loader))
