"""The colour-jitter and write kernels the Loader runs (fastload._kernels._batch),
and make_lut, against NumPy references, through every SIMD path this CPU has."""
import itertools
import threading

import numpy as np
import pytest

from fastload._kernels import _batch
from fastload.ops.normalize import make_lut

from helpers import photo_like


def in_threads(work, n):
    """work(0) ... work(n - 1), each on its own thread, all at once."""
    threads = [threading.Thread(target=work, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


@pytest.fixture(params=_batch.simd_paths(), autouse=True)
def isa(request):
    """Every test here runs once per SIMD path this CPU offers (portable included)."""
    default = _batch.simd()
    _batch.set_simd(request.param)
    yield request.param
    _batch.set_simd(default)


def color_jitter(img, brightness=1.0, contrast=1.0, saturation=1.0, out=None):
    """The kernel on a copy of img (or in place on out)."""
    out = img.copy() if out is None else out
    _batch.color_jitter(out[:, :, None] if out.ndim == 2 else out, brightness, contrast, saturation)
    return out


def output_shape(img_shape, *, rot90=0, channels=3, layout="NCHW"):
    h, w = img_shape[:2]
    if rot90 % 2:
        h, w = w, h
    return (channels, h, w) if layout == "NCHW" else (h, w, channels)


def write_sample(img, out, *, rot90=0, hflip=False, vflip=False, lut, perm, layout="NCHW"):
    _batch.write_sample(img[:, :, None] if img.ndim == 2 else img, out, rot90, hflip, vflip,
                        np.asarray(perm, np.int32), np.ascontiguousarray(lut),
                        _batch.NCHW if layout == "NCHW" else _batch.NHWC)
    return out

LUMA = np.array([0.299, 0.587, 0.114])


def jitter_ref(img, b, c, s):
    x = np.clip(img.astype(np.float64) * b, 0, 255)
    if c != 1:
        m = (x[..., :3] @ LUMA).mean() if img.shape[2] >= 3 else x[..., 0].mean()
        x = np.clip(x * c + m * (1 - c), 0, 255)
    if s != 1 and img.shape[2] >= 3:
        lum = (x[..., :3] @ LUMA)[..., None]
        x[..., :3] = np.clip(x[..., :3] * s + lum * (1 - s), 0, 255)
    if img.shape[2] in (2, 4):
        x[..., -1] = img[..., -1]
    return np.floor(x + 0.5)


@pytest.mark.parametrize("c", [1, 3, 4])
def test_color_jitter_matches_numpy(c):
    rng = np.random.default_rng(3)
    for i in range(40):
        img = photo_like(int(rng.integers(1, 60)), int(rng.integers(1, 60)), c, seed=i)
        b, k, s = rng.uniform(0.3, 1.7, 3)
        if i % 4 == 1:
            k = 1.0
        if i % 4 == 2:
            s = 1.0
        got = color_jitter(img, b, k, s)
        assert np.abs(got - jitter_ref(img, b, k, s)).max() <= 1, (c, b, k, s)
        if c == 4:
            np.testing.assert_array_equal(got[..., 3], img[..., 3])


def test_color_jitter_identity_and_in_place():
    img = photo_like(30, 40, 3, seed=1)
    np.testing.assert_array_equal(color_jitter(img), img)
    buf = img.copy()
    assert color_jitter(buf, 1.2, 0.8, 1.3, out=buf) is buf
    np.testing.assert_array_equal(buf, color_jitter(img, 1.2, 0.8, 1.3))
    # saturation 0 gives grey pixels
    grey = color_jitter(img, saturation=0.0)
    assert np.abs(grey.astype(int) - grey[..., :1]).max() <= 1


def test_color_jitter_rejects_bad_arguments():
    img = photo_like(10, 10, 3)
    with pytest.raises(ValueError):
        _batch.color_jitter(img.astype(np.float32), 1.1, 1.0, 1.0)
    with pytest.raises(ValueError, match="empty"):
        _batch.color_jitter(np.zeros((0, 4, 3), np.uint8), 1.1, 1.0, 1.0)


def write_ref(img, rot90, hflip, vflip, lut, perm, layout):
    x = np.rot90(img, rot90)
    if hflip:
        x = x[:, ::-1]
    if vflip:
        x = x[::-1]
    x = np.stack([lut[c][x[..., p]] for c, p in enumerate(perm)], axis=-1)
    return np.ascontiguousarray(x.transpose(2, 0, 1) if layout == "NCHW" else x)


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_write_sample_matches_numpy_exactly(dtype, layout):
    img = photo_like(13, 21, 3, seed=5)
    if dtype == "uint8":
        lut, perm = make_lut(dtype=dtype)
        lut = lut.copy()
        lut[1] = 255 - lut[1]                 # a non-identity table too
    else:
        lut, perm = make_lut(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], dtype=dtype)
    for order in ("RGB", "BGR"):
        p = perm if order == "RGB" else perm[::-1].copy()
        for rot90, hflip, vflip in itertools.product(range(-1, 5), (False, True), (False, True)):
            out = np.full(output_shape(img.shape, rot90=rot90, layout=layout), 7, lut.dtype)
            write_sample(img, out, rot90=rot90, hflip=hflip, vflip=vflip, lut=lut, perm=p, layout=layout)
            ref = write_ref(img, rot90, hflip, vflip, lut, p, layout)
            assert out.dtype == ref.dtype
            np.testing.assert_array_equal(out, ref, err_msg=str((rot90, hflip, vflip, order)))


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (9, 1, 3), (5, 7, 1), (6, 4, 4)])
def test_write_sample_odd_shapes(shape):
    img = photo_like(*shape, seed=2)
    c = shape[2]
    lut = np.tile(np.arange(256, dtype=np.float32) * 2, (c, 1))
    perm = np.arange(c, dtype=np.int32)[::-1].copy()
    for rot90, hflip, vflip in itertools.product(range(4), (False, True), (False, True)):
        for layout in ("NCHW", "NHWC"):
            out = np.empty(output_shape(shape, rot90=rot90, channels=c, layout=layout), np.float32)
            write_sample(img, out, rot90=rot90, hflip=hflip, vflip=vflip, lut=lut, perm=perm, layout=layout)
            np.testing.assert_array_equal(out, write_ref(img, rot90, hflip, vflip, lut, perm, layout))


def test_grey_to_three_channels():
    img = photo_like(8, 9, 1, seed=3)
    lut, _ = make_lut()
    out = np.empty((3, 8, 9), np.float32)
    write_sample(img, out, lut=lut, perm=[0, 0, 0])
    np.testing.assert_array_equal(out, np.repeat(img.transpose(2, 0, 1), 3, 0).astype(np.float32))


def test_make_lut_semantics():
    lut, perm = make_lut()
    assert lut.dtype == np.float32 and lut.shape == (3, 256)
    np.testing.assert_array_equal(lut, np.tile(np.arange(256, dtype=np.float32), (3, 1)))
    np.testing.assert_array_equal(perm, [0, 1, 2])
    lut, _ = make_lut(mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 2.0])
    v = np.arange(256) / 255.0
    np.testing.assert_allclose(lut[1], ((v - 0.25) / 0.25).astype(np.float32), rtol=1e-6)
    lut16, _ = make_lut(mean=0.5, std=0.5, dtype="float16")
    assert lut16.dtype == np.float16
    np.testing.assert_array_equal(lut16[2], ((v - 0.5) / 0.5).astype(np.float16))
    lut8, _ = make_lut(dtype=np.uint8)
    assert lut8.dtype == np.uint8 and lut8[0, 200] == 200
    with pytest.raises(ValueError):
        make_lut(mean=0.5, dtype="uint8")
    with pytest.raises(ValueError):
        make_lut(std=[1, 0, 1])
    with pytest.raises(ValueError):
        make_lut(order="RBG")


def test_caffe_bgr_mean_subtraction_is_exact():
    img = photo_like(24, 32, 3, seed=9)
    mean = [103.939, 116.779, 123.68]
    lut, perm = make_lut(mean=mean, max_value=1.0, order="BGR")
    np.testing.assert_array_equal(perm, [2, 1, 0])
    out = np.empty((3, 24, 32), np.float32)
    write_sample(img, out, lut=lut, perm=perm)
    ref = (img[..., ::-1].astype(np.float64) - np.array(mean)).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(out, ref)


def test_write_sample_rejects_bad_out():
    img = photo_like(10, 12, 3)
    lut, perm = make_lut()
    with pytest.raises(ValueError, match="out 10x11x3"):
        write_sample(img, np.empty((3, 10, 11), np.float32), lut=lut, perm=perm)
    with pytest.raises(ValueError, match="rot90 1"):
        write_sample(img, np.empty((3, 10, 12), np.float32), rot90=1, lut=lut, perm=perm)
    with pytest.raises(ValueError, match="lut dtype differs"):
        write_sample(img, np.empty((3, 10, 12), np.float16), lut=lut, perm=perm)
    with pytest.raises(ValueError):
        write_sample(img, np.empty((10, 12, 3), np.float32)[:, ::-1], lut=lut, perm=perm, layout="NHWC")
    with pytest.raises(ValueError, match="perm"):
        write_sample(img, np.empty((3, 10, 12), np.float32), lut=lut, perm=[0, 1, 3])
    with pytest.raises(ValueError, match="layout"):
        _batch.write_sample(img, np.empty((3, 10, 12), np.float32), 0, False, False, perm, lut, 7)


def test_write_sample_threads_into_one_batch():
    """Threads writing disjoint slots of one batch buffer give the serial result."""
    imgs = [photo_like(40, 50, 3, seed=i) for i in range(16)]
    lut, perm = make_lut(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    serial = np.empty((16, 3, 40, 50), np.float32)
    for i, im in enumerate(imgs):
        write_sample(im, serial[i], hflip=bool(i % 2), lut=lut, perm=perm)
    batch = np.empty_like(serial)

    def work(t):
        for _ in range(20):
            for i in range(t, 16, 4):
                write_sample(imgs[i], batch[i], hflip=bool(i % 2), lut=lut, perm=perm)
                color_jitter(imgs[i], 1.1, 0.9, 1.2)

    in_threads(work, 4)
    np.testing.assert_array_equal(batch, serial)


def tables(dtype, channels, rng):
    """The tables the write meets: make_lut's (ImageNet, [0, 1], Caffe BGR, random mean and std,
    an entry on or next to zero, a negative std), raw values, arbitrary values."""
    imagenet = ([0.485, 0.456, 0.406, 0.5], [0.229, 0.224, 0.225, 0.3])
    kinds = ["raw", "random"] + ([] if dtype == "uint8" else ["imagenet", "unit", "caffe", "normal", "zero"])
    for kind in kinds:
        rows = []
        for c in range(channels):
            if kind == "raw":
                row = make_lut(dtype=dtype)[0][0]
            elif kind == "random":
                row = (rng.integers(0, 256, 256) if dtype == "uint8" else rng.uniform(-3, 3, 256)).astype(dtype)
            elif kind == "imagenet":
                row = make_lut(mean=imagenet[0][c], std=imagenet[1][c], dtype=dtype)[0][0]
            elif kind == "unit":
                row = make_lut(mean=0.0, std=1.0, dtype=dtype)[0][0]
            elif kind == "caffe":
                row = make_lut(mean=[103.939, 116.779, 123.68, 110.0][c], max_value=1.0, dtype=dtype)[0][0]
            elif kind == "normal":
                row = make_lut(mean=rng.uniform(-0.5, 1.5), std=rng.uniform(0.05, 2) * rng.choice([1, -1]),
                               max_value=rng.choice([255.0, 127.5]), dtype=dtype)[0][0]
            else:
                row = make_lut(mean=int(rng.integers(0, 256)) / 255 + rng.choice([0, 1e-7, -1e-9]),
                               std=rng.uniform(0.05, 2), dtype=dtype)[0][0]
            rows.append(row)
        yield kind, np.ascontiguousarray(np.stack(rows))


def test_write_sample_equals_the_portable_loops_bit_for_bit(isa):
    """Random sizes (widths around the vector width, single pixels), 1 to 4 source and output
    channels in any order, every dtype, layout, flip and rotation, every kind of table: the same
    bytes as the portable loops and as NumPy."""
    rng = np.random.default_rng(17)
    shapes = [(1, 1), (1, 8), (3, 7), (2, 9), (5, 15), (4, 16), (6, 17), (9, 33), (37, 203)]
    for case in range(70):
        h, w = shapes[case % len(shapes)]
        c = int(rng.integers(1, 5))
        img = photo_like(h, w, c, seed=case)
        if case % 3 == 0:                      # padded rows
            padded = np.zeros((h, w + 3, c), np.uint8)
            padded[:, :w] = img
            img = padded[:, :w]
        dtype = ["uint8", "float16", "float32"][case % 3]
        nch = int(rng.integers(1, 5))
        perm = rng.integers(0, c, nch).astype(np.int32)
        for kind, lut in tables(dtype, nch, rng):
            for rot90, hflip, vflip in [(0, False, False), (0, True, False), (2, False, True),
                                        (int(rng.integers(0, 4)), bool(rng.integers(0, 2)), bool(rng.integers(0, 2)))]:
                for layout in ("NCHW", "NHWC"):
                    shape = output_shape(img.shape, rot90=rot90, channels=nch, layout=layout)
                    out = np.full(shape, 7, lut.dtype)
                    write_sample(img, out, rot90=rot90, hflip=hflip, vflip=vflip, lut=lut, perm=perm, layout=layout)
                    _batch.set_simd("portable")
                    loops = np.full(shape, 7, lut.dtype)
                    write_sample(img, loops, rot90=rot90, hflip=hflip, vflip=vflip, lut=lut, perm=perm, layout=layout)
                    _batch.set_simd(isa)
                    where = (isa, case, img.shape, kind, dtype, layout, rot90, hflip, vflip, list(perm))
                    np.testing.assert_array_equal(out.view(np.uint8), loops.view(np.uint8), err_msg=str(where))
                    ref = write_ref(img, rot90, hflip, vflip, lut, perm, layout)
                    np.testing.assert_array_equal(out.view(np.uint8), ref.view(np.uint8), err_msg=str(where))


def write_path(img, out, lut, perm, *, rot90=0, hflip=False, layout="NCHW"):
    return _batch.write_path(img, out, rot90, hflip, False, np.asarray(perm, np.int32), lut,
                             _batch.NCHW if layout == "NCHW" else _batch.NHWC)


def test_normalize_tables_take_the_vector_write(isa):
    """RandomResizedCrop + flip + Normalize's write runs on the chosen path, not the loops."""
    img = photo_like(32, 40, 3, seed=1)
    half = isa in ("avx2", "neon")             # SSE4.1 has no float-to-half conversion
    for dtype in ("float32", "float16", "uint8"):
        lut, perm = make_lut(dtype=dtype) if dtype == "uint8" else \
            make_lut(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], dtype=dtype)
        for layout in ("NCHW", "NHWC"):
            out = np.empty(output_shape(img.shape, layout=layout), lut.dtype)
            for hflip in (False, True):
                want = "portable" if isa == "portable" or (dtype == "float16" and not half) else isa
                if dtype == "uint8" and layout == "NHWC" and not hflip:
                    want = "copy"
                assert write_path(img, out, lut, perm, hflip=hflip, layout=layout) == want, (dtype, layout, hflip)
            turned = np.empty(output_shape(img.shape, rot90=1, layout=layout), lut.dtype)
            assert write_path(img, turned, lut, perm, rot90=1, layout=layout) == "portable"
    lut, perm = make_lut()
    lut = lut.copy()
    lut[1, 7] += 1                              # no longer a line: the loops
    assert write_path(img, np.empty((3, 32, 40), np.float32), lut, perm) == "portable"


def test_write_sample_threads_with_many_tables():
    """Threads alternating between more tables than each thread's cache holds (the vector write's
    verdict on a table is cached per thread) give the serial result."""
    rng = np.random.default_rng(2)
    imgs = [photo_like(24, 40, 3, seed=i) for i in range(12)]
    luts = [make_lut(mean=rng.uniform(0, 1, 3), std=rng.uniform(0.1, 1, 3), dtype="float32")[0]
            for _ in range(6)]
    perm = np.arange(3, dtype=np.int32)
    serial = np.empty((12, 3, 24, 40), np.float32)
    for i, im in enumerate(imgs):
        write_sample(im, serial[i], hflip=bool(i % 2), lut=luts[i % 6], perm=perm)
    batch = np.empty_like(serial)

    def work(t):
        for _ in range(10):
            for i in range(t, 12, 3):
                write_sample(imgs[i], batch[i], hflip=bool(i % 2), lut=luts[i % 6], perm=perm)

    in_threads(work, 3)
    np.testing.assert_array_equal(batch, serial)


@pytest.mark.parametrize("bcs", [(1.2, 1, 1), (0.8, 0.8, 1), (1.3, 1.4, 0.6), (0.7, 0.6, 1.4),
                                 (1, 1, 0), (2.5, 0.5, 1.5), (0.01, 3, 1)])
def test_color_jitter_large_and_strided(bcs):
    """Sizes that run the vector loops (with row tails), and a padded row stride."""
    for h, w in [(224, 224), (37, 203)]:
        img = photo_like(h, w, 3, seed=h + w)
        got = color_jitter(img, *bcs)
        assert np.abs(got - jitter_ref(img, *bcs)).max() <= 1, bcs
        padded = np.zeros((h, w + 5, 3), np.uint8)
        padded[:, :w] = img
        view = padded[:, :w]
        color_jitter(view, *bcs, out=view)
        np.testing.assert_array_equal(view, got)
        default = _batch.simd()   # and every path gives the portable bytes
        try:
            _batch.set_simd("portable")
            np.testing.assert_array_equal(color_jitter(img, *bcs), got)
        finally:
            _batch.set_simd(default)
        assert not padded[:, w:].any()
