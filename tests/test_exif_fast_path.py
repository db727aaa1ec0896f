"""JPEGs with an EXIF orientation take the C fast path (region decode, DCT scaling) and give what
the Pillow route gives (exif_transpose, then the same kernel with the same random draws).

The fast path plans the crop in displayed coordinates, decodes and resamples the matching stored
rectangle, and applies the orientation together with the random rotation and flips in the final
write. Its resampling takes the taps and the order of the two passes from the displayed image, so
the two routes agree bit for bit, for every filter (BOX's half-open window is not symmetric, so a
mirror must not be left to the final write).
"""
import io
import struct
import sys
import warnings

import numpy as np
import PIL
import pytest
from PIL import Image, ImageOps

import fastload as fl
from fastload._kernels import _batch
from fastload.image import field as field_mod
from fastload.image.decode import pillow_decode
from fastload.image.field import compile_plan
from helpers import encode, photo_like

pytestmark = pytest.mark.skipif(not _batch.HAVE_LIBJPEG_TURBO, reason="the fast path needs libjpeg-turbo")

SEED, EPOCH = 7, 3
MAX_DIFF = 2
SWAPS = (5, 6, 7, 8)
# What each orientation does to the stored pixels to display them (Pillow's exif_transpose).
ORIENT = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
          5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
          7: lambda a: np.rot90(a.transpose(1, 0, 2), 2), 8: lambda a: np.rot90(a, 1)}

AUGMENT = [fl.RandomResizedCrop(32), fl.RandomHorizontalFlip(), fl.RandomVerticalFlip(0.5),
           fl.RandomRotate90(0.5)]


def exif_bytes(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def with_orientation(pixels, orientation, **kw):
    kw.setdefault("quality", 90)
    return encode(pixels, exif=exif_bytes(orientation), **kw)


SMALL = photo_like(53, 71, seed=4)     # stored 71 wide x 53 high: not square, not symmetric
LARGE = photo_like(203, 157, seed=5)   # big enough for DCT scaling to 1/2 and 1/4


def fast(data, plan, size, indices, *, layout="NHWC", dtype=np.uint8):
    """run_chunk on `data` once per index; returns (out, status)."""
    n = len(indices)
    shape = (n, *size, 3) if layout == "NHWC" else (n, 3, *size)
    out = np.zeros(shape, dtype)
    status = np.empty(n, np.int32)
    failed = _batch.Worker().run_chunk(plan, [data] * n, False, np.asarray(indices, np.uint64),
                                       SEED, EPOCH, out, status)
    assert failed == {}
    return out, status


def pillow_route(data, plan, size, indices, *, exif=True, layout="NHWC", dtype=np.uint8):
    """What ImageField's Pillow route writes for the same samples."""
    img = np.ascontiguousarray(pillow_decode(data, "x.jpg", exif=exif))
    shape = (len(indices), *size, 3) if layout == "NHWC" else (len(indices), 3, *size)
    out = np.zeros(shape, dtype)
    w = _batch.Worker()
    for i, index in enumerate(indices):
        assert w.process_rgb(plan, img, SEED, EPOCH, index, out[i]) is None
    return out


def diff_stats(a, b):
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return d.mean(), d.max()


def test_fixtures_carry_their_orientation():
    for o in range(1, 9):
        data = with_orientation(SMALL, o)
        assert _batch.JpegDecoder().info(data)["orientation"] == o
        with Image.open(io.BytesIO(data)) as im:
            shown = np.asarray(ImageOps.exif_transpose(im))
            stored = np.asarray(im)
        np.testing.assert_array_equal(shown, ORIENT[o](stored))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("case", ["resize", "augment"])
@pytest.mark.parametrize("pixels", ["small", "large"])
@pytest.mark.parametrize("interpolation", ["bilinear", "area", "nearest"])
def test_fast_path_matches_pillow_route(orientation, case, pixels, interpolation):
    src = SMALL if pixels == "small" else LARGE
    data = with_orientation(src, orientation)
    if case == "resize":
        transforms = [fl.Resize((24, 40), interpolation=interpolation)]
    else:
        transforms = [fl.RandomResizedCrop(32, interpolation=interpolation), *AUGMENT[1:]]
    plan, size = compile_plan(transforms, dtype="uint8", layout="NHWC", dct_scale=False)
    indices = list(range(48)) if case == "augment" else [0, 1]
    got, status = fast(data, plan, size, indices)
    assert (status == _batch.OK).all(), "the JPEG left the fast path"
    want = pillow_route(data, plan, size, indices)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_fast_path_matches_pillow_route_float_nchw(orientation):
    data = with_orientation(LARGE, orientation)
    transforms = AUGMENT + [fl.Normalize()]
    plan, size = compile_plan(transforms, dtype="float32", layout="NCHW", dct_scale=False)
    got, status = fast(data, plan, size, range(16), layout="NCHW", dtype=np.float32)
    assert (status == _batch.OK).all()
    want = pillow_route(data, plan, size, range(16), layout="NCHW", dtype=np.float32)
    mean, worst = diff_stats(got, want)
    assert mean <= 0.02 and worst <= 0.05, f"mean {mean:.4f}, max {worst:.4f}"   # ~1/255/std


@pytest.mark.parametrize("orientation", range(1, 9))
def test_dct_scaled_fast_path_is_the_oriented_stored_image(orientation):
    """With DCT scaling the fast path is not Pillow's full decode for any orientation; instead
    check it against the raw (exif=False) fast path of the same stored rectangle, oriented: bit for
    bit, but for the rounding between the passes, which run in the other order on a transposed
    image."""
    data = with_orientation(LARGE, orientation)
    h, w = 24, 40
    plan, size = compile_plan([fl.Resize((h, w))], dtype="uint8", layout="NHWC", dct_scale=True)
    raw_size = (w, h) if orientation in SWAPS else (h, w)
    raw_plan, _ = compile_plan([fl.Resize(raw_size)], dtype="uint8", layout="NHWC", dct_scale=True,
                               exif=False)
    got, status = fast(data, plan, size, [0])
    raw, raw_status = fast(data, raw_plan, raw_size, [0])
    assert (status == _batch.OK).all() and (raw_status == _batch.OK).all()
    want = ORIENT[orientation](raw[0])
    if orientation in SWAPS:
        assert np.abs(got[0].astype(int) - want).max() <= 1
    else:
        np.testing.assert_array_equal(got[0], want)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_dct_scaled_random_crops_stay_close(orientation):
    """DCT-scaled region decodes of random crops: as close to Pillow as orientation 1 is (a wrong
    stored rectangle would be far off)."""
    data = with_orientation(LARGE, orientation)
    plan, size = compile_plan(AUGMENT, dtype="uint8", layout="NHWC", dct_scale=True)
    got, status = fast(data, plan, size, range(48))
    assert (status == _batch.OK).all()
    mean, peak = diff_stats(got, pillow_route(data, plan, size, range(48)))
    # 0.15 to 0.28, at most 5, here; a box mapped by the scaled size's ratio gives about 1, up to 25
    assert mean <= 0.4 and peak <= 8, f"mean {mean:.3f}, max {peak}"



def with_xmp(data, orientation):
    """An APP1 XMP packet holding tiff:Orientation, after SOI: Pillow's getexif reads it when the
    Exif block has no Orientation tag."""
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              '<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
              f'tiff:Orientation="{orientation}"/></rdf:RDF></x:xmpmeta>').encode()
    payload = b"http://ns.adobe.com/xap/1.0/\0" + packet
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


# Pillow reads a JPEG's XMP orientation in exif_transpose from 11.2 (fastload reads it on any)
XMP_PILLOW = pytest.mark.skipif(tuple(int(v) for v in PIL.__version__.split(".")[:2]) < (11, 2),
                                reason="Pillow before 11.2 leaves a JPEG's XMP orientation out of exif_transpose")


@XMP_PILLOW
@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("exif", ["none", "without-tag", "tag-3"])
def test_an_xmp_orientation_takes_the_fast_path_as_exif_transpose_reads_it(orientation, exif):
    e = Image.Exif()
    if exif == "tag-3":
        e[0x0112] = 3
    kw = {} if exif == "none" else {"exif": e.tobytes()}
    data = with_xmp(encode(SMALL, quality=90, **kw), orientation)
    with Image.open(io.BytesIO(data)) as im:
        stored = np.asarray(im)
        shown = np.asarray(ImageOps.exif_transpose(im))
    applied = 3 if exif == "tag-3" else orientation   # the Exif block's tag wins
    np.testing.assert_array_equal(shown, ORIENT[applied](stored))
    assert max(_batch.JpegDecoder().info(data)["orientation"], 1) == applied   # 0: none to apply
    np.testing.assert_array_equal(pillow_decode(data, "x.jpg"), shown)
    plan, size = compile_plan([fl.Resize(shown.shape[:2])], dtype="uint8", layout="NHWC", dct_scale=False)
    got, status = fast(data, plan, size, [0])
    assert (status == _batch.OK).all(), "the JPEG left the fast path"
    assert np.abs(got[0].astype(int) - shown).max() <= 1
    plan, size = compile_plan(AUGMENT, dtype="uint8", layout="NHWC", dct_scale=False)
    got, status = fast(data, plan, size, range(16))
    mean, worst = diff_stats(got, pillow_route(data, plan, size, range(16)))
    assert (status == _batch.OK).all() and mean <= 1.0 and worst <= MAX_DIFF, f"mean {mean:.3f}, max {worst}"


@XMP_PILLOW
def test_an_xmp_turn_beside_an_exif_block_only_pillow_reads_is_left_to_it():
    """An Exif block this parser cannot read for certain (IFD0 past its end, a value out of range)
    may hold a tag Pillow reads, which would win over XMP's: Pillow decides, and the Loader gives
    exif_transpose's pixels."""
    for block in (b"Exif\0\0II*\0\xff\xff\xff\x7f", exif_bytes(9)):
        jpeg = encode(SMALL, quality=90)
        data = with_xmp(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block + jpeg[2:], 6)
        with warnings.catch_warnings():   # Pillow warns of the malformed block, then reads the XMP
            warnings.simplefilter("ignore")
            shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
            plan, size = compile_plan([fl.Resize(shown.shape[:2])], dtype="uint8", layout="NHWC")
            _, status = fast(data, plan, size, [0])
            assert status[0] == _batch.UNSUPPORTED
            loader = fl.Loader(fl.ListSource([data], "files"), batch_size=1, dtype="uint8", layout="NHWC",
                               transforms=[fl.Resize(shown.shape[:2])])
            np.testing.assert_array_equal(next(iter(loader))[0], shown)


def test_cmyk_with_orientation_still_takes_the_pillow_route():
    data = encode(Image.fromarray(SMALL).convert("CMYK"), quality=92, exif=exif_bytes(6))
    plan, size = compile_plan([fl.Resize((24, 40))], dtype="uint8", layout="NHWC")
    _, status = fast(data, plan, size, [0])
    assert status[0] == _batch.UNSUPPORTED


def test_loader_exif_false_keeps_stored_orientation_on_fast_path(tmp_path, monkeypatch):
    taken = []
    original = field_mod.ImageField._pillow_route

    def spy(self, *args, **kw):
        taken.append(args[0])
        return original(self, *args, **kw)

    monkeypatch.setattr(field_mod.ImageField, "_pillow_route", spy)
    paths = []
    for o in range(1, 9):
        p = tmp_path / f"exif{o}.jpg"
        p.write_bytes(with_orientation(SMALL, o))
        paths.append(str(p))

    def load(size, exif):
        loader = fl.Loader(fl.ListSource(paths, "files"), batch_size=len(paths), dtype="uint8",
                           layout="NHWC", dct_scale=False, workers=2, exif=exif,
                           transforms=[fl.Resize(size)])
        return np.array(next(iter(loader)))

    stored_size = SMALL.shape[:2]
    raw = load(stored_size, exif=False)
    for o, path, got in zip(range(1, 9), paths, raw):
        with Image.open(path) as im:
            want = np.asarray(im.convert("RGB").resize(stored_size[::-1], Image.BILINEAR))
        mean, worst = diff_stats(got, want)
        assert mean <= 1.0 and worst <= MAX_DIFF, f"orientation {o} raw: mean {mean:.3f}, max {worst}"
    np.testing.assert_array_equal(raw, np.broadcast_to(raw[0], raw.shape))   # same stored pixels
    for o in range(1, 9):   # and exif=True shows those pixels turned
        size = stored_size[::-1] if o in SWAPS else stored_size
        got = load(size, exif=True)[o - 1]
        mean, worst = diff_stats(got, ORIENT[o](raw[o - 1]))
        assert mean <= 1.0 and worst <= MAX_DIFF, f"orientation {o} turned: mean {mean:.3f}, max {worst}"
    assert taken == [], "a JPEG took the Pillow route"


if __name__ == "__main__":   # timing: python tests/test_exif_fast_path.py
    import time
    photo = photo_like(400, 460, seed=1)
    plan, size = compile_plan([fl.RandomResizedCrop(224)], dtype="uint8", layout="NHWC")
    worker = _batch.Worker()
    out = np.zeros((1, *size, 3), np.uint8)
    status = np.empty(1, np.int32)

    def median_us(fn, n=300):
        for i in range(20):
            fn(i)
        times = []
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t)
        return 1e6 * float(np.median(times))

    for o in (1, 6):
        data = with_orientation(photo, o)

        def via_pillow(i, data=data):
            worker.process_rgb(plan, np.ascontiguousarray(pillow_decode(data, "x", exif=True)),
                               SEED, EPOCH, i, out[0])

        def via_fast(i, data=data):
            worker.run_chunk(plan, [data], False, np.array([i], np.uint64), SEED, EPOCH, out, status)
            assert status[0] == _batch.OK

        print(f"EXIF {o}: Pillow route {median_us(via_pillow):.0f} us, fast path {median_us(via_fast):.0f} us",
              file=sys.stderr)


@pytest.mark.parametrize("kind, count", [(8, 1), (9, 1), (6, 1), (3, 2)])   # SSHORT, SLONG, SBYTE; SHORT x 2
def test_an_orientation_tag_of_another_type_or_count_is_left_to_pillow(tmp_path, kind, count):
    # Only a SHORT or LONG of count 1 was read; any other form was taken for no turn, where
    # Pillow's getexif reads the 6 and exif_transpose turns the image.
    pack = {3: ">HHIHH", 8: ">HHIhH", 9: ">HHIi", 6: ">HHIbxxx"}[kind]
    entry = struct.pack(pack, 0x112, kind, count, 6, *([0] if kind in (3, 8) else []))
    tiff = b"MM\0*" + struct.pack(">IH", 8, 1) + entry + b"\0\0\0\0"
    app1 = b"Exif\0\0" + tiff
    jpg = encode(photo_like(16, 24, seed=4), quality=95)
    (tmp_path / "a.jpg").write_bytes(jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:])
    with warnings.catch_warnings():   # Pillow warns of a count of 2
        warnings.simplefilter("ignore", UserWarning)
        want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "a.jpg")).convert("RGB"))
        got = next(iter(fl.Loader(fl.ImageFiles([str(tmp_path / "a.jpg")]), batch_size=1,
                                  transforms=[fl.Resize(want.shape[:2])], dtype="uint8", layout="NHWC")))[0]
    assert want.shape == (24, 16, 3)
    np.testing.assert_array_equal(got, want)
