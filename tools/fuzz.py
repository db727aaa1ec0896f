"""Long-running byte-mutation fuzzer for fastload's decode and sample kernels.

Run it against an installed fastload (pip install .), or an in-place build with
PYTHONPATH set to the checkout.

    python tools/fuzz.py --n 200000              # this many inputs
    python tools/fuzz.py --seconds 600           # or for this long
    python tools/fuzz.py --write-corpus DIR --n 2000   # seeds, mutants and bad inputs as files (tools/asan.sh)

Inputs are valid JPEG/PNG/GIF/WebP seeds made here (Pillow; jpegtran for arithmetic coding when
installed), each mutated 1-6 times (mostly once or twice) (bit flips, interesting bytes, 16-bit header fields, truncation,
insertion, deletion, duplication, splicing), deterministically from (--seed, input number). Each
input goes through three targets in a child process:

  decode  fastload._kernels._batch.JpegDecoder: info, decoded_shape, decode of a random region
  sample  fastload._kernels._batch.Worker.run_chunk with a random plan (compile_plan)
  field   fastload.image.field.ImageField.fill: the Pillow route and process_rgb as well

The child announces each input before running it, so when it dies (a crash) or stops answering (a
hang) the parent saves that input under --crash-dir, counts it, and starts a new child after it.
Prints inputs tried, outcomes by target and kind, and the crashes, hangs and unexpected results,
which must all be 0 (the exit status says so).
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

EXPECTED = {"ok", "not_jpeg", "unsupported", "decode", "too_large", "value_error", "geometry", "crop"}


# -- seeds and mutations ----------------------------------------------------------------------

def photo(h, w, seed):
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h)[:, None, None]
    x = np.linspace(0, 1, w)[None, :, None]
    img = 128 + 100 * np.sin(rng.uniform(-4, 4, 3) * x + rng.uniform(-4, 4, 3) * y + rng.uniform(0, 6, 3))
    img = img + rng.normal(0, 10, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def seeds() -> dict[str, bytes]:
    from PIL import Image

    def enc(im, fmt="JPEG", **kw):
        b = io.BytesIO()
        (im if isinstance(im, Image.Image) else Image.fromarray(im)).save(b, fmt, **kw)
        return b.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6
    a, b, c = photo(40, 56, 1), photo(17, 9, 2), photo(130, 100, 3)
    out = {
        "jpeg-420": enc(a, quality=80), "jpeg-444": enc(b, quality=90, subsampling=0),
        "jpeg-422-big": enc(c, quality=75, subsampling=1), "jpeg-progressive": enc(a, quality=80, progressive=True),
        "jpeg-progressive-big": enc(c, quality=70, progressive=True, subsampling=0),
        "jpeg-gray": enc(a[..., 0], quality=80), "jpeg-restart": enc(c, quality=80, restart_marker_blocks=3),
        "jpeg-exif6": enc(a, quality=80, exif=exif.tobytes()),
        "jpeg-cmyk": enc(Image.fromarray(b).convert("CMYK"), quality=80),
        "png": enc(a, "PNG"), "png-palette": enc(Image.fromarray(b).quantize(8), "PNG", transparency=1),
        "png-16": enc(Image.fromarray((a[..., 0].astype(np.uint16) * 257)), "PNG"),
        "gif": enc(Image.fromarray(b).quantize(16), "GIF"),
        "webp": enc(a, "WEBP", quality=70),
    }
    jpegtran = shutil.which("jpegtran")
    if jpegtran:
        for flags, name in ((["-arithmetic"], "jpeg-arith"), (["-arithmetic", "-progressive"], "jpeg-arith-prog")):
            r = subprocess.run([jpegtran, *flags], input=out["jpeg-422-big"], capture_output=True)
            if r.returncode == 0:
                out[name] = r.stdout
    return out


INTERESTING8 = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC0, 0xC2, 0xC4, 0xD8, 0xD9, 0xDA, 0xDB, 0xDD, 0xE1]
INTERESTING16 = [0, 1, 2, 7, 8, 9, 16, 255, 256, 0x7FFF, 0x8000, 0xFFFF]


def mutate(data: bytes, rng: np.random.Generator, corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(min(int(rng.geometric(0.45)), 6)):   # mostly one or two, so many inputs get deep
        n = len(b)
        # Positions favour the headers (the first few hundred bytes) where markers live.
        pos = int(rng.integers(0, min(n, 700))) if n and rng.random() < 0.6 else int(rng.integers(0, max(n, 1)))
        op = int(rng.integers(0, 9))
        if op == 0 and n:
            b[pos] ^= 1 << int(rng.integers(0, 8))
        elif op == 1 and n:
            b[pos] = INTERESTING8[int(rng.integers(len(INTERESTING8)))]
        elif op == 2 and n > 1:   # a 16-bit big-endian field (segment lengths, sizes, counts)
            v = INTERESTING16[int(rng.integers(len(INTERESTING16)))]
            b[pos:pos + 2] = bytes([v >> 8, v & 0xFF])
        elif op == 3:
            del b[pos:]
        elif op == 4:
            b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 33)), dtype=np.uint8).tobytes()
        elif op == 5:
            del b[pos:pos + int(rng.integers(1, 129))]
        elif op == 6:
            b[pos:pos] = b[pos:pos + int(rng.integers(1, 400))]
        elif op == 7:   # splice: the tail of another seed
            other = corpus[int(rng.integers(len(corpus)))]
            b[pos:] = other[int(rng.integers(0, len(other))):]
        elif op == 8 and n:   # a marker where data was
            b[pos:pos + 2] = bytes([0xFF, INTERESTING8[int(rng.integers(len(INTERESTING8)))]])
    return bytes(b)


def nth_input(seed: int, i: int, corpus_names: list[str], corpus: dict[str, bytes]):
    rng = np.random.default_rng([seed, i])
    name = corpus_names[int(rng.integers(len(corpus_names)))]
    return name, mutate(corpus[name], rng, [corpus[k] for k in corpus_names]), rng


# -- the child: run inputs, report each ---------------------------------------------------------

def child(seed: int, start: int, stop: int) -> None:
    import warnings

    import fastload as fl
    from fastload._kernels import _batch
    from fastload.image.field import ImageField, compile_plan
    from fastload.pipeline.fields import ChunkContext

    corpus = seeds()
    names = sorted(corpus)
    transforms = [
        [fl.Resize((16, 12))],
        [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.RandomRotate90()],
        [fl.Resize(20), fl.CenterCrop(16), fl.ColorJitter(0.4, 0.4, 0.4), fl.Normalize([0.5] * 3, [0.25] * 3)],
        [fl.RandomCrop(24), fl.Resize((8, 8), interpolation="nearest"), fl.RandomVerticalFlip()],
        [fl.Resize((9, 33), interpolation="area")],
        [fl.Resize(64, max_size=80), fl.CenterCrop(48)],
    ]
    dtypes = ["uint8", "float16", "float32"]
    decoder, worker = _batch.JpegDecoder(), _batch.Worker()
    fields, plans = {}, {}
    status_kind = {code: name for code, name in _batch.FL_STATUS.items()}

    def plan_for(rng):
        t, d = int(rng.integers(len(transforms))), dtypes[int(rng.integers(3))]
        if t == 2 and d == "uint8":
            d = "float32"
        kw = dict(dtype=d, layout=("NCHW", "NHWC")[int(rng.integers(2))], exif=bool(rng.integers(2)),
                  dct_scale=bool(rng.integers(2)), max_pixels=3000 if rng.random() < 0.15 else 10_000_000)
        key = (t, tuple(sorted(kw.items())))
        if key not in plans:
            plans[key] = compile_plan(transforms[t], **kw) + (kw,)
            fields[key] = ImageField(transforms[t], **kw)
        return plans[key], fields[key]

    def run_decode(data, rng):
        region = None if rng.random() < 0.3 else tuple(int(v) for v in rng.integers(-8, 140, 4))
        kw = dict(region=region, min_size=tuple(int(v) for v in rng.integers(0, 64, 2)),
                  max_denom=int(2 ** rng.integers(0, 4)), exif=bool(rng.integers(2)),
                  max_pixels=3000 if rng.random() < 0.15 else 10_000_000)
        try:
            decoder.info(data)
            shape, info = decoder.decoded_shape(data, **kw)
            pixels, info2 = decoder.decode(data, **kw)
        except _batch.Unsupported:
            return "unsupported"
        except fl.DecodeError as e:
            return "too_large" if "over the limit" in e.reason else "decode"
        except ValueError:
            return "value_error"
        if pixels.shape != shape or info != info2:
            return "UNEXPECTED shape mismatch"
        return "ok"

    def run_sample(data, rng):
        (plan, size, kw), _ = plan_for(rng)
        shape = (3, *size) if kw["layout"] == "NCHW" else (*size, 3)
        out = np.zeros((1, *shape), kw["dtype"])
        status = np.empty(1, np.int32)
        failed = worker.run_chunk(plan, [data], False, np.array([rng.integers(1 << 20)], np.uint64),
                                  int(rng.integers(1 << 31)), 0, out, status)
        kind = status_kind.get(int(status[0]), f"status {status[0]}")
        if status[0] < 0 and not failed.get(0):
            return "UNEXPECTED error without a message"
        if kind == "arg" and failed[0].startswith("transforms give"):
            # Known: a crop larger than the resized image (Resize(s, max_size) + CenterCrop on an
            # extreme aspect ratio) is not padded; the sample fails with this message.
            return "geometry"
        if kind == "ok" and kw["dtype"] != "uint8" and not np.isfinite(out).all():
            return "UNEXPECTED non-finite output"
        return kind if kind in EXPECTED else "UNEXPECTED " + kind

    def run_field(data, rng):
        (_, size, kw), field = plan_for(rng)
        (o,) = field.outputs()
        out = np.zeros((1, *o.shape), o.dtype)
        failures = field.fill([data], {o.name: out}, ChunkContext(int(rng.integers(1 << 31)), 0,
                                                                   np.zeros(1, np.uint64)))
        if failures:
            return "too_large" if "over the limit" in failures[0] else "decode"
        if kw["dtype"] != "uint8" and not np.isfinite(out).all():
            return "UNEXPECTED non-finite output"
        return "ok"

    targets = (("decode", run_decode), ("sample", run_sample), ("field", run_field))
    # To check the supervisor: crash (abort) or hang (sleep) on purpose at one input.
    abort_at = int(os.environ.get("FASTLOAD_FUZZ_ABORT_AT", -1))
    hang_at = int(os.environ.get("FASTLOAD_FUZZ_HANG_AT", -1))
    for i in range(start, stop):
        _, data, rng = nth_input(seed, i, names, corpus)
        print(f"B {i}", flush=True)
        if i == abort_at:
            os.abort()
        if i == hang_at:
            time.sleep(1e6)
        kinds, warned = [], []
        for tname, fn in targets:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                try:
                    kind = fn(data, rng)
                except Exception as e:   # anything but the documented errors is a finding
                    kind = f"UNEXPECTED {type(e).__name__}: {str(e)[:80]}"
            kinds.append(kind)
            warned += sorted({f"{tname}:{type(x.message).__name__}" for x in w})
        print("E " + json.dumps([i, kinds, warned]), flush=True)


# -- the parent: supervise children -----------------------------------------------------------

def supervise(args) -> int:
    deadline = time.monotonic() + args.seconds if args.seconds else None
    stop = args.n if args.n else 1 << 62
    os.makedirs(args.crash_dir, exist_ok=True)
    corpus = seeds()
    names = sorted(corpus)
    outcomes = {t: collections.Counter() for t in ("decode", "sample", "field")}
    warns, unexpected = collections.Counter(), []
    crashes, hangs, tried, i = [], [], 0, 0
    t0 = time.monotonic()

    def save(kind, j):
        name, data, _ = nth_input(args.seed, j, names, corpus)
        path = os.path.join(args.crash_dir, f"{kind}-seed{args.seed}-{j}-{name}.bin")
        with open(path, "wb") as f:
            f.write(data)
        return path

    while i < stop and (deadline is None or time.monotonic() < deadline):
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", "--seed", str(args.seed),
                                 "--start", str(i), "--stop", str(stop)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        current, hung = None, False
        while deadline is None or time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], args.hang_s)
            if not ready:   # no word from the child for hang_s: it is stuck on `current`
                hung = True
                proc.kill()
                break
            line = proc.stdout.readline()
            if not line:   # the child is gone
                break
            if line.startswith("B "):
                current = int(line.split()[1])
            elif line.startswith("E "):
                j, kinds, warned = json.loads(line[2:])
                tried += 1
                current, i = None, j + 1
                for t, k in zip(outcomes, kinds):
                    outcomes[t]["UNEXPECTED" if k.startswith("UNEXPECTED") else k] += 1
                    if k.startswith("UNEXPECTED"):
                        unexpected.append((save("unexpected", j), t, k))
                warns.update(warned)
                if args.progress and tried % args.progress == 0:
                    print(f"  {tried} inputs, {time.monotonic() - t0:.0f} s, crashes {len(crashes)}", flush=True)
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        rc = proc.wait()
        err = proc.stderr.read()
        proc.stderr.close()
        if deadline is not None and time.monotonic() >= deadline and not hung:
            break   # out of time; the input in flight, if any, is not counted
        if current is not None:   # died or stuck in the middle of an input
            if hung:
                hangs.append(save("hang", current))
            else:
                crashes.append((save("crash", current), rc, err.strip().splitlines()[-1:] if err else []))
            tried += 1
            i = current + 1
        elif hung or rc != 0:
            print(f"child failed outside an input (rc {rc}, hung {hung}):\n{err}", file=sys.stderr)
            return 2

    wall = time.monotonic() - t0
    print(f"fuzz: {tried} inputs tried in {wall:.0f} s (seed {args.seed}, {len(names)} seeds: {', '.join(names)})")
    for t, c in outcomes.items():
        print(f"  {t:<7}" + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    if warns:
        print("  warnings (Python warnings raised while decoding): " + ", ".join(f"{k} {v}" for k, v in sorted(warns.items())))
    for path, t, k in unexpected[:20]:
        print(f"  unexpected in {t}: {k} ({path})")
    for path, rc, tail in crashes:
        print(f"  CRASH rc={rc}: {path} {tail}")
    for path in hangs:
        print(f"  HANG: {path}")
    print(f"crashes: {len(crashes)}, hangs: {len(hangs)}, unexpected: {len(unexpected)}")
    return 1 if crashes or hangs or unexpected else 0


def write_corpus(args) -> int:
    """Seeds, --n mutants and a set of hand-made bad inputs, as files for tools/asan.sh."""
    os.makedirs(args.write_corpus, exist_ok=True)
    corpus = seeds()
    names = sorted(corpus)
    files = {f"seed-{k}": v for k, v in corpus.items()}
    jpg = corpus["jpeg-420"]
    sof = jpg.index(b"\xff\xc0")
    files.update({
        "bad-empty": b"", "bad-text": b"not an image\n" * 10, "bad-soi-only": b"\xff\xd8\xff",
        "bad-huge-dims": jpg[:sof + 5] + bytes([0xFF, 0xFF, 0xFF, 0xFF]) + jpg[sof + 9:],
        "bad-zero-dims": jpg[:sof + 5] + bytes(4) + jpg[sof + 9:],
        "bad-png-ihdr": b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + bytes(13) + zlib.crc32(b"IHDR").to_bytes(4, "big"),
    })
    for name in names:
        d = corpus[name]
        for frac in (0.1, 0.5, 0.9, 0.99):
            files[f"trunc{int(frac * 100):02d}-{name}"] = d[:int(len(d) * frac)]
    for i in range(args.n or 0):
        name, data, _ = nth_input(args.seed, i, names, corpus)
        files[f"mut-{i:06d}-{name}"] = data
    for k, v in files.items():
        with open(os.path.join(args.write_corpus, k + ".bin"), "wb") as f:
            f.write(v)
    print(f"wrote {len(files)} files to {args.write_corpus}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=0, help="inputs to try (0: until --seconds)")
    ap.add_argument("--seconds", type=float, default=0, help="time limit (0: until --n)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crash-dir", default=os.path.join(tempfile.gettempdir(), "fastload-fuzz-crashes"))
    ap.add_argument("--hang-s", type=float, default=30.0, help="seconds without progress that count as a hang")
    ap.add_argument("--progress", type=int, default=0, help="print a line every this many inputs")
    ap.add_argument("--write-corpus", metavar="DIR")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.seed, args.start, args.stop)
        return 0
    if args.write_corpus:
        return write_corpus(args)
    if not args.n and not args.seconds:
        ap.error("give --n or --seconds")
    return supervise(args)


if __name__ == "__main__":
    raise SystemExit(main())
