"""The JPEG route through Pillow's own decoder (a build without libjpeg-turbo's headers).

``Worker.run_chunk_pillow`` drives Pillow's decoder from the compiled chunk loop:
it plans each JPEG from its markers, asks Pillow for the leading rows the crop
reaches at draft()'s DCT scale, straight into a reused canvas, and finishes the
sample in C. It must give, bit for bit, what the per-sample Python route gives
(``pillow_jpeg`` / ``pillow_decode``: Pillow's reader, ``draft()``, then the same
kernel), and leave to that route what it does not take. Both builds run these
tests: the route needs Pillow's decoder, not libjpeg-turbo's headers.
"""
import io
import os
import re
import struct
import threading

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

import fastload as fl
from fastload._kernels import _batch
from fastload.image import field as field_mod
from fastload.image.decode import pillow_decode, read_image
from fastload.image.field import ImageField

from helpers import encode, photo_like

pytestmark = pytest.mark.skipif(not _batch.pillow_direct_supported(),
                                reason="this Pillow cannot export its pixels in place (Pillow < 11.2)")

KINDS = {   # name -> Pillow save arguments
    "420": {}, "422": {"subsampling": 1}, "444": {"subsampling": 0},
    "progressive": {"progressive": True}, "restart": {"restart_marker_blocks": 3},
    "restart-rows": {"restart_marker_rows": 1}, "progressive-444": {"progressive": True, "subsampling": 0},
}


def jpeg(h, w, kind="420", seed=0, grey=False, **kw):
    img = photo_like(h, w, seed=seed)
    return encode(img[..., 1] if grey else img, quality=90, **KINDS[kind], **kw)


def pillow_reference(data, scale):
    """Pillow's own reader at DCT scale 1/scale (draft), as RGB."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        im.draft(im.mode, (max(1, w // scale), max(1, h // scale)))
        assert im.size == (-(-w // scale), -(-h // scale))
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("h, w", [(97, 131), (33, 17), (64, 64), (129, 250)])
def test_leading_rows_are_those_of_a_full_decode(kind, h, w):
    """A decode told to stop after `rows` rows gives exactly the first rows of Pillow's full decode,
    across chroma subsampling, progressive scans, restart intervals and iMCU-row boundaries."""
    worker = _batch.Worker()
    for grey in (False, True):
        data = jpeg(h, w, kind, seed=h + w, grey=grey)
        for scale in (1, 2, 4, 8):
            full = pillow_reference(data, scale)
            np.testing.assert_array_equal(worker.decode_pillow(data, scale), full)
            sh = full.shape[0]
            for rows in sorted({1, 2, 7, 8, 9, 15, 16, 17, 31, 33, sh // 2, sh - 1, sh} - {0}):
                if rows <= sh:
                    np.testing.assert_array_equal(worker.decode_pillow(data, scale, rows), full[:rows],
                                                  err_msg=f"{kind} grey={grey} 1/{scale} rows={rows}")


def sample_both_ways(field, items, paths, seed=3, epoch=1, simd=None):
    """(run_chunk_pillow's batch, statuses, failures) and the per-sample Python route's batch."""
    n = len(items)
    h, w = field.size
    shape = (n, 3, h, w) if field.layout == "NCHW" else (n, h, w, 3)
    got, want = np.zeros(shape, field.dtype), np.zeros(shape, field.dtype)
    status = np.zeros(n, np.int32)
    indices = np.arange(10, 10 + n, dtype=np.uint64)
    worker = _batch.Worker()
    failures = worker.run_chunk_pillow(field.plan, items, paths, indices, seed, epoch, got, status)

    class Ctx:
        pass
    ctx = Ctx()
    ctx.seed, ctx.epoch = seed, epoch
    ref = _batch.Worker()
    for i, item in enumerate(items):
        value = os.fsdecode(item) if paths else item
        reason = field._pillow_route(ref, value, item, int(indices[i]), ctx, want[i], try_jpeg=True)
        assert reason is None, reason
    return got, status, failures, want


TRANSFORMS = {
    "rrc224": [fl.RandomResizedCrop(224), fl.RandomHorizontalFlip()],
    "rrc64": [fl.RandomResizedCrop(64)],
    "resize-crop": [fl.Resize(72), fl.CenterCrop(64)],
    "resize": [fl.Resize((40, 52))],
    "random-crop-pad": [fl.RandomCrop(300, pad_if_needed=True)],
    "rrc-jitter-flips": [fl.RandomResizedCrop(48, scale=(0.05, 1.0)), fl.RandomVerticalFlip(),
                         fl.ColorJitter(0.4, 0.4, 0.4, 0.1)],
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("dct_scale", [True, False])
def test_chunk_route_matches_the_per_sample_route(tmp_path, name, dct_scale):
    sizes = [(460, 400), (400, 460), (333, 501), (1100, 700), (64, 64), (250, 40), (37, 301)]
    datas = [jpeg(h, w, kind, seed=i, grey=i % 5 == 4)
             for i, ((h, w), kind) in enumerate(zip(sizes * 2, sorted(KINDS) * 2))]
    for dtype, layout in (("uint8", "NHWC"), ("float32", "NCHW")):
        field = ImageField(TRANSFORMS[name], dtype=dtype, layout=layout, dct_scale=dct_scale)
        got, status, failures, want = sample_both_ways(field, datas, False)
        assert failures == {} and status.tolist() == [_batch.OK] * len(datas)
        np.testing.assert_array_equal(got, want)
    paths = []
    for i, data in enumerate(datas):
        (tmp_path / f"{i}.jpg").write_bytes(data)
        paths.append(os.fsencode(tmp_path / f"{i}.jpg"))
    field = ImageField(TRANSFORMS[name], dtype="uint8", dct_scale=dct_scale)
    got, status, _, want = sample_both_ways(field, paths, True)
    assert status.tolist() == [_batch.OK] * len(paths)
    np.testing.assert_array_equal(got, want)


def test_every_simd_path_gives_the_per_sample_route(tmp_path):
    """The route resamples Pillow's four-byte pixels (RGBX) as four channels and drops the fourth:
    every SIMD path must give what the three-channel resample gives."""
    datas = [jpeg(301 + 13 * i, 257 + 29 * i, kind, seed=i) for i, kind in enumerate(sorted(KINDS))]
    before = _batch.simd()
    try:
        for path in _batch.simd_paths():
            _batch.set_simd(path)
            for transforms in (TRANSFORMS["rrc64"], TRANSFORMS["resize"], [fl.Resize((40, 52), "area")],
                               [fl.RandomResizedCrop(32, interpolation="nearest")]):
                got, status, _, want = sample_both_ways(ImageField(transforms, dtype="uint8"), datas, False)
                assert status.tolist() == [_batch.OK] * len(datas)
                np.testing.assert_array_equal(got, want, err_msg=path)
    finally:
        _batch.set_simd(before)


def with_xmp(data, attributes):
    """An APP1 XMP packet after SOI (Pillow's getexif takes tiff:Orientation from it)."""
    payload = (b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF><rdf:Description "
               + attributes.encode() + b"/></rdf:RDF></x:xmpmeta>")
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def after_frame_header(data, segments):
    """``segments`` (bytes) inserted after the SOF0 segment, where Pillow's reader and libjpeg still
    read markers (skipping bytes that are not one, as both do)."""
    sof = data.index(b"\xff\xc0")
    end = sof + 2 + struct.unpack(">H", data[sof + 2:sof + 4])[0]
    return data[:end] + segments + data[end:]


def test_what_the_route_leaves_to_pillows_reader():
    img = photo_like(40, 50, seed=12)
    exif = Image.Exif()
    exif[274] = 6
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif.tobytes()) + 2) + exif.tobytes()
    cases = {
        "gif": (encode(img, "GIF"), _batch.NOT_JPEG),
        "png": (encode(img, "PNG"), _batch.OK if _batch.HAVE_SPNG else _batch.NOT_JPEG),   # run_chunk's route
        "cmyk": (encode(Image.fromarray(img).convert("CMYK")), _batch.UNSUPPORTED),
        "rotated": (encode(img, exif=exif.tobytes()), _batch.UNSUPPORTED),
        "rotated-by-xmp": (with_xmp(encode(img), 'tiff:Orientation="6"'), _batch.UNSUPPORTED),
        "xmp-without-orientation": (with_xmp(encode(img), 'tiff:Make="x"'), _batch.OK),
        "rotated-after-junk": (after_frame_header(encode(img), b"junk\0" + app1), _batch.UNSUPPORTED),
        "truncated": (encode(img)[:900], _batch.UNSUPPORTED),
        "no-eoi": (encode(img)[:-30], _batch.UNSUPPORTED),
    }
    field = ImageField([fl.Resize((20, 24))], dtype="uint8")
    out = np.zeros((len(cases), 3, 20, 24), np.uint8)
    status = np.zeros(len(cases), np.int32)
    failures = _batch.Worker().run_chunk_pillow(field.plan, [d for d, _ in cases.values()], False,
                                                np.arange(len(cases), dtype=np.uint64), 0, 0, out, status)
    assert failures == {}
    assert dict(zip(cases, status.tolist())) == {k: s for k, (_, s) in cases.items()}
    # which turns them as exif_transpose does
    for name in ("rotated-by-xmp", "rotated-after-junk"):
        turned = ImageOps.exif_transpose(Image.open(io.BytesIO(cases[name][0]))).convert("RGB")
        assert turned.size == (40, 50)
        np.testing.assert_array_equal(pillow_decode(cases[name][0], "x.jpg"), np.asarray(turned))
        assert _batch.jpeg_scan(cases[name][0]) == (50, 40, 3, 6)
    # exif=False takes a rotated JPEG's stored pixels: the route decodes it itself
    field = ImageField([fl.Resize((20, 24))], dtype="uint8", exif=False)
    status = np.zeros(1, np.int32)
    _batch.Worker().run_chunk_pillow(field.plan, [cases["rotated"][0]], False, np.zeros(1, np.uint64), 0, 0,
                                     out[:1], status)
    assert status.tolist() == [_batch.OK]


def test_files_of_other_formats_are_read_only_to_their_first_bytes(tmp_path):
    (tmp_path / "a.bmp").write_bytes(encode(photo_like(20, 20), "BMP"))
    field = ImageField([fl.Resize((8, 8))], dtype="uint8")
    status = np.zeros(2, np.int32)
    failures = _batch.Worker().run_chunk_pillow(
        field.plan, [os.fsencode(tmp_path / "a.bmp"), os.fsencode(tmp_path / "missing.jpg")], True,
        np.arange(2, dtype=np.uint64), 0, 0, np.zeros((2, 3, 8, 8), np.uint8), status)
    assert status.tolist() == [_batch.NOT_JPEG, _batch.ERR_IO]
    assert "cannot open" in failures[1]


def test_limits_and_corruption_are_errors_naming_the_reason(monkeypatch):
    data = jpeg(45, 58)
    sos = data.index(b"\xff\xda")
    corrupt = bytearray(data)
    corrupt[sos + 40:sos + 44] = b"\xff\xd0\xff\xd3"   # restart markers in a scan without an interval
    field = ImageField([fl.Resize((20, 24))], dtype="uint8", max_pixels=58 * 45 - 1)
    items = [data, bytes(corrupt), data[:sos]]
    status = np.zeros(3, np.int32)
    failures = _batch.Worker().run_chunk_pillow(field.plan, items, False, np.arange(3, dtype=np.uint64), 0, 0,
                                                np.zeros((3, 3, 20, 24), np.uint8), status, bomb_pixels=0)
    assert failures[0] == "image is 58x45 = 2610 pixels, over the limit of 2609"
    field = ImageField([fl.Resize((20, 24))], dtype="uint8")
    failures = _batch.Worker().run_chunk_pillow(field.plan, items[:1], False, np.zeros(1, np.uint64), 0, 0,
                                                np.zeros((1, 3, 20, 24), np.uint8), status[:1], bomb_pixels=1000)
    assert failures[0] == "over the limit of Pillow's decompression-bomb guard: 58x45 pixels"
    failures = _batch.Worker().run_chunk_pillow(field.plan, items, False, np.arange(3, dtype=np.uint64), 0, 0,
                                                np.zeros((3, 3, 20, 24), np.uint8), status, bomb_pixels=1306)
    assert 0 not in failures   # Pillow refuses twice its MAX_IMAGE_PIXELS, and warns below that
    assert failures[1].startswith("Corrupt JPEG data: RST3 marker inside a scan without a restart interval")
    assert failures[2].startswith("premature end of JPEG file")
    assert _batch.jpeg_check(bytes(corrupt)) == failures[1] and _batch.jpeg_check(data) is None
    # the same through Pillow's reader (read_image, and the JPEGs the route leaves to it)
    with pytest.raises(fl.DecodeError, match="RST3 marker inside a scan|Corrupt JPEG data"):
        read_image(bytes(corrupt))   # with libjpeg-turbo linked, libjpeg's own warning


def test_restart_markers_where_they_belong_or_after_the_data_are_fine():
    good = jpeg(45, 58, "restart")
    assert b"\xff\xd0" in good and _batch.jpeg_check(good) is None
    data = jpeg(45, 58)
    eoi = data.rindex(b"\xff\xd9")
    assert _batch.jpeg_check(data[:eoi] + b"\xff\xd0" + data[eoi:]) is None   # trails the scan: harmless


def test_truncated_files_fail_whatever_the_crop(monkeypatch):
    """A file without its end (EOI) is decoded to its last row, so it fails every time, not only for
    the crops that reach the missing rows (on both routes); on the Pillow route Pillow's
    LOAD_TRUNCATED_IMAGES is read, as Pillow reads it."""
    data = jpeg(300, 200)[:-200]
    for transforms in ([fl.RandomResizedCrop(32, scale=(0.01, 0.02))], [fl.RandomResizedCrop(16)]):
        loader = fl.Loader(fl.ListSource([jpeg(30, 20)] + [data] * 4, "files"), batch_size=5,
                           transforms=transforms, on_error="skip")
        with pytest.warns(RuntimeWarning, match="skipping"):
            assert sum(len(x) for x in loader) == 1
        failures = loader.stats()["failures"]
        assert len(failures) == 4 and all(re.search("truncated|Premature end", r) for _, r in failures)
    if not _batch.HAVE_LIBJPEG_TURBO:
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        assert len(next(iter(fl.Loader(fl.ListSource([data], "files"), batch_size=1,
                                       transforms=[fl.Resize((8, 8))])))) == 1


@pytest.mark.parametrize("paths", [False, True])
def test_the_canvas_serves_images_of_every_size_in_every_order(tmp_path, paths):
    """One canvas per worker, grown as needed: big and small, wide and tall, in every order, and a
    file left to Pillow's reader between them, each sample still gets its own pixels."""
    sizes = [(40, 30), (500, 900), (700, 60), (33, 47), (1500, 80), (600, 700), (20, 20), (640, 480),
             (650, 500), (31, 1200), (64, 64), (900, 500)] + [(45 + i, 60) for i in range(20)]
    datas = [jpeg(h, w, sorted(KINDS)[i % len(KINDS)], seed=i) for i, (h, w) in enumerate(sizes)]
    datas[5] = encode(photo_like(50, 70, seed=5), "GIF")   # left to Pillow's reader, between JPEGs
    datas[8] = encode(photo_like(50, 70, seed=8), "PNG")   # run_chunk's route (libspng, or Pillow's reader)
    items = datas
    if paths:
        items = []
        for i, data in enumerate(datas):
            (tmp_path / f"{i}.jpg").write_bytes(data)
            items.append(os.fsencode(tmp_path / f"{i}.jpg"))
    for transforms, dct_scale in (([fl.Resize((24, 24))], False), ([fl.RandomResizedCrop(32)], True)):
        field = ImageField(transforms, dtype="uint8", dct_scale=dct_scale)
        got, status, _, want = sample_both_ways(field, items, paths)
        expected = [_batch.OK] * len(items)
        expected[5] = _batch.NOT_JPEG
        expected[8] = _batch.OK if _batch.HAVE_SPNG else _batch.NOT_JPEG
        assert status.tolist() == expected
        got[5] = want[5]
        if not _batch.HAVE_SPNG:
            got[8] = want[8]
        np.testing.assert_array_equal(got, want)


def test_threads_give_what_one_thread_gives():
    datas = [jpeg(200 + 7 * i, 260 - 5 * i, sorted(KINDS)[i % len(KINDS)], seed=i) for i in range(24)]
    field = ImageField([fl.RandomResizedCrop(56), fl.RandomHorizontalFlip()], dtype="uint8")
    serial, status, _, _ = sample_both_ways(field, datas, False)
    outs = [np.zeros_like(serial) for _ in range(3)]

    def run(k):
        for _ in range(3):
            _batch.Worker().run_chunk_pillow(field.plan, datas, False, np.arange(10, 34, dtype=np.uint64), 3, 1,
                                             outs[k], np.zeros(24, np.int32))
    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out in outs:
        np.testing.assert_array_equal(out, serial)


@pytest.mark.skipif(_batch.HAVE_LIBJPEG_TURBO, reason="with libjpeg-turbo linked, JPEGs take the linked route")
def test_loader_batches_match_the_per_sample_route(monkeypatch, image_folder):
    """Through the Loader: the compiled loop gives the batches one Python call per JPEG gives."""
    def batches(route):
        monkeypatch.setattr(field_mod, "_ROUTE", route)
        loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=8, shuffle=True, seed=4, workers=2,
                           transforms=[fl.RandomResizedCrop(40), fl.RandomHorizontalFlip()], dtype="uint8")
        return [np.array(x) for x, _ in loader]
    got, want = batches("pillow"), batches("pillow-python")
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_the_route_is_chosen_once_and_named():
    assert field_mod.jpeg_route() in ("linked", "pillow", "pillow-python")
    assert field_mod.jpeg_route() == ("linked" if _batch.HAVE_LIBJPEG_TURBO else "pillow")


# -- mutated inputs ------------------------------------------------------------------------------

from test_fuzz import ALLOWED, FUZZ, JPEG_SEEDS, TRANSFORMS as FUZZ_TRANSFORMS, fuzzed, output_shape, plans  # noqa: E402
from hypothesis import given, strategies as st  # noqa: E402


@FUZZ
@given(items=st.lists(fuzzed(JPEG_SEEDS), min_size=1, max_size=3), plan=plans, seed=st.integers(0, 2**32))
def test_chunk_route_survives_mutations_and_agrees_where_pillow_decodes(items, plan, seed):
    """Never a crash or an out-of-plan status; a sample the route finishes is, wherever Pillow's
    reader decodes the file too, the per-sample route's (corruption in rows below the crop goes
    unnoticed here, as on the libjpeg-turbo route)."""
    t, kw = plan
    field = ImageField(FUZZ_TRANSFORMS[t], **kw)
    out = np.zeros((len(items), *output_shape(field.size, kw["layout"])), kw["dtype"])
    status = np.empty(len(items), np.int32)
    indices = np.arange(len(items), dtype=np.uint64)
    failed = _batch.Worker().run_chunk_pillow(field.plan, items, False, indices, seed, 0, out, status,
                                              bomb_pixels=Image.MAX_IMAGE_PIXELS)
    assert set(status.tolist()) <= ALLOWED, (status, failed)
    assert sorted(failed) == [i for i in range(len(items)) if status[i] < 0] and all(failed.values())

    class Ctx:
        epoch = 0
    Ctx.seed = seed
    for i in np.flatnonzero(status == _batch.OK):
        want = np.zeros_like(out[i])
        if field._pillow_route(_batch.Worker(), items[i], items[i], int(indices[i]), Ctx, want) is None:
            np.testing.assert_array_equal(out[i], want)


def test_the_plan_asks_for_drafts_scale_and_only_the_rows_the_crop_reaches():
    """pillow_jpeg_plan's scale is the one draft() picks for the crop under reducing_gap (as the
    per-sample route computes it in Python), and its rows cover the crop's bottom plus the
    filter's reach, no more than a few rows beyond; a stream without EOI asks for every row."""
    import math
    field = ImageField([fl.RandomResizedCrop(56)], dtype="uint8")
    data = jpeg(460, 520, seed=9)
    cut = 0
    for index in range(60):
        got = _batch.pillow_jpeg_plan(field.plan, data, 3, 1, index)
        (x0, y0, x1, y1), (oh, ow) = field.plan.box(520, 460, 3, 1, index)
        want = None
        if min(520, 460) >= 2 * 2.0 * 56:
            want = (math.ceil(520 * 2.0 * ow / max(x1 - x0, 1e-9)), math.ceil(460 * 2.0 * oh / max(y1 - y0, 1e-9)))
        k = min(520 // want[0], 460 // want[1]) if want else 0
        scale = next((s for s in (8, 4, 2) if k >= s), 1)
        assert got["scale"] == scale and got["scaled_height"] == -(-460 // scale)
        bottom = y1 * got["scaled_height"] / 460
        reach = max(1.0, (y1 - y0) * got["scaled_height"] / 460 / oh)
        assert got["rows"] >= min(got["scaled_height"], math.ceil(bottom + reach))
        assert got["rows"] <= math.ceil(bottom + reach) + 2
        cut += got["rows"] < got["scaled_height"]
    assert cut > 20
    truncated = _batch.pillow_jpeg_plan(field.plan, data[:-100], 3, 1, 0)
    assert truncated["rows"] == truncated["scaled_height"]
    assert _batch.pillow_jpeg_plan(field.plan, encode(photo_like(20, 20), "PNG"), 3, 1, 0)[0] == _batch.NOT_JPEG
    assert _batch.pillow_jpeg_plan(field.plan, data[:40], 3, 1, 0)[0] == _batch.UNSUPPORTED
