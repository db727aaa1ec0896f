"""Every kind of file a real dataset holds, through the Loader: decoded as Pillow decodes it, or
rejected naming the file and the reason; and the error policy (raise / skip / max_failures) on
single-field and multi-field records. Every fixture is made here (Pillow, truncation, garbage)."""
import io
import os
import re
import shutil
import struct
import subprocess
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

import fastload as fl
from fastload._kernels import _batch
from fastload.pipeline.fields import Field, Output
from fastload.sources.base import Subset
from helpers import encode, photo_like

H, W = 24, 20     # output size of every comparison
SRC_H, SRC_W = 45, 58


def fastload_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fastload")]


def reference(data, size=(H, W), exif=True, high_bit=False):
    """Pillow's answer: exif_transpose + convert("RGB"), then a bilinear resize."""
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im) if exif else im
        if high_bit:   # fastload maps 16-bit samples onto 0..255 (v / 257); Pillow clips them
            a = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
            im = Image.fromarray(((a + 128) // 257).astype(np.uint8)).convert("RGB")
        else:
            with warnings.catch_warnings():   # Pillow warns on palette transparency given as bytes
                warnings.simplefilter("ignore")
                im = im.convert("RGB")
        return np.asarray(im.resize((size[1], size[0]), Image.BILINEAR))


def load(items, **kw):
    """All images of a loader over `items` (paths or bytes), NHWC uint8, unshuffled, one batch."""
    kw.setdefault("transforms", [fl.Resize((H, W))])
    loader = fl.Loader(fl.ListSource(list(items), "files"), batch_size=len(items), dtype="uint8",
                       layout="NHWC", dct_scale=False, **kw)
    return np.array(next(iter(loader)))


def assert_close(got, ref, what):
    assert got.shape == ref.shape, what
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    assert diff.mean() <= 1.0, f"{what}: mean abs diff {diff.mean():.3f} (max {diff.max()})"


def exif_bytes(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


PHOTO = photo_like(SRC_H, SRC_W, seed=11)


def good_files():
    """name -> (encoded bytes, extension, reference kwargs): every decodable kind."""
    img, im = PHOTO, Image.fromarray(PHOTO)
    rgba = np.dstack([img, np.linspace(0, 255, SRC_W, dtype=np.uint8)[None, :].repeat(SRC_H, 0)])
    frames = [Image.fromarray(np.roll(img, 9 * k, axis=1)) for k in range(3)]
    quant = Image.fromarray(rgba).quantize(32)   # a palette with an alpha per entry: tRNS as bytes
    cmyk = encode(im.convert("CMYK"), quality=92)
    adobe = cmyk.index(b"Adobe")   # APP14 "Adobe" + version(2) flags0(2) flags1(2) transform(1)
    ycck = cmyk[:adobe + 11] + b"\x02" + cmyk[adobe + 12:]
    i16 = (np.arange(SRC_H * SRC_W, dtype=np.uint32).reshape(SRC_H, SRC_W) * 31 % 65536).astype(np.uint16)
    f32 = (photo_like(SRC_H, SRC_W, seed=12)[..., 0].astype(np.float32) * 0.9 + 0.3)
    out = {
        "jpeg-420": (encode(img, quality=90), "jpg", {}),
        "jpeg-444": (encode(img, quality=95, subsampling=0), "jpg", {}),
        "jpeg-422": (encode(img, quality=85, subsampling=1), "jpg", {}),
        "jpeg-progressive": (encode(img, quality=90, progressive=True), "jpg", {}),
        "jpeg-gray": (encode(img[..., 1], quality=90), "jpg", {}),
        "jpeg-restart": (encode(img, quality=90, restart_marker_blocks=2), "jpg", {}),
        "jpeg-cmyk": (cmyk, "jpg", {}),
        "jpeg-ycck": (ycck, "jpg", {}),
        "png-rgb": (encode(img, "PNG"), "png", {}),
        "png-rgba": (encode(rgba, "PNG"), "png", {}),
        "png-la": (encode(Image.fromarray(rgba).convert("LA"), "PNG"), "png", {}),
        "png-gray": (encode(img[..., 2], "PNG"), "png", {}),
        "png-1bit": (encode(Image.fromarray(img[..., 0]).convert("1"), "PNG"), "png", {}),
        "png-palette-trns-index": (encode(im.quantize(16), "PNG", transparency=3), "png", {}),
        "png-palette-trns-bytes": (encode(quant, "PNG"), "png", {}),
        "png-16bit": (encode(Image.fromarray(i16), "PNG"), "png", {"high_bit": True}),
        "tiff-16bit": (encode(Image.fromarray(i16), "TIFF"), "tif", {"high_bit": True}),
        "tiff-float": (encode(Image.fromarray(f32), "TIFF"), "tif", {}),
        "gif-transparent": (encode(im.quantize(64), "GIF", transparency=5), "gif", {}),
        "gif-animated": (encode(frames[0].quantize(64), "GIF", save_all=True,
                                append_images=[f.quantize(64) for f in frames[1:]], duration=40), "gif", {}),
        "webp-animated": (encode(frames[0], "WEBP", save_all=True, append_images=frames[1:],
                                 lossless=True), "webp", {}),
        "png-animated": (encode(frames[0], "PNG", save_all=True, append_images=frames[1:]), "png", {}),
        "webp-rgba": (encode(rgba, "WEBP", lossless=True), "webp", {}),
        "bmp": (encode(img, "BMP"), "bmp", {}),
        "tiff-cmyk": (encode(im.convert("CMYK"), "TIFF"), "tif", {}),
    }
    for o in range(1, 9):
        out[f"jpeg-exif{o}"] = (encode(img, quality=90, exif=exif_bytes(o)), "jpg", {})
    out["png-exif6"] = (encode(img, "PNG", exif=exif_bytes(6)), "png", {})
    out["webp-exif8"] = (encode(img, "WEBP", lossless=True, exif=exif_bytes(8)), "webp", {})
    return out


GOOD = good_files()


def test_fixtures_are_what_they_claim():
    def mode(name):
        with Image.open(io.BytesIO(GOOD[name][0])) as im:
            return im.mode, getattr(im, "n_frames", 1), im.info.get("transparency")
    assert mode("jpeg-cmyk")[0] == mode("jpeg-ycck")[0] == "CMYK"
    if _batch.HAVE_LIBJPEG_TURBO:
        info = _batch.JpegDecoder().info
        assert info(GOOD["jpeg-ycck"][0])["colorspace"] == "ycck" and info(GOOD["jpeg-cmyk"][0])["colorspace"] == "cmyk"
        assert info(GOOD["jpeg-progressive"][0])["progressive"]
    assert mode("png-16bit")[0].startswith("I") and mode("tiff-float")[0] == "F"
    assert mode("png-la")[0] == "LA" and mode("png-rgba")[0] == "RGBA"
    assert mode("png-palette-trns-bytes")[0] == "P" and isinstance(mode("png-palette-trns-bytes")[2], bytes)
    assert mode("gif-animated")[1] == mode("webp-animated")[1] == mode("png-animated")[1] == 3


@pytest.mark.parametrize("route", ["path", "bytes"])
def test_every_decodable_kind_matches_pillow(tmp_path, route):
    names = sorted(GOOD)
    items = []
    for name in names:
        data, ext, _ = GOOD[name]
        if route == "path":
            (tmp_path / f"{name}.{ext}").write_bytes(data)
            items.append(str(tmp_path / f"{name}.{ext}"))
        else:
            items.append(data)
    images = load(items, workers=2)
    for name, got in zip(names, images):
        data, _, kw = GOOD[name]
        assert_close(got, reference(data, **kw), name)


ORIENT = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
          5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
          7: lambda a: np.rot90(a.transpose(1, 0, 2), 2), 8: lambda a: np.rot90(a, 1)}


def test_exif_orientation_applied_by_default_and_raw_with_exif_false():
    names = [f"jpeg-exif{o}" for o in range(1, 9)] + ["png-exif6", "webp-exif8"]
    data = [GOOD[n][0] for n in names]
    raw = load(data, exif=False, transforms=[fl.Resize((SRC_H, SRC_W))])
    turned = load(data, transforms=[fl.Resize((30, 30))])
    for name, d, r, t in zip(names, data, raw, turned):
        o = int(name[-1])
        assert_close(r, reference(d, size=(SRC_H, SRC_W), exif=False), name + " raw")
        assert_close(t, reference(d, size=(30, 30)), name + " oriented")
        size = (SRC_W, SRC_H) if o >= 5 else (SRC_H, SRC_W)
        upright = load([d], transforms=[fl.Resize(size)])[0]
        assert_close(upright, ORIENT[o](r), name + " is the raw pixels turned")


def test_arithmetic_coded_jpeg(tmp_path):
    jpegtran = shutil.which("jpegtran")
    if jpegtran is None:
        pytest.skip("jpegtran not installed (Debian: apt-get install libjpeg-turbo-progs)")
    src = tmp_path / "huffman.jpg"
    src.write_bytes(GOOD["jpeg-420"][0])
    for flags, name in ((["-arithmetic"], "arith.jpg"), (["-arithmetic", "-progressive"], "arith-prog.jpg")):
        subprocess.run([jpegtran, *flags, "-outfile", str(tmp_path / name), str(src)], check=True)
        data = (tmp_path / name).read_bytes()
        assert b"\xff\xc9" in data or b"\xff\xca" in data   # SOF9 / SOF10: arithmetic coding
        got = load([str(tmp_path / name)])[0]
        assert_close(got, reference(data), name)
        np.testing.assert_array_equal(got, load([str(src)])[0])   # lossless transcode: same pixels


@pytest.mark.parametrize("h, w", [(1, 1), (1, 300), (300, 1), (2, 1000), (700, 3)])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_tiny_and_extreme_aspect_ratios(h, w, fmt):
    data = encode(photo_like(h, w, seed=h + w), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    for tr, size in (([fl.Resize((H, W))], (H, W)), ([fl.Resize(16), fl.CenterCrop(16)], None),
                     ([fl.RandomResizedCrop(16), fl.RandomHorizontalFlip()], None)):
        got = load([data], transforms=tr)
        assert got.shape[1:] == ((16, 16, 3) if size is None else (H, W, 3))
        if size is not None:
            assert_close(got[0], reference(data), f"{fmt} {h}x{w}")


# -- files that must be rejected ---------------------------------------------------------

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png(w, h):
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def huge_jpeg(w, h):
    data = GOOD["jpeg-420"][0]
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]


def bad_files():
    """name -> (bytes, extension, regex the reason must match)."""
    jpg, png, prog = GOOD["jpeg-420"][0], GOOD["png-rgb"][0], GOOD["jpeg-progressive"][0]
    sos = jpg.index(b"\xff\xda")
    corrupt_scan = bytearray(jpg)
    corrupt_scan[sos + 40:sos + 44] = b"\xff\xd0\xff\xd3"   # restart markers where none belong
    return {
        "zero-bytes": (b"", "jpg", "empty"),
        "text-as-jpg": (b"this is a README, not a photo\n" * 3, "jpg", "not an image"),
        "html-as-png": (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "png", "not an image"),
        "soi-then-garbage": (b"\xff\xd8\xff" + bytes(range(256)) * 4, "jpg", "JPEG|marker|Bogus|Unsupported"),
        "jpeg-header-only": (jpg[:sos], "jpg", "JPEG|premature|end"),
        "jpeg-half": (jpg[:len(jpg) // 2], "jpg", "premature|end|truncated"),
        "jpeg-no-eoi-tail": (jpg[:-40], "jpg", "premature|end|truncated"),
        "jpeg-progressive-half": (prog[:len(prog) // 2], "jpg", "premature|end|truncated"),
        "jpeg-corrupt-scan": (bytes(corrupt_scan), "jpg", "marker|Corrupt|RST"),
        "jpeg-3-bytes": (jpg[:3], "jpg", "JPEG|empty|premature|end"),
        "png-half": (png[:len(png) // 2], "png", "truncated|OSError|SyntaxError|error"),
        "png-signature-only": (png[:8], "png", "truncated PNG header"),
        "png-bad-crc": (png[:30] + bytes([png[30] ^ 0xFF]) + png[31:], "png", "corrupt or truncated PNG header"),
        "png-corrupt-zlib": (png[:60] + b"\x00" * 40 + png[100:], "png", "error|Error|truncated"),
        "gif-truncated": (GOOD["gif-animated"][0][:40], "gif", "truncated GIF header"),
        "jpeg-bomb": (huge_jpeg(60000, 60000), "jpg", "over the limit"),
        "png-bomb": (huge_png(100_000, 100_000), "png", "over the limit|DecompressionBomb"),
    }


BAD = bad_files()


def write_dataset(root, bad_names, n_good=8):
    """A flat folder: n_good photo JPEGs with the named bad files interleaved."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        (root / f"good{i:02d}.jpg").write_bytes(encode(photo_like(30 + i, 40, seed=i), quality=90))
    for name in bad_names:
        data, ext, _ = BAD[name]
        (root / f"{name}.{ext}").write_bytes(data)
    return fl.ImageFiles(root)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_raises_decode_error_naming_it(tmp_path, name):
    data, ext, reason = BAD[name]
    path = tmp_path / f"{name}.{ext}"
    path.write_bytes(data)
    for item in (str(path), data):
        loader = fl.Loader(fl.ListSource([item], "files"), batch_size=1, transforms=[fl.Resize((H, W))])
        with pytest.raises(fl.DecodeError, match=reason) as e:
            next(iter(loader))
        named = f"files[0] ({path})" if isinstance(item, str) else "files[0]"   # a path record names its file
        assert e.value.record == named
        assert str(e.value).startswith(f"{named}: ") and e.value.reason
    loader = fl.Loader(fl.ImageFiles([path]), batch_size=1, transforms=[fl.Resize((H, W))])
    with pytest.raises(fl.DecodeError) as e:
        next(iter(loader))
    assert e.value.record == str(path) and str(path) in str(e.value)
    assert fastload_threads() == []


def test_max_pixels_is_checked_before_memory_is_spent():
    small = GOOD["jpeg-420"][0]
    for data in (small, GOOD["png-rgb"][0], GOOD["jpeg-exif6"][0]):
        with pytest.raises(fl.DecodeError, match=f"{SRC_W}x{SRC_H} = {SRC_W * SRC_H} pixels, over the limit of 1000"):
            load([data], max_pixels=1000)
        load([data], max_pixels=SRC_W * SRC_H)   # at the limit: fine
    with pytest.raises(fl.DecodeError, match="60000x60000"):
        load([huge_jpeg(60000, 60000)])


def test_skip_drops_counts_and_reports_every_bad_file_once(tmp_path, capfd):
    src = write_dataset(tmp_path / "data", sorted(BAD))
    kw = dict(batch_size=5, transforms=[fl.Resize((H, W))], dtype="uint8", layout="NHWC", dct_scale=False)
    with pytest.warns(RuntimeWarning, match="skipping records") as rec:
        loader = fl.Loader(src, on_error="skip", workers=2, **kw)
        epochs = [[np.array(x) for x in loader] for _ in range(2)]
    assert len(rec) == 1   # once per loader, not per file or per epoch
    assert capfd.readouterr() == ("", "")   # nothing printed, not even by libjpeg
    bad_paths = sorted(p for p in src.paths if not os.path.basename(p).startswith("good"))
    failures = loader.stats()["failures"]
    assert sorted(p for p, _ in failures) == bad_paths      # this epoch's, one entry per record
    for path, reason in failures:
        name = os.path.basename(path).rsplit(".", 1)[0]
        assert reason and re.search(BAD[name][2], reason), (name, reason)
    assert loader.stats()["skipped"] == 2 * len(BAD)
    good = [p for p in src.paths if os.path.basename(p).startswith("good")]
    assert loader.stats()["stand_ins"] > 0 and all(len(e) == len(loader) for e in epochs)
    for batches in epochs:
        # a batch whose every record failed has the next batch that reads (wrapping round) as its
        # stand-in: keep each batch's first appearance
        batches = [b for i, b in enumerate(batches) if not any(np.array_equal(b, a) for a in batches[:i])]
        images = np.concatenate(batches)
        assert len(images) == len(good)
        for path, got in zip(good, images):   # survivors keep their order and their own pixels
            with open(path, "rb") as f:
                assert_close(got, reference(f.read()), path)


def test_max_failures_count_and_fraction(tmp_path):
    src = write_dataset(tmp_path / "data", ["zero-bytes", "text-as-jpg", "jpeg-half"], n_good=17)
    assert len(src) == 20
    kw = dict(batch_size=4, transforms=[fl.CenterCrop(8)])
    with pytest.warns(RuntimeWarning):
        assert sum(len(x) for x in fl.Loader(src, max_failures=3, **kw)) == 17
        assert sum(len(x) for x in fl.Loader(src, max_failures=0.15, **kw)) == 17   # floor(0.15 * 20) = 3
    for budget in (2, 0.1):
        with pytest.raises(fl.RecordError, match=f"3 records failed this epoch, over max_failures={budget}"):
            list(fl.Loader(src, max_failures=budget, **kw))
        assert fastload_threads() == []
    with pytest.raises(fl.DecodeError):   # the default is raise
        list(fl.Loader(src, **kw))
    # a stream's fraction is of the records read so far, this batch's good ones among them: they were
    # left out, so a first batch with a failure was over any fraction short of 1
    stream = fl.Subset(src, [19, *range(19)]).map(lambda r: r)   # a failure in the first batch
    with pytest.warns(RuntimeWarning):
        loader = fl.Loader(stream, max_failures=0.5, **kw)
        assert sum(len(x) for x in loader) == 17 and loader.stats()["skipped"] == 3


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and POSIX symbolic links")
def test_unreadable_paths(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(GOOD["jpeg-420"][0])
    (tmp_path / "dir.jpg").mkdir()
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "dangling.jpg")
    os.mkfifo(tmp_path / "fifo.jpg")   # opening a FIFO for reading blocks unless told not to
    paths = [str(tmp_path / n) for n in ("good.jpg", "dir.jpg", "dangling.jpg", "missing.jpg", "fifo.jpg")]
    result = {}

    def run():
        loader = fl.Loader(fl.ImageFiles(paths), batch_size=5, transforms=[fl.Resize((H, W))], on_error="skip",
                           workers=0)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            result["n"] = len(next(iter(loader)))
        result["failures"] = dict(loader.stats()["failures"])
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the loader hung on a special file"
    assert result["n"] == 1
    f = result["failures"]
    assert f[paths[1]] == f"not a regular file: {paths[1]}" and f[paths[4]] == f"not a regular file: {paths[4]}"
    assert "No such file" in f[paths[2]] and "No such file" in f[paths[3]]


def test_files_deleted_mid_epoch(tmp_path):
    src = write_dataset(tmp_path / "data", [], n_good=12)
    kw = dict(batch_size=2, transforms=[fl.CenterCrop(8)], prefetch=1, workers=1)
    victims = src.paths[8], src.paths[11]   # batches 4 and 5: beyond what is in flight after batch 0
    loader = fl.Loader(src, on_error="skip", **kw)
    it = iter(loader)
    next(it)
    for v in victims:
        os.remove(v)
    with pytest.warns(RuntimeWarning, match="skipping"):
        sizes = [len(x) for x in it]
    assert sizes == [2, 2, 2, 1, 1]
    assert [p for p, _ in loader.stats()["failures"]] == list(victims)
    assert all("No such file" in r for _, r in loader.stats()["failures"])
    with pytest.raises(fl.DecodeError, match="good08.jpg: cannot open: No such file"):
        list(fl.Loader(src, **kw))


# -- multi-field records ------------------------------------------------------------------

class Caption(Field):
    """A text field that fails on captions containing 'BAD' (as a tokenizer might on bad UTF-8)."""

    def __init__(self):
        self.name = "caption"

    def outputs(self):
        return [Output(self.name, (1,), np.dtype(np.int64))]

    def fill(self, values, outs, ctx):
        failures = {}
        for i, v in enumerate(values):
            if "BAD" in v:
                failures[i] = "caption marked BAD"
            else:
                outs[self.name][i, 0] = int(v.split()[-1])
        return failures


def gray(i):
    return 10 + (i * 23) % 230


def multi_field_records(tmp_path, n=30, bad_images=(4, 17), bad_captions=(9, 21)):
    (tmp_path / "img").mkdir(parents=True)
    paths = []
    for i in range(n):
        p = tmp_path / "img" / f"{i:03d}.png"
        if i in bad_images:
            p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
        else:
            Image.fromarray(np.full((12 + i % 5, 16, 3), gray(i), np.uint8)).save(p)
        paths.append(str(p))
    captions = [("BAD " if i in bad_captions else "") + f"caption {i}" for i in range(n)]
    return fl.zip(image=fl.ImageFiles(paths), text=fl.ListSource(captions, "captions"),
                  number=fl.ListSource(captions, "numbers"))


@pytest.mark.parametrize("workers", [0, 3])
def test_multi_field_skip_drops_whole_records_never_misaligned(tmp_path, workers):
    records = multi_field_records(tmp_path)
    loader = fl.Loader(records, batch_size=7, shuffle=True, seed=2, workers=workers, on_error="skip",
                       dtype="uint8", layout="NHWC",
                       fields={"image": [fl.Resize((6, 6))], "number": Caption(), "text": None})
    seen = []
    with pytest.warns(RuntimeWarning) as rec:
        for batch in loader:
            assert len(batch["image"]) == len(batch["number"]) == len(batch["text"])
            for img, num, text in zip(batch["image"], batch["number"][:, 0], batch["text"]):
                assert text == f"caption {num}"
                assert np.abs(img.astype(int) - gray(num)).max() <= 1
                seen.append(int(num))
    assert len(rec) == 1
    assert sorted(seen) == [i for i in range(30) if i not in (4, 17, 9, 21)]
    failures = dict(loader.stats()["failures"])
    assert sorted(failures) == sorted(records.record_id(i) for i in (4, 17, 9, 21))
    assert failures[records.record_id(9)] == "field 'number': caption marked BAD"   # the field that failed
    assert "000" not in "".join(failures) and "004.png" in records.record_id(4)


def test_bad_labels_are_record_errors_that_say_why(tmp_path):
    path = str(tmp_path / "a.png")
    Image.fromarray(photo_like(8, 8, seed=1)).save(path)
    for label, why in ((-1, r"label -1 is negative \(labels are class indices: 0, 1, \.\.\.\)"),
                       ("cat", "label 'cat' is not an integer")):
        loader = fl.Loader(fl.ListSource([(path, 0), (path, label)]), batch_size=2, transforms=[fl.Resize((4, 4))])
        with pytest.raises(fl.RecordError, match=rf"ListSource\[1\] \({re.escape(path)}\): field 'label': {why}"):
            list(loader)


def test_labels_that_are_not_class_indices_fail_their_record():
    # 1.7 was truncated to class 1 without a word; 2**63 stopped the loader even under skip.
    for label, why in ((1.7, r"label 1\.7 is not a whole number"), (2.5, r"label 2\.5 is not a whole number"),
                       (float("nan"), "label nan is not a whole number"),
                       (2**63, r"label 9223372036854775808 outside \[0, 2\*\*63\)"),
                       (np.uint64(2**64 - 1), r"label 18446744073709551615 outside \[0, 2\*\*63\)")):
        src = fl.ListSource([{"y": v} for v in (0, label, 1, 2)])
        with pytest.raises(fl.RecordError, match=rf"ListSource\[1\]: field 'y': {why}"):
            list(fl.Loader(src, batch_size=4, fields={"y": "index"}))
        with pytest.warns(RuntimeWarning, match="skipping records"):
            got = [b["y"].tolist() for b in fl.Loader(src, batch_size=4, fields={"y": "index"}, on_error="skip")]
        assert got == [[0, 1, 2]]
    whole = fl.ListSource([{"y": v} for v in (0, 2.0, np.float32(1.0), 2)])   # whole numbers are class indices
    assert next(iter(fl.Loader(whole, batch_size=4, fields={"y": "index"})))["y"].tolist() == [0, 2, 1, 2]


def test_multi_field_raise_names_the_record_and_field(tmp_path):
    records = multi_field_records(tmp_path, bad_captions=())
    loader = fl.Loader(records, batch_size=8, fields={"image": [fl.Resize((6, 6))], "number": Caption(),
                                                      "text": None})
    with pytest.raises(fl.DecodeError) as e:
        list(loader)
    assert e.value.record == records.record_id(4) and "004.png" in str(e.value)
    assert e.value.reason.startswith("field 'image': ")
    records = multi_field_records(tmp_path / "b", bad_images=())
    loader = fl.Loader(records, batch_size=8, fields={"image": [fl.Resize((6, 6))], "number": Caption()})
    with pytest.raises(fl.RecordError, match="field 'number': caption marked BAD") as e:
        list(loader)
    assert e.value.record == records.record_id(9) and not isinstance(e.value, fl.DecodeError)
    assert fastload_threads() == []


def write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return fl.JSONRecords(path)


def test_skip_finds_the_fields_from_the_first_record_that_reads(tmp_path):
    """The fields not named in fields= were found from record 0, outside the error policy: under skip a
    malformed first line made Loader(...) itself raise, where the same line second was skipped."""
    good = [f'{{"x": [{i}], "label": {i % 2}, "id": "r{i}"}}' for i in range(1, 12)]
    src = write_jsonl(tmp_path / "bad_first.jsonl", ["{bad"] + good)
    fields = {"x": fl.Numeric(1), "label": "index"}
    with pytest.raises(fl.RecordError, match=r"bad_first.jsonl:line 1: malformed JSON"):
        fl.Loader(src, batch_size=4, fields=fields)
    loader = fl.Loader(src, batch_size=4, on_error="skip", fields=fields)
    with pytest.warns(RuntimeWarning, match="line 1: malformed JSON"):
        ids = [i for batch in loader for i in batch["id"]]
    assert ids == [f"r{i}" for i in range(1, 12)] and loader.stats()["skipped"] == 1


def test_skip_over_records_none_of_which_reads_names_the_source(tmp_path):
    src = write_jsonl(tmp_path / "all_bad.jsonl", ["{bad", "[1,", "nope"])
    with pytest.raises(fl.RecordError, match=r"all_bad.jsonl.*none of its first 3 records could be read.*"
                                             r"all_bad.jsonl:line 1: malformed JSON"):
        fl.Loader(src, batch_size=4, on_error="skip", fields={"x": fl.Numeric(1)})


def test_skip_finds_a_streams_fields_past_a_record_it_could_not_read():
    """A stream's first item a FailedRecord (a shard that would not open): its fields were taken to be none,
    silently, so the fields fields= did not name were not passed through."""
    def records():
        yield fl.FailedRecord("shard-0.tar", "cannot open the shard")
        yield from ({"x": [i], "id": f"r{i}"} for i in range(5))
    stream = fl.IterableRecords(records)
    loader = fl.Loader(stream, batch_size=8, on_error="skip", fields={"x": fl.Numeric(1)})
    with pytest.warns(RuntimeWarning, match="shard-0.tar: cannot open the shard"):
        assert [batch["id"] for batch in loader] == [[f"r{i}" for i in range(5)]]
    with pytest.raises(fl.RecordError, match="shard-0.tar: cannot open the shard"):
        fl.Loader(stream, batch_size=8, fields={"x": fl.Numeric(1)})


# ---- the accounting of failures --------------------------------------------------------------

def _jpegs(tmp_path, n, bad):
    """n small JPEG paths; those in ``bad`` cut in half (libjpeg: premature end of file)."""
    paths = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(photo_like(20, 24, seed=i)).save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        p = tmp_path / f"{i:03d}.jpg"
        p.write_bytes(data[:len(data) // 2] if i in bad else data)
        paths.append(str(p))
    return paths


def _skip_loader(source, **kw):
    return fl.Loader(source, transforms=[fl.Resize((8, 8))], on_error="skip", workers=1, **kw)


def test_a_file_listed_twice_that_fails_counts_twice(tmp_path):
    # Failures were counted once an epoch by record name: oversampling a bad file (a path repeated,
    # a Subset index repeated) let three failed records count as one, and under max_failures.
    good, bad = _jpegs(tmp_path, 2, bad={1})
    for source in (fl.ImageFiles([good, bad, good, bad, bad, good]),
                   Subset(fl.ImageFiles([good, bad]), [0, 1, 0, 1, 1, 0])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            loader = _skip_loader(source, batch_size=2)   # the repeats in other batches
            assert [len(b) for b in loader] == [1, 1, 1]
            s = loader.stats()
            assert (s["skipped"], s["failed_this_epoch"], len(s["failures"])) == (3, 3, 1), s
            with pytest.raises(fl.RecordError, match="3 records failed this epoch, over max_failures=2"):
                list(_skip_loader(source, batch_size=2, max_failures=2))


def test_a_rank_none_of_whose_batches_reads_stands_in_with_another_ranks(tmp_path):
    # A rank whose every batch failed had none of its own to stand in: it raised "every record
    # failed" (of an epoch most of which read), naming no file, while the other ranks waited in
    # their all-reduce. The other ranks' shares stand in, the same ones on every run.
    paths = _jpegs(tmp_path, 5, bad={1, 3})   # two ranks, batches of 1: rank 1 has records 1 and 3

    def make(rank, workers=1):
        return fl.Loader(fl.ImageFiles(paths), batch_size=1, drop_last=True, rank=rank, world_size=2,
                         transforms=[fl.Resize((8, 8))], on_error="skip", workers=workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loaders = [make(0), make(1)]
        got = [[np.array(b) for b in loader] for loader in loaders]
        assert [len(g) for g in got] == [len(loader) for loader in loaders] == [2, 2]
        # each step's stand-in is rank 0's share of that step (records 0 and 2)
        assert all(np.array_equal(a, b) for a, b in zip(got[1], got[0]))
        s = loaders[1].stats()
        assert (s["skipped"], s["stand_ins"], s["samples"]) == (2, 2, 2)
        again = make(1, workers=3)
        for b, batch in enumerate(again):
            assert np.array_equal(np.array(batch), got[1][b]) and np.array_equal(again.batch_at(b, 0), got[1][b])
        # record 4 reads, but drop_last leaves it out of every batch: nothing can stand in
        for i in (0, 2):
            with open(paths[i], "wb") as f:
                f.write(b"not a JPEG")
        for rank in (0, 1):
            with pytest.raises(fl.RecordError, match=re.escape(
                    "every record failed (all 4 records its batches hold on every rank, of the source's 5; "
                    f"the first: {paths[rank]}: ")):
                list(make(rank))


def test_a_look_at_another_epoch_leaves_this_ones_failures(tmp_path):
    # batch_at(0, epoch=1) in epoch 0 reset epoch 0's count: it ended at 1 of 4 failures, the
    # failure seen in the look counted again in epoch 1, and max_failures=3 let 4 through.
    paths = _jpegs(tmp_path, 16, bad={1, 5, 9, 13})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loader = _skip_loader(fl.ImageFiles(paths), batch_size=4)
        it = iter(loader)
        next(it), next(it)
        loader.batch_at(0, epoch=1)
        assert len(list(it)) == 2
        s = loader.stats()
        assert (s["failed_this_epoch"], len(s["failures"])) == (4, 4), s
        assert len(list(loader)) == 4 and loader.stats()["skipped"] == 8
        capped = _skip_loader(fl.ImageFiles(paths), batch_size=4, max_failures=3)
        it = iter(capped)
        next(it), next(it)
        capped.batch_at(0, epoch=1)
        with pytest.raises(fl.RecordError, match="4 records failed this epoch, over max_failures=3"):
            list(it)


def test_a_pass_begun_again_after_max_failures_tripped_trips_again(tmp_path):
    # The failures were counted already, so the check was skipped, and the rest of the epoch came.
    paths = _jpegs(tmp_path, 6, bad={0})
    loader = _skip_loader(fl.ImageFiles(paths), batch_size=2, max_failures=0)
    for _ in range(2):
        with pytest.raises(fl.RecordError, match="1 records failed this epoch, over max_failures=0"):
            list(loader)


def test_a_streams_failure_fraction_is_of_this_epochs_records(tmp_path):
    # A stream's fraction was of every record seen since the Loader was made: after a clean epoch,
    # 4 failures of 14 passed max_failures=0.25 (3 allowed).
    paths = _jpegs(tmp_path, 14, bad=set())
    (tmp_path / "b").mkdir()
    broken = _jpegs(tmp_path / "b", 14, bad={10, 11, 12, 13})   # late: a fraction of those seen so far
    which = [paths]
    stream = fl.IterableRecords(lambda: iter(which[0]))
    loader = _skip_loader(stream, batch_size=4, max_failures=0.25)
    assert sum(len(b) for b in loader) == 14
    which[0] = broken
    with warnings.catch_warnings(), pytest.raises(fl.RecordError, match="4 records failed this epoch, over "
                                                                        "max_failures=0.25"):
        warnings.simplefilter("ignore", RuntimeWarning)
        list(loader)


@pytest.mark.parametrize("kind", ["ListSource", "pairs", "stream"])
def test_a_record_that_is_a_path_is_named_by_it(tmp_path, kind):
    # "ListSource[1]: Premature end of JPEG file" named no file, though the record is its path.
    paths = _jpegs(tmp_path, 4, bad={1})
    source = {"ListSource": lambda: fl.ListSource(paths),
              "pairs": lambda: fl.ListSource([(p, 0) for p in paths]),
              "stream": lambda: fl.IterableRecords(lambda: iter(paths))}[kind]()
    with pytest.raises(fl.DecodeError) as e:
        list(fl.Loader(source, batch_size=4, workers=1, transforms=[fl.Resize((8, 8))]))
    assert paths[1] in str(e.value) and ("ListSource[1]" in str(e.value) or "record 1" in str(e.value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loader = _skip_loader(source, batch_size=4)
        list(loader)
    assert [paths[1] in name for name, _ in loader.stats()["failures"]] == [True]


@pytest.mark.parametrize("kind", ["ListSource", "stream"])
def test_a_dict_record_is_named_by_the_paths_it_holds(tmp_path, kind):
    # "ListSource[1]: field 'image': ..." named no file, though the record held its path.
    paths = _jpegs(tmp_path, 4, bad={1})
    records = [{"image": p, "caption": "a cat.", "label": i} for i, p in enumerate(paths)]
    source = fl.ListSource(records) if kind == "ListSource" else fl.IterableRecords(lambda: iter(records))
    fields = {"image": fl.Image([fl.Resize((8, 8))]), "label": "index"}
    with pytest.raises(fl.DecodeError) as e:
        list(fl.Loader(source, batch_size=4, workers=1, fields=fields))
    assert f"(image={paths[1]})" in str(e.value) and "field 'image'" in str(e.value)
    assert "cat" not in str(e.value)    # a caption is no path


def test_a_record_a_stage_made_none_is_named_as_none():
    """A user .map that returned None for one record: each field reported its own symptom, NaN for a
    number (and 'field 'x': field 'x': ...' with two fields). The record is reported as None, and
    under on_error="skip" it is skipped and counted like any failed record."""
    n = 8
    src = fl.ArrayRecords(x=np.arange(n, dtype=np.float32).reshape(n, 1), y=np.arange(n) % 2)
    stream = src.map(lambda r: None if int(r["x"][0]) == 5 else r)
    fields = {"x": fl.Numeric(1), "y": "index"}
    with pytest.raises(fl.RecordError, match=r"^record 5: the record is None$"):
        list(fl.Loader(stream, batch_size=4, fields=fields))
    loader = fl.Loader(stream, batch_size=4, fields=fields, on_error="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        xs = np.concatenate([b["x"][:, 0] for b in loader])
    assert xs.tolist() == [0, 1, 2, 3, 4, 6, 7]
    assert loader.stats()["failures"] == [("record 5", "the record is None")]
    # a value of None in a record is named too, not read as a NaN
    bad = fl.ListSource([{"x": [1.0], "y": 0}, {"x": None, "y": 1}])
    with pytest.raises(fl.RecordError, match=r"field 'x': no value \(None\)"):
        list(fl.Loader(bad, batch_size=2, fields=fields))


def test_labels_given_as_one_element_lists_fail_their_records_in_both_modes():
    # A JSON Lines column of [2]s was written as a block of ones (one-hot) or stopped the loader (index).
    src = fl.ListSource([{"x": [float(i)], "y": [i % 3]} for i in range(6)])
    for mode, shape in (("index", ()), ("onehot", (3,))):
        fields = {"x": fl.Numeric(1), "y": fl.Labels(3, mode)}
        with pytest.raises(fl.RecordError, match=r"ListSource\[0\]: field 'y': label \[0\] is not a single value"):
            list(fl.Loader(src, batch_size=3, fields=fields))
        with pytest.raises(fl.RecordError, match=r"every record failed .*label \[0\] is not a single value"), \
                pytest.warns(RuntimeWarning, match="skipping records"):
            list(fl.Loader(src, batch_size=3, fields=fields, on_error="skip"))
    good = fl.ListSource([{"y": np.int64(i % 3)} for i in range(4)] + [{"y": np.array([1])}])
    with pytest.warns(RuntimeWarning, match=r"ListSource\[4\]: field 'y': label array\(\[1\]\) is not a single"):
        batches = list(fl.Loader(good, batch_size=5, fields={"y": fl.Labels(3, "onehot")}, on_error="skip"))
    assert [b["y"].tolist() for b in batches] == [[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]]
