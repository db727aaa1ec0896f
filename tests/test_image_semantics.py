"""Image semantics against the references users know: Pillow's decoding and
resizing, torchvision's documented conventions (written out here: torchvision
itself is not a test dependency), NumPy. Each test fails on a build that
deviates from the convention it names."""
import io
import math
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

import fastload as fl
from fastload._kernels import _batch
from fastload.image.decode import image_size, pillow_decode
from fastload.image.field import compile_plan

from helpers import encode, photo_like


def first_batch(root, transforms, **kw):
    kw.setdefault("dtype", "uint8")
    kw.setdefault("layout", "NHWC")
    field = fl.Image(transforms, dtype=kw.pop("dtype"), layout=kw.pop("layout"), **kw)
    records = [{"image": p} for p in sorted(str(p) for p in root.iterdir())]
    return next(iter(fl.Loader(fl.ListSource(records), batch_size=len(records), fields={"image": field})))["image"]


# -- TIFF orientation -------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_tiff_orientation_is_applied_once(tmp_path, orientation):
    stored = photo_like(30, 44, 3, seed=orientation)
    path = tmp_path / "o.tif"
    Image.fromarray(stored).save(path, tiffinfo={274: orientation})
    # EXIF/TIFF orientation: 3 rotate 180, 6 shown rotated 90 clockwise, 8 counter-clockwise
    shown = {3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[orientation]
    np.testing.assert_array_equal(pillow_decode(path.read_bytes(), "o.tif"), shown)
    np.testing.assert_array_equal(pillow_decode(path.read_bytes(), "o.tif", exif=False), stored)
    assert image_size(path) == (shown.shape[1], shown.shape[0])
    assert image_size(path, exif=False) == (stored.shape[1], stored.shape[0])
    h, w = shown.shape[:2]
    np.testing.assert_array_equal(first_batch(tmp_path, [fl.CenterCrop((h, w))])[0], shown)


# -- DCT scaling within Pillow's reducing_gap ------------------------------------------------

def pil_resize_center_crop(path, short, crop):
    """torchvision: Resize(short) (shorter side, bilinear + antialias on PIL) then CenterCrop(crop)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = int(round((nw - crop) / 2.0)), int(round((nh - crop) / 2.0))
        return np.asarray(im.crop((left, top, left + crop, top + crop)))


def test_resize_center_crop_is_within_one_grey_level_of_pillow(tmp_path):
    """ImageNet-like JPEGs (~ 4x the output): DCT scaling stays >= 2x the output (Pillow's
    reducing_gap), so the samples stay within a mean of 1 grey level of Pillow's."""
    paths = []
    for i in range(6):
        img = photo_like(700 + 40 * i, 640 - 30 * i, 3, seed=100 + i)
        img = np.clip(img.astype(int) + np.random.default_rng(i).integers(-40, 40, img.shape), 0, 255)
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(img.astype(np.uint8)).save(paths[-1], quality=90)
    got = first_batch(tmp_path, [fl.Resize(160), fl.CenterCrop(128)])
    means = []
    for path, sample in zip(sorted(paths), got):
        ref = pil_resize_center_crop(path, 160, 128)
        means.append(float(np.abs(sample.astype(int) - ref).mean()))
    assert max(means) <= 1.0, means


def sharp_jpeg(h, w):
    """Ramps and a diagonal saw tooth: detail that a box off by a fraction of a pixel shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=100, subsampling=0)
    return buf.getvalue()


def draft_resize(data, size, box, gap=2.0):
    """Pillow's thumbnail(): draft() to the DCT scale that keeps the box gap x the output, then
    resize of the box mapped through draft()'s own box (a full-size X is X / scale, the last
    scaled column reaching past the edge), bilinear."""
    (oh, ow), (x0, y0, x1, y1) = size, box
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        _, (_, _, sw, sh) = im.draft("RGB", (math.ceil(w * gap * ow / (x1 - x0)), math.ceil(h * gap * oh / (y1 - y0))))
        kx, ky = sw / w, sh / h
        return np.asarray(im.convert("RGB").resize((ow, oh), Image.BILINEAR,
                                                   box=(x0 * kx, y0 * ky, x1 * kx, y1 * ky))), round(1 / kx)


# (h, w): widths and heights mostly not multiples of the scale, which the mapping is about
DRAFT_SIZES = [(333, 517), (375, 500), (401, 611), (259, 257), (700, 1100)]


@pytest.mark.parametrize("h, w", DRAFT_SIZES)
def test_a_dct_scaled_decode_maps_the_box_as_draft_does(tmp_path, h, w):
    """Scaled pixel j is source pixels [j * s, (j + 1) * s): the box maps by 1 / s. Mapped by the
    scaled size's ratio instead (ceil(w / s) / w), the image is stretched towards the far edges
    by up to most of a scaled pixel: 96 grey levels off here at 333x517."""
    from fastload.image.field import ImageField
    data = sharp_jpeg(h, w)
    (tmp_path / "a.jpg").write_bytes(data)
    size = (40, 64)
    want, scale = draft_resize(data, size, (0, 0, w, h))
    assert scale > 1
    # the Pillow route decodes with Pillow's decoder: bit for bit
    field = ImageField([fl.Resize(size)], dtype="uint8", layout="NHWC")

    class Ctx:
        seed, epoch = 0, 0
    got = np.zeros((1, *size, 3), np.uint8)
    assert field._pillow_route(_batch.Worker(), data, data, 0, Ctx(), got[0]) is None
    np.testing.assert_array_equal(got[0], want)
    # the compiled route's libjpeg-turbo decodes its scaled pixels a grey level or so apart
    got = first_batch(tmp_path, [fl.Resize(size)])[0]
    d = np.abs(got.astype(int) - want)
    assert d.max() <= 3 and d.mean() <= 0.1, (d.max(), d.mean())
    # and random crops: the Pillow route against the same reference, box by box
    field = ImageField([fl.RandomResizedCrop(size)], dtype="uint8", layout="NHWC")
    for index in range(12):
        box, _ = field.plan.box(w, h, Ctx.seed, Ctx.epoch, index)
        want, _ = draft_resize(data, size, box)
        assert field._pillow_route(_batch.Worker(), data, data, index, Ctx(), got) is None
        np.testing.assert_array_equal(got, want, err_msg=f"crop {index}: {box}")


def exif_jpeg(img, orientation, mode="RGB"):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(img).convert(mode).save(buf, "JPEG", quality=98, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["CMYK", "RGB"])
def test_a_flipped_dct_scaled_jpeg_on_the_pillow_route_is_not_shifted(mode):
    """Pillow's route transposes the drafted image: a flip moves the part pixel at the far edge to
    the origin, where X / s no longer maps. The scale is lowered until it divides every axis the
    orientation runs backwards (201 x 161 is odd: no scaling there), so every orientation matches
    exif_transpose + resize; mapped as before, orientations 2-4 and 6-8 were off by up to (s - 1)
    full-size pixels (a mean of 2-4 grey levels on this ramp). CMYK takes this route on every build."""
    h, w = 161, 201
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.repeat((xx * 127 // (w - 1) + yy * 127 // (h - 1)).astype(np.uint8)[:, :, None], 3, 2)
    for orientation in range(1, 9):
        data = exif_jpeg(ramp, orientation, mode)
        with Image.open(io.BytesIO(data)) as im:
            want = np.asarray(ImageOps.exif_transpose(im).convert("RGB").resize((12, 12), Image.BILINEAR))
        loader = fl.Loader(fl.ListSource([data]), batch_size=1, dtype="uint8", layout="NHWC",
                           transforms=[fl.Resize((12, 12))])
        got = next(iter(loader))[0]
        d = np.abs(got.astype(int) - want)
        assert d.mean() <= 0.5 and d.max() <= 2, (orientation, d.mean(), d.max())
        # the scale draft() would pick (8) where the flipped axes allow it, lowered where not
        _, shown, scale = pillow_decode(data, "x.jpg", draft_size=(12, 12))
        assert shown == ((h, w) if orientation > 4 else (w, h))
        assert scale == {1: 8, 5: 8}.get(orientation, 1), (orientation, scale)
    # sides that are multiples of 8 keep the scale in every orientation
    even = np.ascontiguousarray(ramp[:160, :200])
    for orientation in range(1, 9):
        assert pillow_decode(exif_jpeg(even, orientation, mode), "x.jpg", draft_size=(12, 12))[2] == 8


@pytest.mark.parametrize("sampling", ["2x2", "2x1", "1x2", "4x1", "1x4", "4x2", "2x4", "1x1"])
def test_a_cropped_dct_scaled_jpeg_of_every_chroma_sampling_matches_pillow(tmp_path, sampling):
    """libjpeg-turbo 2.1 decodes a cropped, DCT-scaled 4x2 or 2x4 JPEG with wrong colours that change
    with what the decoder decoded before (12 and 29 grey levels off on average here): beyond 2x2
    sampling, a scaled decode keeps every column. Every sampling cjpeg writes, within a grey level
    of Pillow's full-size resize, and the same whichever JPEG the thread decoded before."""
    import shutil
    import subprocess
    cjpeg = shutil.which("cjpeg")
    if cjpeg is None:
        pytest.skip("cjpeg not installed (Debian: apt-get install libjpeg-turbo-progs)")
    h, w = 192, 256
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8)
    data = subprocess.run([cjpeg, "-quality", "95", "-sample", sampling], input=_ppm(smooth),
                          capture_output=True, check=True).stdout
    other = subprocess.run([cjpeg, "-quality", "95"], input=_ppm(photo_like(h, w, 3, seed=3)),
                           capture_output=True, check=True).stdout
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im.convert("RGB").resize((32, 24), Image.BILINEAR, box=(48, 36, 208, 156)))
    transforms = [fl.CenterCrop((120, 160)), fl.Resize((24, 32))]
    alone = fl.Loader(fl.ListSource([data]), batch_size=1, dtype="uint8", layout="NHWC", transforms=transforms)
    after = fl.Loader(fl.ListSource([other, data]), batch_size=2, workers=1, dtype="uint8", layout="NHWC",
                      transforms=transforms)
    got = next(iter(alone))[0]
    d = np.abs(got.astype(int) - want)
    assert d.mean() <= 0.5 and d.max() <= 2, (d.mean(), d.max())
    np.testing.assert_array_equal(next(iter(after))[1], got)


def _ppm(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PPM")
    return buf.getvalue()


def test_nearest_returns_source_pixels(tmp_path):
    img = photo_like(256, 320, 3, seed=5)
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    decoded = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))
    got = first_batch(tmp_path, [fl.Resize((1, 1), interpolation="nearest")])[0, 0, 0]
    # NEAREST_EXACT: the pixel under the output pixel's centre, floor(0.5 * size)
    np.testing.assert_array_equal(got, decoded[128, 160])


# -- value range ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", np.float32, "float16"])
def test_float_without_normalize_is_scaled_to_unit_range(tmp_path, dtype):
    img = photo_like(16, 16, 3, seed=1)
    Image.fromarray(img).save(tmp_path / "a.png")
    got = first_batch(tmp_path, [fl.CenterCrop(16)], dtype=dtype, layout="NCHW")[0]
    # torchvision ToDtype(torch.float32, scale=True) on uint8: x / 255
    want = (img.astype(np.float64) / 255).astype(np.dtype(dtype)).transpose(2, 0, 1)
    assert got.dtype == np.dtype(dtype) and 0 <= got.min() and got.max() <= 1
    np.testing.assert_array_equal(got, want)
    raw = first_batch(tmp_path, [fl.CenterCrop(16)], dtype=dtype, layout="NCHW", scale=False)[0]
    np.testing.assert_array_equal(raw, img.astype(np.dtype(dtype)).transpose(2, 0, 1))


# -- crops larger than the image --------------------------------------------------------------

def test_center_crop_pads_like_torchvision(tmp_path):
    img = photo_like(5, 9, 3, seed=2)
    Image.fromarray(img).save(tmp_path / "a.png")
    got = first_batch(tmp_path, [fl.CenterCrop((8, 12))])[0]
    # torchvision CenterCrop: pad left/top by (crop - size) // 2, right/bottom by the rest, zeros
    want = np.zeros((8, 12, 3), np.uint8)
    want[1:6, 1:10] = img
    np.testing.assert_array_equal(got, want)
    # a crop taller than the image but narrower: pad rows, crop columns at round((w - c) / 2)
    got = first_batch(tmp_path, [fl.CenterCrop((7, 4))])[0]
    want = np.zeros((7, 4, 3), np.uint8)
    want[1:6] = img[:, 2:6]
    np.testing.assert_array_equal(got, want)


def test_random_crop_raises_unless_pad_if_needed(tmp_path):
    Image.fromarray(photo_like(5, 9, 3, seed=3)).save(tmp_path / "a.png")
    with pytest.raises(fl.DecodeError, match=r"RandomCrop\(8\): the 9x5 image is smaller than the 8x8 crop"):
        first_batch(tmp_path, [fl.RandomCrop(8)])


def test_random_crop_pad_if_needed_places_the_image_like_torchvision(tmp_path):
    img = photo_like(5, 9, 3, seed=4)
    for i in range(40):
        Image.fromarray(img).save(tmp_path / f"{i:02d}.png")
    fill = (9, 200, 31)
    got = first_batch(tmp_path, [fl.RandomCrop((8, 12), pad_if_needed=True, fill=fill)])
    # torchvision: pad by (crop - size) on both sides of each short axis, then a uniform crop,
    # so the image lands at row offset 0..3 and column offset 0..3 with fill around it
    offsets = set()
    for sample in got:
        hits = [(r, c) for r in range(4) for c in range(4) if (sample[r:r + 5, c:c + 9] == img).all()]
        assert len(hits) == 1, "image not found whole in the padded crop"
        (r, c), = hits
        mask = np.ones((8, 12), bool)
        mask[r:r + 5, c:c + 9] = False
        assert (sample[mask] == fill).all()
        offsets.add((r, c))
    assert len(offsets) >= 8   # 16 placements, uniformly drawn


def test_padding_crop_must_be_last_to_pad(tmp_path):
    Image.fromarray(photo_like(5, 9, 3, seed=4)).save(tmp_path / "a.png")
    with pytest.raises(fl.DecodeError, match=r"CenterCrop\(16\): the 9x5 image is smaller than the 16x16 crop"):
        first_batch(tmp_path, [fl.CenterCrop(16), fl.Resize((8, 8))])
    first_batch(tmp_path, [fl.CenterCrop(4), fl.Resize((8, 8))])   # no padding needed: fine


@pytest.mark.parametrize("kind", ["png", "jpeg", "gif", "array"])
def test_a_crop_too_large_names_the_size_it_was_given(kind):
    """The crop is compared with what the transforms before it leave, not with the decoded image:
    the error names that size and the transform that made it, whichever route decoded the file."""
    img = photo_like(37, 53, 3, seed=5)
    value = img if kind == "array" else encode(img, kind.upper())
    for transforms, message in [
        ([fl.Resize((20, 20)), fl.RandomCrop(30)],
         "RandomCrop(30): the image is 20x20 after Resize((20, 20)), smaller than the 30x30 crop ("),
        ([fl.Resize(100), fl.CenterCrop((120, 64)), fl.Resize((8, 8))],
         "CenterCrop((120, 64)): the image is 143x100 after Resize(100), smaller than the 64x120 crop ("),
        ([fl.RandomCrop(40)], "RandomCrop(40): the 53x37 image is smaller than the 40x40 crop ("),
    ]:
        loader = fl.Loader(fl.ListSource([value]), batch_size=1, workers=0, transforms=transforms, dtype="uint8")
        with pytest.raises(fl.DecodeError) as e:
            next(iter(loader))
        assert str(e.value).startswith("ListSource[0]: " + message), str(e.value)
    plan, _ = compile_plan([fl.Resize((20, 20)), fl.RandomCrop(30)])
    with pytest.raises(ValueError, match=r"^RandomCrop\(30\): the image is 20x20 after Resize\(\(20, 20\)\)"):
        plan.box(53, 37, 0, 0, 0)


# -- ColorJitter ------------------------------------------------------------------------------

def rgb2hsv(x):
    """torchvision's _rgb2hsv on floats in [0, 1] (last axis RGB)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    maxc, minc = x.max(-1), x.min(-1)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / np.where(eqc, 1.0, maxc)
    crd = np.where(eqc, 1.0, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = np.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return h, s, maxc


def hsv2rgb(h, s, v):
    """torchvision's _hsv2rgb."""
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.astype(int) % 6
    p = np.clip(v * (1.0 - s), 0, 1)
    q = np.clip(v * (1.0 - s * f), 0, 1)
    t = np.clip(v * (1.0 - s * (1.0 - f)), 0, 1)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(h.shape + (3,))
    for k, (a, b, c) in enumerate(table):
        out[i == k] = np.stack([a, b, c], -1)[i == k]
    return out


def adjust_hue_ref(img, factor):
    h, s, v = rgb2hsv(img.astype(np.float64) / 255)
    return hsv2rgb((h + factor) % 1.0, s, v) * 255


@pytest.mark.parametrize("factor", [-0.5, -0.23, 0.1, 0.37])
def test_hue_matches_torchvision(factor):
    img = photo_like(37, 41, 3, seed=8)
    got = img.copy()
    _batch.color_jitter(got, 1.0, 1.0, 1.0, factor)
    # torchvision converts back with x * 255.999 truncated; fastload rounds: within one level
    assert np.abs(got - adjust_hue_ref(img, factor)).max() <= 1.0


def test_color_jitter_accepts_ranges_and_hue(tmp_path):
    img = photo_like(12, 12, 3, seed=9)
    Image.fromarray(img).save(tmp_path / "a.png")
    # degenerate ranges fix each factor: brightness 0.5 exactly, hue +0.25
    got = first_batch(tmp_path, [fl.CenterCrop(12), fl.ColorJitter(brightness=(0.5, 0.5), hue=(0.25, 0.25))])[0]
    half = np.floor(img * 0.5 + 0.5)
    assert np.abs(got - adjust_hue_ref(half.astype(np.uint8), 0.25)).max() <= 1.0
    assert fl.ColorJitter(0.4, (0.5, 1.5), 0, 0.1).ranges() == ((0.6, 1.4), (0.5, 1.5), (1.0, 1.0), (-0.1, 0.1))
    assert fl.ColorJitter(brightness=2).ranges()[0] == (0.0, 3.0)   # clipped at 0, as torchvision


@pytest.mark.parametrize("kw, match", [
    (dict(brightness=math.nan), "brightness"), (dict(saturation=math.inf), "saturation"),
    (dict(contrast=-0.1), "contrast"), (dict(hue=0.6), "hue"), (dict(hue=(-0.6, 0.1)), "hue"),
    (dict(brightness=(1.5, 0.5)), "brightness"), (dict(saturation="1"), "saturation"),
])
def test_color_jitter_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        fl.ColorJitter(**kw)


# -- constructor checks -----------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: fl.Resize("22"), "Resize size"),
    (lambda: fl.CenterCrop("64"), "CenterCrop size"),
    (lambda: fl.Resize((32.9, 32.9)), r"Resize size\[0\]"),
    (lambda: fl.Resize(32.0), "Resize size"),
    (lambda: fl.Resize(0), "Resize size"),
    (lambda: fl.Resize(64, max_size=10), "max_size"),
    (lambda: fl.RandomCrop(8, fill=300), "fill"),
    (lambda: fl.RandomResizedCrop(8, scale=(0.5, 0.1)), "scale"),
    (lambda: fl.RandomResizedCrop(8, ratio=(math.nan, 1)), "ratio"),
    (lambda: fl.RandomHorizontalFlip(p=1.5), "p"),
    (lambda: fl.Normalize(mean=(0, 0, math.nan)), "mean"),
])
def test_constructors_name_the_bad_argument(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make()


def test_tiny_std_cannot_put_inf_in_float16():
    with pytest.raises(ValueError, match="std"):
        fl.Image([fl.CenterCrop(4), fl.Normalize(std=(1e-6, 1e-6, 1e-6))], dtype="float16")
    fl.Image([fl.CenterCrop(4), fl.Normalize(std=(1e-6, 1e-6, 1e-6))], dtype="float32")


def test_accepted_forms():
    assert fl.Resize([32]).op()[:3] == fl.Resize(32).op()[:3]
    assert fl.Resize(np.int64(32)).static_size is None
    assert fl.Resize((np.int32(5), 7)).static_size == (5, 7)
    assert fl.Resize(64, max_size=65).max_size == 65
    assert fl.Image([fl.CenterCrop(4)], dtype=np.float32).outputs()[0].dtype == np.float32
    assert fl.Image([fl.CenterCrop(4)], dtype=np.dtype("uint8")).outputs()[0].dtype == np.uint8


# -- the compiled path the Loader runs ----------------------------------------------------------

@pytest.mark.parametrize("dtype, layout", [("float32", "NCHW"), ("float16", "NHWC"), ("uint8", "NCHW")])
def test_every_simd_path_gives_the_same_batches(tmp_path, dtype, layout):
    for i in range(6):
        Image.fromarray(photo_like(90 + 7 * i, 110 - 5 * i, 3, seed=i)).save(tmp_path / f"{i}.jpg")
        Image.fromarray(photo_like(50, 60 + i, 3, seed=i)).save(tmp_path / f"{i}.png")
    transforms = [fl.RandomResizedCrop(40), fl.RandomHorizontalFlip(), fl.ColorJitter(0.4, 0.4, 0.4, 0.1)]
    if dtype != "uint8":
        transforms.append(fl.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)))
    default = _batch.simd()
    try:
        batches = {}
        for path in _batch.simd_paths():
            _batch.set_simd(path)
            batches[path] = first_batch(tmp_path, transforms, dtype=dtype, layout=layout)
    finally:
        _batch.set_simd(default)
    assert fl.features()["simd"] == default and default in batches
    for path, b in batches.items():
        np.testing.assert_array_equal(b, batches["portable"], err_msg=path)


def test_a_missing_value_fails_its_record_not_its_chunk(tmp_path):
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(paths[-1])
    records = [{"image": p, "label": i} for i, p in enumerate(paths)]
    records[2]["image"] = None
    loader = fl.Loader(fl.ListSource(records), batch_size=6, on_error="skip",
                       fields={"image": fl.Image([fl.CenterCrop(8)], dtype="uint8", layout="NHWC"),
                               "label": "index"})
    with pytest.warns(RuntimeWarning, match=r"ListSource\[2\]: field 'image': missing image"):
        batch = next(iter(loader))
    assert batch["label"].tolist() == [0, 1, 3, 4, 5]
    assert [int(x[0, 0, 0]) for x in batch["image"]] == [0, 10, 30, 40, 50]


def test_features_name_the_path_and_how_to_link():
    f = fl.features()
    assert f["simd"] in f["simd_paths"] and f["simd"] != "avx512"
    assert ("write" in f["simd_kernels"]) == (f["simd"] != "portable")
    assert f["simd"] != "portable" or f["simd_kernels"] == []
    assert ("hue" in f["simd_kernels"]) == (f["simd"] in ("avx2", "neon"))   # tools/simd_check.c: the same bytes
    if f["libjpeg_turbo_linked"]:
        assert f["jpeg_how_to_link"] is None
    else:   # one line: what to install, then how to rebuild
        how = f["jpeg_how_to_link"]
        assert "pip install" in how and "libjpeg" in how and "\n" not in how
        assert "pillow" in f["jpeg_decoder"].lower() and "without libjpeg-turbo" in f["jpeg_decoder"]


# -- the JPEG route without libjpeg-turbo --------------------------------------------------------

@pytest.mark.parametrize("kind", ["baseline", "progressive", "grey", "444"])
@pytest.mark.parametrize("draft", [None, (40, 30), (10, 10), (500, 20)])
def test_pillow_jpeg_gives_pillows_pixels(kind, draft):
    import io
    from fastload.image.decode import pillow_jpeg
    img = Image.fromarray(photo_like(97, 131, 3, seed=11))
    kw = {"progressive": {"progressive": True}, "444": {"subsampling": 0}}.get(kind, {})
    buf = io.BytesIO()
    (img.convert("L") if kind == "grey" else img).save(buf, "JPEG", quality=90, **kw)
    data = buf.getvalue()
    got = pillow_jpeg(data, "x.jpg", draft_size=draft)
    want = pillow_decode(data, "x.jpg", draft_size=draft) if draft else (pillow_decode(data, "x.jpg"), (131, 97), 1)
    assert got is not None
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1:] == want[1:]


def test_pillow_jpeg_hands_everything_else_to_pillow_decode():
    import io
    from fastload.image.decode import pillow_jpeg
    img = Image.fromarray(photo_like(40, 50, 3, seed=12))
    jpeg, png, cmyk, rotated = io.BytesIO(), io.BytesIO(), io.BytesIO(), io.BytesIO()
    img.save(jpeg, "JPEG")
    img.save(png, "PNG")
    img.convert("CMYK").save(cmyk, "JPEG")
    exif = Image.Exif()
    exif[274] = 6
    img.save(rotated, "JPEG", exif=exif.tobytes())
    data = jpeg.getvalue()
    sos = data.index(b"\xff\xda")
    corrupt = data[:sos + 40] + b"\xff\xd0\xff\xd3" + data[sos + 44:]   # restart markers in a scan without an interval
    for data in (png.getvalue(), cmyk.getvalue(), rotated.getvalue(), jpeg.getvalue()[:300], corrupt):
        assert pillow_jpeg(data, "x") is None
    # Pillow's decoder takes the corrupt scan (Pillow < 11.2 decoded it through this route); pillow_decode says why
    with pytest.raises(fl.DecodeError, match="RST3 marker inside a scan without a restart interval"):
        pillow_decode(corrupt, "x")
    with pytest.raises(fl.DecodeError, match="over the limit"):
        pillow_jpeg(jpeg.getvalue(), "x", max_pixels=100)


# -- a pixel transform given twice ------------------------------------------------------------

@pytest.mark.parametrize("twice", [
    [fl.ColorJitter(brightness=(0.5, 0.5)), fl.ColorJitter(contrast=(0.5, 0.5))],
    [fl.RandomHorizontalFlip(1.0), fl.RandomHorizontalFlip(1.0)],
    [fl.RandomVerticalFlip(0.3), fl.RandomHorizontalFlip(), fl.RandomVerticalFlip(0.3)],
    [fl.RandomRotate90(), fl.RandomRotate90()],
])
def test_a_pixel_transform_given_twice_is_refused_not_replaced(tmp_path, twice):
    # The fused plan applies each pixel op once per sample: the second would silently replace the
    # first (brightness 0.5 then contrast 0.5 of flat grey 100 gave 100, not 50).
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(tmp_path / "g.png")
    name = type(twice[0]).__name__
    with pytest.raises(ValueError, match=f"{name} given twice"):
        fl.Loader(fl.ListSource([str(tmp_path / "g.png")], "files"), batch_size=1,
                  transforms=[fl.Resize((4, 4)), *twice])
    with pytest.raises(ValueError, match=f"{name} given twice"):
        fl.Image([fl.Resize((4, 4)), *twice])
    # One of each is what the plan is for: brightness 0.5 of grey 100 is 50, exactly as
    # torchvision's adjust_brightness (a blend with black) gives.
    got = next(iter(fl.Loader(fl.ListSource([str(tmp_path / "g.png")], "files"), batch_size=1, dtype="uint8",
                              layout="NHWC", transforms=[fl.Resize((4, 4)), twice[0]])))
    if name == "ColorJitter":
        assert (np.asarray(got) == 50).all()


@pytest.mark.parametrize("interpolation, pillow_filter, max_diff",
                         [("area", Image.BOX, 0), ("nearest", None, 0), ("bilinear", Image.BILINEAR, 3)])
def test_only_bilinear_decodes_jpegs_dct_scaled(tmp_path, interpolation, pillow_filter, max_diff):
    """A box takes whole source pixels, so a half-scale decode would move its edges by one: 14 levels
    off Pillow's BOX at this block's edge. Area and nearest decode at full size (Pillow's resize, and
    torchvision's NEAREST_EXACT source pixel floor((i + 0.5) * in / out), exactly); bilinear
    DCT-scales (within a few levels on photo-like pixels)."""
    h, w = 256, 320
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([128 + 100 * np.sin(x / 23.0), 128 + 100 * np.cos(y / 17.0),
                  128 + 90 * np.sin((x + y) / 31.0)], -1)
    a[:45, :90] = [250, 20, 20]
    path = tmp_path / "a.jpg"
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=95)
    with Image.open(path) as im:
        full = im.convert("RGB")
    if pillow_filter is None:
        rows, cols = ((np.arange(40) + 0.5) * h // 40).astype(int), ((np.arange(48) + 0.5) * w // 48).astype(int)
        want = np.asarray(full)[rows][:, cols].astype(int)
    else:
        want = np.asarray(full.resize((48, 40), pillow_filter, reducing_gap=None)).astype(int)
    field = fl.Image([fl.Resize((40, 48), interpolation=interpolation)], dtype="uint8", layout="NHWC")
    assert field.plan.max_denom == (8 if interpolation == "bilinear" else 1)
    got = first_batch(tmp_path, [fl.Resize((40, 48), interpolation=interpolation)])[0].astype(int)
    assert np.abs(got - want).max() <= max_diff


# -- torchvision's argument forms -------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda a: fl.Resize((8, 8), antialias=a),
                                  lambda a: fl.RandomResizedCrop(8, antialias=a)])
@pytest.mark.parametrize("value", [None, 0, 1, "False"])
def test_antialias_takes_a_bool_only(make, value):
    # None or 0 once turned antialiasing off (up to 111 levels off Pillow), "False" turned it on
    with pytest.raises(TypeError, match="antialias must be True or False"):
        make(value)
    assert make(False).antialias is False and make(np.bool_(True)).antialias is True


def test_normalize_takes_one_value_for_every_channel_and_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    one = fl.Normalize((0.5,), (0.25,))   # torchvision broadcasts a single mean/std over the channels
    assert one.mean == (0.5, 0.5, 0.5) and one.std == (0.25, 0.25, 0.25)
    for mean, std in ((0.5, 0.25), (np.float32(0.5), np.float64(0.25)), (torch.tensor(0.5), torch.tensor(0.25))):
        assert fl.Normalize(mean, std) == one   # a bare number too, as the message says ("1 ... numbers")
    t = fl.Normalize(torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))
    np.testing.assert_allclose(t.mean, [0.485, 0.456, 0.406], rtol=1e-7)
    np.testing.assert_allclose(t.std, [0.229, 0.224, 0.225], rtol=1e-7)
    for bad in ((0.5, 0.5), "abc", (0.5, float("nan"), 0.5), (0.5, None, 0.5)):
        with pytest.raises(ValueError, match="Normalize mean must be 1 or 3 finite numbers"):
            fl.Normalize(bad, (1.0,))
    img = photo_like(12, 10, seed=3)
    path = tmp_path / "a.png"
    path.write_bytes(encode(img, "PNG"))
    x = next(iter(fl.Loader(fl.ImageFiles(tmp_path), batch_size=1, transforms=[fl.CenterCrop(8), one])))
    # as torchvision: (x / 255 - 0.5) / 0.25
    ref = (img[2:10, 1:9].astype(np.float64) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(x[0], ref.transpose(2, 0, 1), atol=2e-6)


def test_random_resized_crop_takes_a_scale_from_zero_as_torchvision_does():
    assert fl.RandomResizedCrop(8, scale=(0.0, 1.0)).scale == (0.0, 1.0)
    for bad in ((-0.1, 1.0), (0.0, 0.0), (0.5, 1.5)):
        with pytest.raises(ValueError, match="RandomResizedCrop scale"):
            fl.RandomResizedCrop(8, scale=bad)
    with pytest.raises(ValueError, match="RandomResizedCrop ratio"):
        fl.RandomResizedCrop(8, ratio=(0.0, 1.0))


def test_hue_says_the_range_it_accepts():
    assert fl.ColorJitter(hue=0.5).hue == 0.5
    with pytest.raises(ValueError, match=r"hue must be in \[0, 0\.5\], got 0\.6"):
        fl.ColorJitter(hue=0.6)


def test_nearest_resize_then_crop_takes_the_pixels_of_resizing_then_cropping(tmp_path):
    # A centre exactly on a pixel edge of the resize's grid came out a rounding error to the left
    # through the crop's fractional offset: a whole column from the wrong source pixel.
    from fractions import Fraction as F
    img = np.random.default_rng(2).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    got = first_batch(tmp_path, [fl.Resize(50, interpolation="nearest"), fl.CenterCrop(41)], dtype="uint8",
                      layout="NHWC")[0]
    # NEAREST_EXACT in exact arithmetic: floor((i + 0.5) * in / out) on the 50 x 62 resize, then the crop
    rows = [int((i + F(1, 2)) * F(64, 50)) for i in range(50)]
    cols = [int((i + F(1, 2)) * F(80, 62)) for i in range(62)]
    top, left = round((50 - 41) / 2), round((62 - 41) / 2)
    np.testing.assert_array_equal(got, img[rows][:, cols][top:top + 41, left:left + 41])


def test_bilinear_without_antialiasing_never_reads_a_dct_scaled_jpeg(tmp_path):
    # A scaled decode averages 8x8 blocks, which a two-tap bilinear never does: JPEG bytes came out
    # up to 38 levels from the same JPEG given decoded.
    data = encode(photo_like(480, 640, 3, seed=1), quality=90)
    (tmp_path / "a.jpg").write_bytes(data)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for transforms in ([fl.Resize((48, 64), antialias=False)], [fl.RandomResizedCrop(32, antialias=False)]):
        plan, _ = compile_plan(transforms)
        assert plan.max_denom == 1
        from_file = first_batch(tmp_path, transforms, dtype="uint8", layout="NHWC")[0]
        from_pixels = next(iter(fl.Loader(fl.ListSource([(decoded, 0)]), batch_size=1, transforms=transforms,
                                          dtype="uint8", layout="NHWC", seed=0)))[0][0]
        np.testing.assert_array_equal(from_file, from_pixels)


def test_normalize_max_value_refuses_a_bool():
    with pytest.raises(ValueError, match="max_value must be a positive finite number, got True"):
        fl.Normalize(0.5, 0.5, max_value=True)


def test_the_rebuild_advice_names_this_project_and_why_a_library_is_missing(monkeypatch):
    # It said "pip install --no-binary fastload fastload", which installs another PyPI project of that
    # name, and "apt install libspng-dev" where the headers were there and FASTLOAD_NO_SPNG left it out.
    import importlib
    feats = importlib.import_module("fastload.features")   # the module, not the function fl.features
    monkeypatch.setattr(_batch, "jpeg_version", lambda: "none")
    monkeypatch.setattr(_batch, "png_version", lambda: "none")
    monkeypatch.setattr(feats, "_jpeg_headers", lambda: "/usr/include")
    monkeypatch.setattr(feats, "_headers", lambda name, variable: "/usr/include")
    for line in (feats.how_to_link(), feats.png_path()):
        assert "--no-binary" not in line and "fastload's source folder" in line and "\n" not in line
    assert "without FASTLOAD_NO_LIBJPEG set" in feats.how_to_link()
    assert "libspng's headers are in /usr/include: rebuild without FASTLOAD_NO_SPNG set" in feats.png_path()
    assert "left out by FASTLOAD_NO_LIBJPEG" in feats.jpeg_path()
    monkeypatch.setattr(feats, "_headers", lambda name, variable: None)
    assert "apt install libspng-dev" in feats.png_path()


def test_the_build_leaves_a_library_out_only_when_asked_to(monkeypatch):
    # FASTLOAD_NO_LIBJPEG=0 (or "false") left libjpeg-turbo out as =1 does.
    import ast
    import pathlib
    source = pathlib.Path(__file__).resolve().parents[1] / "setup.py"
    if not source.exists():
        pytest.skip("run from an installed copy without the checkout's setup.py")
    tree = ast.parse(source.read_text())
    fn = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "left_out")
    scope = {"os": os}
    exec(compile(ast.Module([fn], []), str(source), "exec"), scope)
    for value, out in (("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("false", False),
                       ("", False), ("no", False)):
        monkeypatch.setenv("FASTLOAD_NO_LIBJPEG", value)
        assert scope["left_out"]("FASTLOAD_NO_LIBJPEG") is out, value
    monkeypatch.delenv("FASTLOAD_NO_LIBJPEG")
    assert scope["left_out"]("FASTLOAD_NO_LIBJPEG") is False
