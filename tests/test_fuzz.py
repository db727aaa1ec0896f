"""Byte-mutation fuzzing of the decode kernel, the sample kernel and the image field, over valid
JPEG/PNG seeds made here. Deterministic (derandomized Hypothesis), bounded for CI; the long run is
``python tools/fuzz.py``. A crash kills the test process, which fails the run."""
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

import fastload as fl
from fastload._kernels import _batch
from fastload.image.decode import read_image
from fastload.image.field import ImageField, compile_plan
from fastload.pipeline.fields import ChunkContext
from helpers import encode, photo_like

pytestmark = pytest.mark.skipif(not _batch.HAVE_LIBJPEG_TURBO, reason="the C JPEG path is not built")


def _exif6():
    e = Image.Exif()
    e[0x0112] = 6
    return e.tobytes()


_IMG = photo_like(40, 56, seed=21)
SEEDS = {
    "baseline-420": encode(_IMG, quality=80),
    "progressive-444": encode(_IMG, quality=80, progressive=True, subsampling=0),
    "gray-restart": encode(_IMG[..., 0], quality=80, restart_marker_blocks=1),
    "exif6-422": encode(_IMG, quality=80, subsampling=1, exif=_exif6()),
    "cmyk": encode(Image.fromarray(_IMG).convert("CMYK"), quality=80),
    "png": encode(_IMG, "PNG"),
    "png-palette": encode(Image.fromarray(_IMG).quantize(16), "PNG", transparency=2),
}
JPEG_SEEDS = sorted(k for k in SEEDS if not k.startswith("png"))

position = st.one_of(st.integers(0, 700), st.integers(0, 1 << 16))   # headers are near the start
mutation = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("set"), position, st.sampled_from([0x00, 0xFF, 0x01, 0x7F, 0x80, 0xC0, 0xD9, 0xDA])),
    st.tuples(st.just("truncate"), position, st.just(0)),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("delete"), position, st.integers(1, 64)),
    st.tuples(st.just("duplicate"), position, st.integers(1, 200)),
)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, pos, arg in ops:
        pos %= max(len(b), 1)
        if op == "flip" and b:
            b[pos] ^= 1 << arg
        elif op == "set" and b:
            b[pos] = arg
        elif op == "truncate":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = arg
        elif op == "delete":
            del b[pos:pos + arg]
        elif op == "duplicate":
            b[pos:pos] = b[pos:pos + arg]
    return bytes(b)


def fuzzed(seeds):
    return st.builds(lambda name, ops: mutate(SEEDS[name], ops), st.sampled_from(seeds),
                     st.lists(mutation, min_size=1, max_size=4))


FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_PIXELS = (10_000_000, 1500)   # bounded: a mutated header may declare 65535 x 65535


@FUZZ
@given(data=fuzzed(JPEG_SEEDS), region=st.one_of(st.none(), st.tuples(*[st.integers(-8, 80)] * 4)),
       min_size=st.tuples(st.integers(0, 64), st.integers(0, 64)), max_denom=st.sampled_from([1, 2, 4, 8]),
       exif=st.booleans(), max_pixels=st.sampled_from(MAX_PIXELS))
def test_decode_kernel_survives_mutations(data, region, min_size, max_denom, exif, max_pixels):
    d = _batch.JpegDecoder()
    kw = dict(region=region, min_size=min_size, max_denom=max_denom, exif=exif, max_pixels=max_pixels)
    try:
        shape, info = d.decoded_shape(data, **kw)
    except (_batch.Unsupported, fl.DecodeError, ValueError) as e:
        assert str(e)
        shape = None
    try:
        pixels, region_info = d.decode(data, **kw)
    except (_batch.Unsupported, fl.DecodeError, ValueError) as e:
        assert str(e)
        return
    assert shape is not None and pixels.shape == shape and region_info == info
    assert pixels.dtype == np.uint8 and pixels.size > 0
    ok = encode(_IMG[:8, :8], quality=90)   # the decoder is still usable afterwards
    assert d.decode(ok)[0].shape == (8, 8, 3)


TRANSFORMS = [
    [fl.Resize((16, 12))],
    [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.RandomRotate90()],
    [fl.Resize(20), fl.CenterCrop(16), fl.ColorJitter(0.4, 0.4, 0.4), fl.Normalize([0.5] * 3, [0.25] * 3)],
    [fl.RandomCrop(24), fl.Resize((8, 8), interpolation="nearest"), fl.RandomVerticalFlip()],
    [fl.Resize((9, 33), interpolation="area")],
]
plans = st.builds(lambda t, dtype, layout, exif, dct, mp: (t, dict(
                      dtype="float32" if t == 2 and dtype == "uint8" else dtype,   # Normalize needs floats
                      layout=layout, exif=exif, dct_scale=dct, max_pixels=mp)),
                  st.sampled_from(range(len(TRANSFORMS))), st.sampled_from(["uint8", "float16", "float32"]),
                  st.sampled_from(["NCHW", "NHWC"]), st.booleans(), st.booleans(), st.sampled_from(MAX_PIXELS))
# Never "arg" (a plan or geometry bug), "nomem" or "io" on in-memory bytes.
ALLOWED = {code for code, name in _batch.FL_STATUS.items() if name in ("ok", "not_jpeg", "unsupported", "decode", "too_large", "crop")}


def output_shape(size, layout):
    return (3, *size) if layout == "NCHW" else (*size, 3)


@FUZZ
@given(items=st.lists(fuzzed(JPEG_SEEDS), min_size=1, max_size=3), plan=plans, seed=st.integers(0, 2**32),
       epoch=st.integers(0, 3))
def test_sample_kernel_survives_mutations(items, plan, seed, epoch):
    t, kw = plan
    p, size = compile_plan(TRANSFORMS[t], **kw)
    out = np.full((len(items), *output_shape(size, kw["layout"])), 7, dtype=kw["dtype"])
    status = np.empty(len(items), np.int32)
    indices = np.arange(len(items), dtype=np.uint64)
    failed = _batch.Worker().run_chunk(p, items, False, indices, seed, epoch, out, status)
    assert set(status.tolist()) <= ALLOWED, (status, failed)
    assert sorted(failed) == [i for i in range(len(items)) if status[i] < 0]
    assert all(failed.values())
    if kw["dtype"] != "uint8":
        assert np.isfinite(out[status == _batch.OK]).all()


@FUZZ
@given(items=st.lists(fuzzed(sorted(SEEDS)), min_size=1, max_size=3), plan=plans, seed=st.integers(0, 2**32))
def test_image_field_survives_mutations_on_both_routes(items, plan, seed):
    t, kw = plan
    field = ImageField(TRANSFORMS[t], **kw)
    (o,) = field.outputs()
    out = np.zeros((len(items), *o.shape), o.dtype)
    ctx = ChunkContext(seed, 0, np.arange(len(items), dtype=np.uint64))
    failures = field.fill(items, {o.name: out}, ctx)
    assert set(failures) <= set(range(len(items))) and all(isinstance(r, str) and r for r in failures.values())
    if kw["dtype"] != "uint8":
        ok = [i for i in range(len(items)) if i not in failures]
        assert np.isfinite(out[ok]).all()


def test_the_long_fuzzer_runs_and_finds_nothing_in_a_short_run(tmp_path):
    """tools/fuzz.py itself works (the long runs are reported from it), here for 40 inputs."""
    import os
    import subprocess
    import sys

    import fastload
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "fuzz.py")
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))
    env = dict(os.environ, PYTHONPATH=home)
    r = subprocess.run([sys.executable, tool, "--n", "40", "--seed", "3", "--crash-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "crashes: 0, hangs: 0, unexpected: 0" in r.stdout


# -- sizes at the edge of the kernels' integer range ----------------------------------------------

def test_a_resize_past_the_int_range_is_an_error_naming_it(tmp_path):
    """Resize(1024) of a 1 x 2,200,000 image would be 1024 x 2,252,800,000: the planned size
    overflowed an int (a 1024 x 1 image, mostly padding) and came out as zeros; now an error."""
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((1, 2_200_000, 3), 200, np.uint8)).save(tmp_path / "a" / "long.png")
    loader = fl.Loader(fl.ImageFolder(tmp_path), batch_size=1, dtype="uint8",
                       transforms=[fl.Resize(1024), fl.CenterCrop(16)])
    with pytest.raises(fl.DecodeError, match=r"long\.png.*Resize\(1024\): the 2200000x1 image would be over "
                                             r"2147483647 pixels on its longer side"):
        next(iter(loader))


def test_an_upscale_of_a_sliver_decodes_on_the_jpeg_route_as_on_the_png_route(tmp_path):
    """The decode size a huge upscale asks for passed the int range on the JPEG route (refused as
    'bad min size'); the same pixels as lossless PNG go the other route: the same output."""
    jpeg = encode(photo_like(3, 2, seed=4), quality=95)
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    transforms = [fl.Resize((2**31 - 1, 2**31 - 1)), fl.CenterCrop(4)]
    p, size = compile_plan(transforms, dtype="uint8", layout="NHWC")
    outs = []
    for data in (jpeg, encode(pixels, "PNG")):
        out = np.zeros((1, *size, 3), np.uint8)
        status = np.empty(1, np.int32)
        failed = _batch.Worker().run_chunk(p, [data], False, np.zeros(1, np.uint64), 0, 0, out, status)
        assert not failed, failed
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_color_jitter_factors_past_float_range_are_refused():
    for kw in ({"brightness": (1e39, 1e39)}, {"contrast": (0, 1e31)}, {"saturation": 1e39}):
        with pytest.raises(ValueError, match="must be at most 1e\\+30"):
            fl.ColorJitter(**kw)


def test_an_out_row_too_small_for_the_plan_is_refused():
    p, size = compile_plan([fl.Resize((8, 8))], dtype="float32", layout="NHWC")
    data = encode(photo_like(8, 8, seed=1))
    for out in (np.zeros((1, 4), np.float32), np.zeros((1, 8, 8, 3), np.uint8)):
        with pytest.raises(ValueError, match="cannot hold a 8x8 sample of float32"):
            _batch.Worker().run_chunk(p, [data], False, np.zeros(1, np.uint64), 0, 0, out, np.empty(1, np.int32))
    with pytest.raises(ValueError, match="one sample a row, got 1-D"):
        _batch.Worker().run_chunk(p, [data], False, np.zeros(1, np.uint64), 0, 0, np.zeros(192, np.float32),
                                  np.empty(1, np.int32))
    empty = np.zeros((0, 8, 8, 3), np.float32)   # an empty chunk: nothing to do, nothing refused
    assert _batch.Worker().run_chunk(p, [], False, np.zeros(0, np.uint64), 0, 0, empty, np.empty(0, np.int32)) == {}


def test_a_stuffed_zero_before_the_frame_is_skipped_as_libjpeg_and_pillow_skip_it():
    """FF 00 is no marker: read as one, its "length" jumped into an APP1 payload holding a fake
    8x8 frame header; libjpeg and Pillow see the real 64x48 frame."""
    import struct
    real = encode(photo_like(48, 64, seed=2), quality=90)
    fake_sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 8, 8, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    payload = b"\0" * 10 + fake_sof + b"\0" * 11
    confused = real[:2] + b"\xff\x00\x00\x10" + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + real[2:]
    with Image.open(io.BytesIO(confused)) as im:
        assert im.size == (64, 48)
        want = np.asarray(im.convert("RGB"))
    assert _batch.jpeg_scan(confused)[:2] == (64, 48)
    np.testing.assert_array_equal(read_image(confused), want)
