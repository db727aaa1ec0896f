"""The compiled PNG route (libspng), checked against Pillow on fixtures made here.

Two references. For pixels, Pillow's own decode and ``convert("RGB")`` (the
16-bit modes as fastload.image.decode documents: grey v / 257 rounded, the
other 16-bit samples their high byte, as Pillow unpacks them). For samples,
the Pillow route itself: a Loader fed the Pillow-decoded arrays runs the same
plan, draws and resample on the same pixels, so a PNG sample must equal it bit
for bit, whatever part of the image the crop needed. Besides Pillow's encoder,
the fixtures come from a small PNG writer here, for what Pillow does not write
(Adam7 interlacing, 2- and 4-bit samples, 16-bit colour, palettes shorter than
their indices, chunks in odd places).
"""
from __future__ import annotations

import io
import re
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
import PIL
from PIL import Image, ImageOps

import fastload as fl
from fastload._kernels import _batch
from fastload.errors import DecodeError
from fastload.image import field as field_module
from fastload.image.decode import image_size, pillow_decode, read_image
from helpers import encode, photo_like

PILLOW = tuple(int(v) for v in PIL.__version__.split(".")[:2])

needs_spng = pytest.mark.skipif(not _batch.HAVE_SPNG, reason="built without libspng (PNGs take the Pillow route)")

# ---- a PNG writer ------------------------------------------------------------------------------

SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def scanlines(samples: np.ndarray, depth: int, filters=(0,)) -> bytes:
    """Rows of HxWxC samples as PNG scanlines: packed from the high bit below 8 bits, big-endian at 16,
    each row with a filter type byte (0-4: None, Sub, Up, Average, Paeth, cycled over ``filters``) and
    filtered by it, as the PNG specification defines each filter."""
    h, w, c = samples.shape
    rows = []
    for row in samples.reshape(h, w * c):
        if depth == 16:
            rows.append(np.frombuffer(row.astype(">u2").tobytes(), np.uint8))
        elif depth == 8:
            rows.append(row.astype(np.uint8))
        else:
            per = 8 // depth
            padded = np.zeros(-(-len(row) // per) * per, np.uint32)
            padded[:len(row)] = row
            shifts = (8 - depth * (np.arange(per) + 1)).astype(np.uint32)
            rows.append((padded.reshape(-1, per) << shifts).sum(axis=1).astype(np.uint8))
    bpp = max(1, c * depth // 8)
    out, prev = [], np.zeros_like(rows[0]) if rows else None
    for y, row in enumerate(rows):
        f = filters[y % len(filters)]
        r = row.astype(np.int32)
        left = np.concatenate([np.zeros(bpp, np.int32), r[:-bpp]])
        if f == 1:
            r = r - left
        elif f == 2:
            r = r - prev
        elif f == 3:
            r = r - (left + prev) // 2
        elif f == 4:
            upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
            pa, pb, pc = np.abs(prev - upleft), np.abs(left - upleft), np.abs(left + prev - 2 * upleft)
            r = r - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        out.append(bytes([f]) + (r & 0xFF).astype(np.uint8).tobytes())
        prev = row.astype(np.int32)
    return b"".join(out)


def make_png(samples, depth, color_type, *, interlace=False, plte=None, trns=None, before_idat=(),
             idat_size=None, filters=(0,)) -> bytes:
    """A PNG of ``samples`` (HxW or HxWxC integers), written here chunk by chunk."""
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples[:, :, None]
    h, w, c = samples.shape
    assert c == CHANNELS[color_type]
    if interlace:
        raw = b"".join(scanlines(samples[y0::dy, x0::dx], depth, filters) for x0, y0, dx, dy in ADAM7
                       if samples[y0::dy, x0::dx].size)
    else:
        raw = scanlines(samples, depth, filters)
    out = SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace)))
    for kind, body in before_idat:
        out += chunk(kind, body)
    if plte is not None:
        out += chunk(b"PLTE", bytes(plte))
    if trns is not None:
        out += chunk(b"tRNS", bytes(trns))
    z = zlib.compress(raw, 6)
    step = idat_size or len(z) or 1
    for i in range(0, max(len(z), 1), step):
        out += chunk(b"IDAT", z[i:i + step])
    return out + chunk(b"IEND", b"")


def random_png(rng, color_type, depth, h, w, interlace):
    samples = rng.integers(0, 1 << depth, (h, w, CHANNELS[color_type]))
    plte = trns = None
    if color_type == 3:
        n = int(rng.integers(1, min(256, 1 << depth) + 1))   # often fewer entries than indices
        plte = rng.integers(0, 256, 3 * n).astype(np.uint8).tobytes()
        if rng.random() < 0.5:
            trns = rng.integers(0, 256, int(rng.integers(1, n + 1))).astype(np.uint8).tobytes()
    elif rng.random() < 0.3:   # a colour key: Pillow ignores it in convert("RGB"), so must the route
        trns = rng.integers(0, 1 << depth, 3 if color_type == 2 else 1).astype(">u2").tobytes() \
            if color_type in (0, 2) else None
    start = int(rng.integers(5))   # the first row takes any filter type too (the row above it is zeros)
    return make_png(samples, depth, color_type, interlace=interlace, plte=plte, trns=trns,
                    filters=tuple((start + k) % 5 for k in range(5)))


# ---- references ------------------------------------------------------------------------------

def pillow_rgb(data: bytes) -> np.ndarray:
    """Pillow's pixels as fastload documents them (not through fastload's own Pillow route)."""
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I"):   # 16-bit grey: v / 257 rounded; Pillow would clip at 255
            a = np.asarray(im).astype(np.int64)
            return np.repeat(((a + 128) // 257).astype(np.uint8)[..., None], 3, axis=2)
        with warnings.catch_warnings():   # palette transparency given as bytes
            warnings.simplefilter("ignore")
            return np.asarray(im.convert("RGB"))


def _bytes(item) -> bytes:
    if isinstance(item, bytes):
        return item
    with open(item, "rb") as f:
        return f.read()


def pillow_route(items, **kw):
    """The batches of the Pillow route: the Loader fed Pillow's pixels of the same files."""
    arrays = [pillow_decode(_bytes(d), "x") for d in items]
    return [np.array(b) for b in fl.Loader(fl.ListSource(arrays, "files"), **kw)]


def batches(items, **kw):
    return [np.array(b) for b in fl.Loader(fl.ListSource(list(items), "files"), **kw)]


def assert_equal_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ---- pixels: every colour type and bit depth -------------------------------------------------------

SHAPES = [(1, 1), (3, 517), (517, 3), (17, 9), (64, 33)]


@needs_spng
@pytest.mark.parametrize("interlace", [False, True], ids=["plain", "adam7"])
@pytest.mark.parametrize("color_type, depth", [(c, d) for c, ds in DEPTHS.items() for d in ds])
def test_every_colour_type_and_depth_matches_pillow(color_type, depth, interlace):
    rng = np.random.default_rng(color_type * 100 + depth * 2 + interlace)
    d, streaming = _batch.PngDecoder(), _batch.PngDecoder(whole_stream=False)
    for h, w in SHAPES:
        data = random_png(rng, color_type, depth, h, w, interlace)
        ref = pillow_rgb(data)
        got = d.decode(data)
        assert got.shape == (h, w, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, ref, err_msg=f"{h}x{w}")
        np.testing.assert_array_equal(streaming.decode(data), ref, err_msg=f"{h}x{w}, zlib")
        np.testing.assert_array_equal(read_image(data), ref)
        np.testing.assert_array_equal(got, pillow_decode(data, "x"))   # fastload's Pillow route agrees


@needs_spng
@pytest.mark.parametrize("filter_type", range(5), ids=["none", "sub", "up", "average", "paeth"])
@pytest.mark.parametrize("color_type, depth", [(0, 8), (4, 8), (2, 8), (6, 8), (2, 16), (6, 16), (0, 2)],
                         ids=["bpp1", "bpp2", "bpp3", "bpp4", "bpp6", "bpp8", "2-bit"])
def test_every_filter_type_on_every_row_matches_pillow(filter_type, color_type, depth):
    """Rows all filtered alike, the first included, at widths around the 16-byte blocks the
    unfiltering takes (the rest of a row goes pixel by pixel); extreme samples make the byte
    sums wrap and the Paeth predictor's ties go each way."""
    rng = np.random.default_rng(filter_type * 10 + color_type + depth)
    for w in (1, 4, 5, 6, 11, 16, 21, 64):
        samples = rng.choice([0, 1, (1 << depth) - 2, (1 << depth) - 1, 1 << (depth - 1)],
                             (7, w, CHANNELS[color_type]))
        samples[3:] = rng.integers(0, 1 << depth, samples[3:].shape)
        data = make_png(samples, depth, color_type, filters=(filter_type,))
        for d in (_batch.PngDecoder(), _batch.PngDecoder(whole_stream=False)):
            got = d.decode(data)
            np.testing.assert_array_equal(got, pillow_rgb(data), err_msg=f"width {w}")
            np.testing.assert_array_equal(d.decode(data, region=(0, 2, w, 5)), got[2:5], err_msg=f"width {w}")


PILLOW_MODES = {
    "1": lambda a: Image.fromarray(a[..., 0]).convert("1"),
    "L": lambda a: Image.fromarray(a[..., 1]),
    "LA": lambda a: Image.fromarray(a).convert("LA"),
    "P": lambda a: Image.fromarray(a).quantize(64),
    "P-index-transparency": lambda a: Image.fromarray(a).quantize(16),
    "P-byte-transparency": lambda a: Image.fromarray(np.dstack([a, a[..., 0]])).quantize(32),
    "RGB": lambda a: Image.fromarray(a),
    "RGBA": lambda a: Image.fromarray(np.dstack([a, 255 - a[..., 2]])),
    "I;16": lambda a: Image.fromarray((a[..., 0].astype(np.uint16) * 251 + a[..., 1]).astype(np.uint16)),
}


@needs_spng
@pytest.mark.parametrize("mode", sorted(PILLOW_MODES))
@pytest.mark.parametrize("h, w", [(1, 1), (3, 517), (301, 463)])
def test_pillow_written_pngs_match_pillow(mode, h, w):
    im = PILLOW_MODES[mode](photo_like(h, w, seed=h + w))
    kw = {"transparency": 3} if mode == "P-index-transparency" else {}
    data = encode(im, "PNG", optimize=h * w < 10_000, **kw)
    with Image.open(io.BytesIO(data)) as check:
        read_as = "I" if mode == "I;16" and PILLOW < (10, 3) else im.mode   # older Pillows widen 16-bit grey
        assert check.mode == read_as and ("transparency" in check.info) == (mode.startswith("P-"))
    np.testing.assert_array_equal(_batch.PngDecoder().decode(data), pillow_rgb(data))


@needs_spng
def test_palette_indices_past_the_palette_are_black():
    data = make_png([[0, 1, 5, 255]], 8, 3, plte=[10, 20, 30, 40, 50, 60])
    got = _batch.PngDecoder().decode(data)
    np.testing.assert_array_equal(got, pillow_rgb(data))
    np.testing.assert_array_equal(got[0], [[10, 20, 30], [40, 50, 60], [0, 0, 0], [0, 0, 0]])


@needs_spng
def test_colour_metadata_is_ignored_as_pillow_does():
    """gAMA, cHRM, sRGB, iCCP, sBIT and bKGD change nothing in convert("RGB"), so nothing here."""
    a = photo_like(20, 30, seed=5)
    icc = b"fake profile\0\0" + zlib.compress(b"\0" * 500)
    meta = ((b"gAMA", struct.pack(">I", 22727)), (b"cHRM", struct.pack(">8I", *range(8))),
            (b"iCCP", icc), (b"sBIT", bytes([5, 6, 5])), (b"bKGD", struct.pack(">HHH", 1, 2, 3)),
            (b"tEXt", b"Comment\0made here"), (b"zTXt", b"Title\0\0" + zlib.compress(b"x" * 100)))
    data = make_png(a, 8, 2, before_idat=meta)
    np.testing.assert_array_equal(_batch.PngDecoder().decode(data), a)
    np.testing.assert_array_equal(pillow_rgb(data), a)


@needs_spng
def test_many_small_idat_chunks_and_a_large_image():
    a = photo_like(480, 640, seed=9)
    for data in (make_png(a, 8, 2, idat_size=97, filters=(0, 1, 2)), encode(a, "PNG")):
        np.testing.assert_array_equal(_batch.PngDecoder().decode(data), a)


# ---- region decode ---------------------------------------------------------------------------------

@needs_spng
@pytest.mark.parametrize("interlace", [False, True], ids=["plain", "adam7"])
def test_a_region_is_the_crop_of_the_full_decode(interlace):
    rng = np.random.default_rng(4)
    d = _batch.PngDecoder()
    for color_type, depth in ((2, 8), (0, 1), (3, 4), (6, 16), (0, 16)):
        data = random_png(rng, color_type, depth, 41, 67, interlace)
        full = d.decode(data)
        for _ in range(20):
            x0, x1 = sorted(rng.integers(-3, 70, 2))
            y0, y1 = sorted(rng.integers(-3, 44, 2))
            if min(x1, 67) <= max(x0, 0) or min(y1, 41) <= max(y0, 0):
                with pytest.raises(ValueError, match="empty region"):
                    d.decode(data, region=(x0, y0, x1, y1))
                continue
            got = d.decode(data, region=(x0, y0, x1, y1))
            np.testing.assert_array_equal(got, full[max(y0, 0):y1, max(x0, 0):x1])
        out = np.zeros((50, 80, 3), np.uint8)
        view = d.decode(data, region=(5, 6, 30, 20), out=out)
        assert view.base is out and np.array_equal(out[:14, :25], full[6:20, 5:30])


def cut_below(a: np.ndarray, row: int, *, complete: bool) -> bytes:
    """A PNG of ``a`` whose zlib stream stops a little after scanline ``row``: followed by bytes
    that are not deflate data and an IEND chunk (complete), or by nothing at all (truncated)."""
    raw = scanlines(a[:, :, None] if a.ndim == 2 else a, 8, (0, 2))
    c = zlib.compressobj(6)
    head = c.compress(raw[:(row + 2) * (len(raw) // len(a))]) + c.flush(zlib.Z_FULL_FLUSH)
    h, w = a.shape[:2]
    png = SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    if complete:
        return png + chunk(b"IDAT", head + b"\xff" * 64) + chunk(b"IEND", b"")
    return png + chunk(b"IDAT", head)


@needs_spng
def test_a_region_decode_stops_after_its_last_row():
    a = photo_like(400, 60, seed=2)
    data = cut_below(a, 150, complete=True)   # the rows from about 152 on are not deflate data
    d = _batch.PngDecoder()
    np.testing.assert_array_equal(d.decode(data, region=(10, 20, 50, 150)), a[20:150, 10:50])
    with pytest.raises(DecodeError, match=r"row 15\d of 400"):
        d.decode(data)
    with pytest.raises(DecodeError):
        pillow_decode(data, "x")   # Pillow reads every row
    # The Loader: a crop in the top rows comes from the compiled route and equals the Pillow route's
    # sample of the whole file; a crop reaching the damaged rows fails.
    full = make_png(a, 8, 2)
    kw = dict(batch_size=1, transforms=[fl.RandomCrop((40, 60))], dtype="uint8", layout="NHWC")
    outcomes = set()
    for seed in range(12):
        try:
            got = batches([data], seed=seed, **kw)
        except DecodeError:
            outcomes.add("failed")
        else:
            assert_equal_batches(got, pillow_route([full], seed=seed, **kw))
            outcomes.add("decoded")
    assert outcomes == {"decoded", "failed"}


@needs_spng
def test_image_data_longer_than_the_image_is_ignored_as_pillow_does():
    """A zlib stream that carries bytes past the last row: Pillow stops at the last row, and so
    does the kernel (libdeflate, which wants the exact size, hands it to zlib)."""
    a = photo_like(40, 30, seed=5)
    good = make_png(a, 8, 2)
    raw = zlib.decompress(good[good.index(b"IDAT") + 4:good.index(b"IEND") - 8])
    longer = good[:33] + chunk(b"IDAT", zlib.compress(raw + bytes(3 * 30 + 1) * 2)) + chunk(b"IEND", b"")
    np.testing.assert_array_equal(pillow_rgb(longer), a)
    for d in (_batch.PngDecoder(), _batch.PngDecoder(whole_stream=False)):
        np.testing.assert_array_equal(d.decode(longer), a)
        np.testing.assert_array_equal(d.decode(longer, region=(3, 10, 20, 25)), a[10:25, 3:20])


@needs_spng
@pytest.mark.parametrize("load_truncated", [False, True])
def test_a_truncated_png_fails_whatever_the_crop(monkeypatch, load_truncated):
    """A file cut short (no IEND) goes to Pillow, which reads every row: even when the crop ends
    above the missing data it fails, or decodes, exactly as on the Pillow route (a file missing
    only IEND decodes there; LOAD_TRUNCATED_IMAGES is Pillow's to apply)."""
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    a = photo_like(400, 60, seed=2)
    whole = make_png(a, 8, 2)
    kw = dict(batch_size=1, transforms=[fl.RandomCrop((20, 60))], dtype="uint8", layout="NHWC")
    failed = 0
    for data in (cut_below(a, 150, complete=False), whole[:len(whole) * 99 // 100], whole[:-12]):
        with pytest.raises(_batch.Unsupported, match="IEND"):
            _batch.PngDecoder().decode(data, region=(10, 20, 50, 40))
        try:
            pillow_decode(data, "x")
        except DecodeError as ref:
            failed += 1
            for seed in range(6):   # crops in the top rows: the kernel alone would never reach the cut
                with pytest.raises(DecodeError) as e:
                    batches([data], seed=seed, **kw)
                assert e.value.reason == ref.reason and "truncated" in ref.reason
        else:
            for seed in range(3):
                assert_equal_batches(batches([data], seed=seed, **kw), pillow_route([data], seed=seed, **kw))
    assert failed == (0 if load_truncated else 2)


# ---- samples: the Loader against the Pillow route -------------------------------------------------

def sample_files():
    """PNGs of every common kind, and a few rare ones, of assorted sizes."""
    rng = np.random.default_rng(8)
    files = []
    for i, mode in enumerate(sorted(PILLOW_MODES)):
        files.append(encode(PILLOW_MODES[mode](photo_like(60 + 17 * i, 90 - 5 * i, seed=i)), "PNG",
                            **({"transparency": 3} if mode == "P-index-transparency" else {})))
    files.append(random_png(rng, 3, 2, 70, 50, True))
    files.append(random_png(rng, 2, 16, 55, 81, False))
    files.append(random_png(rng, 4, 16, 48, 48, True))
    return files


TRANSFORM_SETS = {
    "rrc": [fl.RandomResizedCrop(32), fl.RandomHorizontalFlip(), fl.RandomVerticalFlip()],
    "rrc-nearest": [fl.RandomResizedCrop(24, interpolation="nearest")],
    "rrc-area": [fl.RandomResizedCrop(20, interpolation="area"), fl.RandomRotate90()],
    "center": [fl.Resize(40), fl.CenterCrop(32)],
    "random-crop-padded": [fl.RandomCrop(64, pad_if_needed=True, fill=(9, 8, 7))],
    "resize-jitter": [fl.Resize((30, 50)), fl.ColorJitter(0.3, 0.3, 0.3, 0.1)],
    "no-antialias": [fl.RandomResizedCrop(16, antialias=False)],
}


@pytest.mark.parametrize("name", sorted(TRANSFORM_SETS))
def test_loader_samples_equal_the_pillow_route_bit_for_bit(name):
    files = sample_files()
    for dtype, layout in (("uint8", "NHWC"), ("float32", "NCHW")):
        kw = dict(batch_size=5, shuffle=True, seed=11, transforms=TRANSFORM_SETS[name], dtype=dtype,
                  layout=layout, workers=2)
        assert_equal_batches(batches(files, **kw), pillow_route(files, **kw))


def test_loader_over_png_files_in_a_folder(tmp_path):
    files = sample_files()
    paths = []
    for i, data in enumerate(files):
        paths.append(str(tmp_path / f"{i:02d}.png"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    kw = dict(batch_size=4, shuffle=True, seed=1, transforms=TRANSFORM_SETS["rrc"], dtype="uint8", layout="NHWC")
    for epoch_batches in (batches(paths, workers=0, **kw), batches(paths, workers=2, **kw)):
        assert_equal_batches(epoch_batches, pillow_route(paths, **kw))


@needs_spng
def test_pngs_take_the_compiled_route(monkeypatch, tmp_path):
    """No PNG reaches Pillow unless the kernel hands it over: a corrupt one does, a good one never."""
    calls = []

    def spy(data, name, **kw):
        calls.append(name)
        return pillow_decode(data, name, **kw)
    monkeypatch.setattr(field_module, "pillow_decode", spy)
    good = tmp_path / "good.png"
    good.write_bytes(encode(photo_like(40, 50), "PNG"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(encode(photo_like(40, 50), "PNG")[:300])
    loader = fl.Loader(fl.ImageFiles([good, bad, good]), batch_size=3, transforms=[fl.Resize((8, 8))],
                       on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipping"):
        assert len(next(iter(loader))) == 2
    assert calls == [str(bad)]
    assert "truncated" in loader.stats()["failures"][0][1]


# ---- EXIF orientation ------------------------------------------------------------------------------

def exif_block(orientation=None, big_endian=False, extra_tag=False):
    e = ">" if big_endian else "<"
    entries = []
    if extra_tag:
        entries.append(struct.pack(e + "HHII", 0x010F, 2, 4, 0x00414243))   # Make, inline "CBA\0"
    if orientation is not None:
        entries.append(struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0))
    return (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", len(entries)) \
        + b"".join(entries) + struct.pack(e + "I", 0)


ORIENT = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
          5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
          7: lambda a: np.rot90(a.transpose(1, 0, 2), 2), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow_applies_it(orientation):
    a = photo_like(36, 52, seed=orientation)
    data = make_png(a, 8, 2, before_idat=[(b"eXIf", exif_block(orientation, big_endian=orientation % 2 == 0))])
    np.testing.assert_array_equal(pillow_rgb(data), ORIENT[orientation](a))
    np.testing.assert_array_equal(read_image(data), ORIENT[orientation](a))
    np.testing.assert_array_equal(read_image(data, exif=False), a)
    kw = dict(batch_size=1, dtype="uint8", layout="NHWC")
    # A size-preserving resize: the stored pixels turned upright, exactly.
    size = (52, 36) if orientation >= 5 else (36, 52)
    np.testing.assert_array_equal(batches([data], transforms=[fl.Resize(size)], **kw)[0][0], ORIENT[orientation](a))
    # A crop: the compiled route resamples the stored rectangle, the Pillow route the turned image;
    # the same pixels, whatever the filter (taps and pass order are the turned image's).
    for interpolation in ("bilinear", "area", "nearest"):
        tr = [fl.RandomResizedCrop(20, interpolation=interpolation), fl.RandomHorizontalFlip()]
        assert_equal_batches(batches([data] * 4, transforms=tr, **{**kw, "batch_size": 4}),
                             pillow_route([data] * 4, transforms=tr, **{**kw, "batch_size": 4}))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("interpolation, pillow_filter", [("bilinear", Image.BILINEAR), ("area", Image.BOX)])
def test_a_turned_png_resizes_as_pillow_resizes_the_turned_image(orientation, interpolation, pillow_filter):
    """exif_transpose, then Pillow's resize: BOX's window is half-open, so resampling the stored
    image and mirroring the result moves whole columns (by up to 74 levels here). 45x45 keeps every
    Pillow version on the horizontal pass first (Pillow 13 runs the vertical one first when the
    height shrinks by more than twice the width)."""
    a = np.random.default_rng(orientation).integers(0, 256, (45, 45, 3), dtype=np.uint8)
    a[:, :20] //= 4
    data = make_png(a, 8, 2, before_idat=[(b"eXIf", exif_block(orientation))])
    want = np.asarray(Image.fromarray(ORIENT[orientation](a).copy()).resize((16, 12), pillow_filter,
                                                                             reducing_gap=None))
    got = batches([data], transforms=[fl.Resize((12, 16), interpolation=interpolation)],
                  batch_size=1, dtype="uint8", layout="NHWC")[0][0]
    if fl.features()["pillow_simd"]:   # pillow-simd's resize rounds its own way: within a level
        assert np.abs(got.astype(int) - want).max() <= 1
    else:
        np.testing.assert_array_equal(got, want)


@needs_spng
def test_exif_chunks_the_kernel_reads_and_those_it_leaves_to_pillow():
    a = photo_like(20, 30, seed=3)
    d = _batch.PngDecoder()
    xmp = b"XML:com.adobe.xmp\0\0\0\0\0<x tiff:Orientation=\"3\"/>"
    xmp_6 = b"XML:com.adobe.xmp\0\0\0\0\0<x><tiff:Orientation>6</tiff:Orientation></x>"
    exif_6 = Image.Exif()
    exif_6[0x0112] = 6
    raw = exif_6.tobytes().hex()
    raw_profile = f"\nexif\n{len(raw) // 2:8d}\n{raw}\n".encode()
    cases = {   # name -> (the file, the orientation the kernel reads, or None: it leaves the file to Pillow)
        "no tag": (make_png(a, 8, 2, before_idat=[(b"eXIf", exif_block(None, extra_tag=True))]), 0),
        "prefixed": (make_png(a, 8, 2, before_idat=[(b"eXIf", b"Exif\0\0" + exif_block(6))]), 6),
        "after the image data": (make_png(a, 8, 2)[:-12] + chunk(b"eXIf", exif_block(6)) + chunk(b"IEND", b""), 6),
        "no tag, XMP": (make_png(a, 8, 2, before_idat=[(b"eXIf", exif_block(None)), (b"iTXt", xmp)]), 3),
        "tag over XMP": (make_png(a, 8, 2, before_idat=[(b"eXIf", exif_block(6)), (b"iTXt", xmp)]), 6),
        "XMP only": (make_png(a, 8, 2, before_idat=[(b"iTXt", xmp_6)]), 6),
        "XMP as tEXt": (make_png(a, 8, 2, before_idat=[(b"tEXt", b"XML:com.adobe.xmp\0" + xmp_6[22:])]), 6),
        "XMP without orientation": (make_png(a, 8, 2, before_idat=[(b"iTXt", xmp[:22] + b"<x/>")]), 0),
        "compressed XMP": (make_png(a, 8, 2, before_idat=[
            (b"iTXt", b"XML:com.adobe.xmp\0\1\0\0\0" + zlib.compress(xmp_6[22:]))]), None),
        "ImageMagick's raw profile": (make_png(a, 8, 2, before_idat=[
            (b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(raw_profile))]), None),
        "malformed": (make_png(a, 8, 2, before_idat=[(b"eXIf", b"not a TIFF header")]), None),
        "out of range": (make_png(a, 8, 2, before_idat=[(b"eXIf", exif_block(9))]), None),
    }
    for name, (data, orientation) in cases.items():
        if orientation is None:
            with pytest.raises(_batch.Unsupported):
                d.decode(data)
        else:
            assert d.info(data)["orientation"] == orientation, name
            if orientation <= 1:
                np.testing.assert_array_equal(d.decode(data), a)
        np.testing.assert_array_equal(d.decode(data, exif=False), a)
        # Whoever decodes it, the Loader gives exif_transpose's pixels (the Pillow route's), or its error.
        if name == "prefixed" and PILLOW < (11, 0):   # older Pillows refuse the prefix: the same tag without it
            data_for_pillow = make_png(a, 8, 2, before_idat=[(b"eXIf", exif_block(6))])
        else:
            data_for_pillow = data
        try:
            shown = pillow_rgb(data_for_pillow)
        except Exception:
            shown = None
        kw = dict(batch_size=1, transforms=[fl.Resize(a.shape[:2] if shown is None else shown.shape[:2])],
                  dtype="uint8", layout="NHWC")
        try:
            ref = pillow_route([data_for_pillow], **kw)
        except DecodeError as e:
            assert shown is None, name
            with pytest.raises(DecodeError) as got:
                batches([data], **kw)
            assert got.value.reason == e.reason, name
        else:
            np.testing.assert_array_equal(ref[0][0], shown, err_msg=name)
            assert_equal_batches(batches([data], **kw), ref)
            np.testing.assert_array_equal(read_image(data), shown, err_msg=name)
            assert image_size(data) == shown.shape[1::-1], name


@pytest.mark.parametrize("case", ["eXIf", "XMP", "eXIf before and after", "animated"])
def test_chunks_after_the_image_data_as_exif_transpose_reads_them(tmp_path, case):
    """exif_transpose loads the image first, so Pillow has read the chunks after the image data too:
    the last eXIf wins, and XMP there counts. An animation's are read only up to its next frame: the
    kernel leaves those to Pillow."""
    a = photo_like(20, 30, seed=4)
    xmp = b"XML:com.adobe.xmp\0\0\0\0\0<x tiff:Orientation=\"8\"/>"
    before, after = {
        "eXIf": ([], [(b"eXIf", exif_block(6))]),
        "XMP": ([], [(b"iTXt", xmp)]),
        "eXIf before and after": ([(b"eXIf", exif_block(6))], [(b"eXIf", exif_block(3))]),
        "animated": ([(b"acTL", struct.pack(">II", 1, 0))], [(b"eXIf", exif_block(6))]),
    }[case]
    data = make_png(a, 8, 2, before_idat=before)[:-12] + b"".join(chunk(k, b) for k, b in after) \
        + chunk(b"IEND", b"")
    shown = pillow_rgb(data)
    assert shown.shape[:2] == ((30, 20) if case in ("eXIf", "XMP", "animated") else (20, 30))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    for value in (data, str(path)):
        np.testing.assert_array_equal(read_image(value), shown)
        assert image_size(value) == shown.shape[1::-1]
        got = batches([value], batch_size=1, transforms=[fl.Resize(shown.shape[:2])], dtype="uint8", layout="NHWC")
        np.testing.assert_array_equal(got[0][0], shown)
    np.testing.assert_array_equal(pillow_decode(data, "a.png"), shown)
    if _batch.HAVE_SPNG:
        if case == "animated":
            with pytest.raises(_batch.Unsupported):
                _batch.PngDecoder().decode(data)
        else:   # the kernel reads them itself, skipping the image data
            assert _batch.PngDecoder().info(data)["orientation"] == {"eXIf": 6, "XMP": 8}.get(case, 3)


# ---- bad input -------------------------------------------------------------------------------------

def bad_pngs():
    a = photo_like(30, 40, seed=1)
    good = make_png(a, 8, 2, idat_size=500)
    idat = good.index(b"IDAT")
    second_idat = good.index(b"IDAT", idat + 4)
    ihdr_bad_crc = bytearray(good)
    ihdr_bad_crc[29] ^= 0xFF
    idat_bad_crc = bytearray(good)
    idat_bad_crc[second_idat - 5] ^= 0xFF   # the first IDAT's CRC: Pillow does not check it
    corrupt = bytearray(good)
    corrupt[idat + 60:idat + 90] = bytes(30)
    bad_adler = zlib.compress(scanlines(a, 8))[:-4] + b"\0\0\0\0"   # the zlib stream's own checksum
    return {
        "truncated-header": good[:20],
        "signature-only": good[:8],
        "truncated-half": good[:len(good) // 2],
        "truncated-before-iend": good[:-12],
        "bad-ihdr-crc": bytes(ihdr_bad_crc),
        "bad-idat-crc": bytes(idat_bad_crc),
        "corrupt-zlib": bytes(corrupt),
        "bad-adler": good[:33] + chunk(b"IDAT", bad_adler) + chunk(b"IEND", b""),
        "wrong-signature": b"\x89PNG\r\n\x1a\x0b" + good[8:],
        "zero-width": SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)) + good[33:],
        "bad-depth": SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 40, 30, 3, 2, 0, 0, 0)) + good[33:],
        "palette-missing": make_png(np.zeros((4, 4), int), 8, 3),
        "huge": SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 200_000, 100_000, 8, 2, 0, 0, 0)) + good[33:],
        "huge-width": SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 2**31 - 1, 1, 16, 6, 0, 0, 0)) + good[33:],
    }


BAD = bad_pngs()


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_pngs_fail_or_decode_exactly_as_on_the_pillow_route(tmp_path, name):
    data = BAD[name]
    path = tmp_path / f"{name}.png"
    path.write_bytes(data)
    try:
        ref = pillow_decode(data, str(path))
    except DecodeError as e:
        reason = e.reason
    else:
        reason = None
    tr = dict(batch_size=1, transforms=[fl.Resize((12, 16))], dtype="uint8", layout="NHWC")
    for item in (str(path), data):
        if reason is None:   # Pillow is more lenient here (an IDAT checksum it does not check)
            assert_equal_batches(batches([item], **tr), pillow_route([data], **tr))
            continue
        with pytest.raises(DecodeError) as e:
            batches([item], **tr)
        if name == "huge" and _batch.HAVE_SPNG:   # the kernel's limit, where Pillow's bomb guard fires first
            assert "over the limit of Pillow's decompression-bomb guard" in reason
            assert e.value.reason == "image is 200000x100000 = 20000000000 pixels, over the limit of 178956970"
        else:
            assert e.value.reason == reason
    if reason is not None:
        with pytest.raises(DecodeError) as e:
            next(iter(fl.Loader(fl.ImageFiles([path]), batch_size=1, transforms=[fl.Resize((12, 16))])))
        assert e.value.record == str(path) and str(path) in str(e.value)
    if reason is None:
        np.testing.assert_array_equal(read_image(data), ref)
    else:
        with pytest.raises(DecodeError):
            read_image(data)


@needs_spng
def test_the_kernel_reports_what_is_wrong():
    d = _batch.PngDecoder()
    for name, pattern in (("corrupt-zlib", "row|stream|zlib"), ("zero-width", "width"), ("bad-depth", "depth"),
                          ("palette-missing", "PLTE|palette"), ("bad-adler", "row|stream")):
        with pytest.raises(DecodeError, match=pattern):
            d.decode(BAD[name], name=name)
    for name in ("truncated-half", "truncated-header", "truncated-before-iend", "signature-only"):
        with pytest.raises(_batch.Unsupported, match="ends before its IEND chunk"):   # Pillow decides
            d.decode(BAD[name], name=name)
    with pytest.raises(_batch.Unsupported, match="a chunk's CRC is wrong: Pillow decides"):   # as a tEXt's would
        d.decode(BAD["bad-ihdr-crc"], name="bad-ihdr-crc")
    with pytest.raises(DecodeError, match=r"200000x100000 = 20000000000 pixels, over the limit of 1000"):
        d.decode(BAD["huge"], max_pixels=1000)
    with pytest.raises(_batch.Unsupported, match="not a PNG"):
        d.decode(BAD["wrong-signature"])
    assert d.info(BAD["wrong-signature"]) is None and d.info(b"") is None
    with pytest.raises(_batch.Unsupported):
        d.decode(b"")
    np.testing.assert_array_equal(d.decode(make_png(np.ones((2, 3, 3), int), 8, 2)), np.ones((2, 3, 3)))


@needs_spng
def test_the_pixel_limit_is_checked_before_any_pixel_memory():
    with pytest.raises(DecodeError, match="over the limit of 178956970"):
        batches([BAD["huge"]], batch_size=1, transforms=[fl.Resize((8, 8))])
    with pytest.raises(DecodeError, match="over the limit of 1000"):
        read_image(encode(photo_like(40, 30), "PNG"), max_pixels=1000)


@needs_spng
@pytest.mark.slow
def test_mutated_pngs_never_crash_the_kernels():
    """Byte mutations of valid PNGs through the decoder and the sample kernel: an answer or an error,
    never a crash, and the decoder stays usable."""
    rng = np.random.default_rng(12)
    seeds = [encode(photo_like(40, 56, seed=21), "PNG"), random_png(rng, 3, 4, 30, 20, True),
             random_png(rng, 0, 16, 25, 31, False), make_png(photo_like(20, 20), 8, 2, idat_size=64)]
    d = _batch.PngDecoder()
    w = _batch.Worker()
    plan, (oh, ow) = field_module.compile_plan([fl.RandomResizedCrop(16)], dtype="uint8", max_pixels=10**6)
    out = np.zeros((1, 3, oh, ow), np.uint8)
    status = np.zeros(1, np.int32)
    allowed = {_batch.OK, _batch.UNSUPPORTED, _batch.ERR_TOO_LARGE, _batch.NOT_JPEG}
    for k in range(1500):
        b = bytearray(seeds[k % len(seeds)])
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(b) + 1))
            op = rng.integers(0, 3)
            if op == 0 and pos < len(b):
                b[pos] ^= 1 << int(rng.integers(0, 8))
            elif op == 1:
                del b[pos:]
            else:
                b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9))).astype(np.uint8).tobytes()
        data = bytes(b)
        try:
            d.decode(data, max_pixels=10**6, region=tuple(int(v) for v in rng.integers(-5, 60, 4)))
        except (_batch.Unsupported, DecodeError, ValueError) as e:
            assert str(e)
        w.run_chunk(plan, [data], False, np.array([k], np.uint64), 0, 0, out, status)
        assert status[0] in allowed, status
    np.testing.assert_array_equal(d.decode(seeds[3]), photo_like(20, 20))


# ---- threads -----------------------------------------------------------------------------------

@needs_spng
def test_decoding_releases_the_gil():
    """While one thread is inside the decoder (its busy flag set), another runs Python and calls it:
    possible only if the decode released the GIL. Then two threads with their own decoders."""
    data = encode(photo_like(1400, 1400, seed=4), "PNG")
    d = _batch.PngDecoder()
    inside, done = threading.Event(), threading.Event()
    refused = []

    def decode():
        inside.set()
        for _ in range(3):
            d.decode(data)
        done.set()
    t = threading.Thread(target=decode)
    t.start()
    inside.wait()
    while not done.is_set():
        try:
            d.info(data)
        except RuntimeError as e:
            refused.append(str(e))
            break
    t.join()
    assert refused and "two threads" in refused[0]

    want = _batch.PngDecoder().decode(data)
    results = [None, None]

    def own(i):
        results[i] = [_batch.PngDecoder().decode(data, region=(0, 0, 1400, 1000 + i)) for _ in range(2)]
    threads = [threading.Thread(target=own, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i, rs in enumerate(results):
        for r in rs:
            np.testing.assert_array_equal(r, want[:1000 + i])


# ---- what the build reports ------------------------------------------------------------------------

def test_features_name_the_png_route():
    f = fl.features()
    assert f["libspng_linked"] == _batch.HAVE_SPNG
    if _batch.HAVE_SPNG:
        assert re.fullmatch(r"libspng \d+\.\d+\.\d+ \+ (libdeflate \d+\.\d+\S* \+ )?zlib \d+\.\d+\S*",
                            _batch.png_version())
        assert f["libdeflate_linked"] == _batch.HAVE_LIBDEFLATE == ("libdeflate" in f["png_decoder"])
        assert f["png_decoder"].startswith(_batch.png_version() + " (linked")
    else:
        assert _batch.png_version() == "none"
        assert "libspng" in f["png_decoder"] and "pip install" in f["png_decoder"]


@pytest.mark.parametrize("truncated_ok", [False, True])
def test_a_chunk_with_a_wrong_crc_before_the_image_data_gets_pillows_verdict(tmp_path, monkeypatch, truncated_ok):
    # libspng dropped an ancillary chunk with a wrong CRC without a word and decoded the file, which
    # Pillow refuses (or, under LOAD_TRUNCATED_IMAGES, reads past the chunk).
    from PIL import ImageFile

    def chunk(kind, data, crc=None):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) if crc is None
                                                                         else crc)
    rows = b"".join(b"\0" + bytes(range(i, i + 12)) for i in range(3))
    path = tmp_path / "crc.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 8, 2, 0, 0, 0))
                     + chunk(b"tEXt", b"Comment\0hi", crc=1234) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", truncated_ok)
    loader = fl.Loader(fl.ImageFiles([str(path)]), batch_size=1, transforms=[fl.Resize((3, 4))], dtype="uint8",
                       layout="NHWC")
    if not truncated_ok:
        with pytest.raises(PIL.UnidentifiedImageError):
            Image.open(path).load()
        with pytest.raises(fl.DecodeError, match=re.escape(str(path))):
            next(iter(loader))
    else:
        want = np.asarray(Image.open(path).convert("RGB"))
        np.testing.assert_array_equal(next(iter(loader))[0], want)
