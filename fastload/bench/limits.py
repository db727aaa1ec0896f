"""The physical limit of a task: decode-only throughput on the same files with the same thread count.

JPEGs go through fastload's own libjpeg-turbo decoder (``_batch.JpegDecoder``),
in one new process per thread of the contenders, each decoding on a thread of its
own (see ``_share``), so the figure is what libjpeg-turbo itself delivers here. Two limits per JPEG task:

* ``full``: every image decoded whole at full scale;
* ``region``: only the rectangle the task's transform crops (the same boxes the
  loader draws for seed 0, epoch 0), at the DCT scale the loader may use
  (1/2, 1/4, 1/8 while the crop stays at least the output size): the decode
  work the loader cannot avoid.

PNGs go through fastload's own libspng decoder (``_batch.PngDecoder``) where it
is linked, with the same two limits (``region``: the image data inflated as the
loader inflates it, whole with libdeflate where linked, else down to the crop's
last row; the crop's rows unfiltered and converted), and a third,
``pillow``: Pillow's own decode of the whole file, what a Pillow-based loader
cannot beat. Without libspng, PNGs go through Pillow: ``full`` only.
The files are read into memory first: this is decode alone, not file reading.

Each file is decoded once beforehand by the route the loader takes for it: a file
fastload's decoder hands to Pillow (a CMYK JPEG, a PNG libspng rejects) is timed
through Pillow, as the loader reads it, and a file neither reads (corrupt,
unreadable, a dangling link) is left out of the limit, counted and named in its
figures (``unreadable``, ``first_unreadable``); the suite leaves the same files
(:func:`unreadable_files`) out of every contender, which would fail on them.
"""
from __future__ import annotations

import functools
import io
import math
import os
import pickle
import subprocess
import sys
import threading
import time

__all__ = ["decode_limits", "unreadable_files"]


def _share(args) -> list[float]:
    """In a new process: images/s of this process's share of the files, per pass (warm-up first).

    A small JPEG decodes in 25 us or in 32 us depending on where the heap has put libjpeg's
    buffers, and that is settled by the thread's history: on a main thread the size of the
    environment is enough to flip it, and a thread of a forked process takes over an arena
    with its parent's history (the 64 px limit read 52k to 77k img/s between runs). A new
    process decoding on a thread of its own starts from a fresh arena, as a loader's worker
    does, and takes the fast time every time.
    """
    build, build_args, t, procs, passes = args
    work, n = build(*build_args)
    rates, failed = [], []

    def run():
        try:
            for _ in range(passes):
                t0 = time.perf_counter()
                for i in range(t, n, procs):
                    work(i)
                rates.append(len(range(t, n, procs)) / (time.perf_counter() - t0))
        except BaseException as e:   # raised again on the calling thread
            failed.append(e)
    thread = threading.Thread(target=run, name=f"decode-limit-{t}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return rates


# A decode-limit process imports what its parent imports: its sys.path is the parent's, set
# before anything is imported (-I: neither the working directory nor PYTHONPATH comes first).
_BOOT = "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); " \
        "from fastload.bench.limits import _child; _child()"


def _child() -> None:
    """A decode-limit process (see :func:`_parallel_rate`): the job from stdin, the pickled rates
    (or the exception) to stdout."""
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)   # whatever else is printed goes to stderr, not into the answer
    try:
        result = (True, _share(pickle.load(sys.stdin.buffer)))
    except BaseException as e:
        result = (False, e)
    try:
        data = pickle.dumps(result)
    except Exception:   # an exception that does not pickle: its text
        data = pickle.dumps((False, RuntimeError(repr(result[1]))))
    answer.write(data)
    answer.close()


def _parallel_rate(build, build_args: tuple, procs: int, runs: int) -> tuple[float, list[float]]:
    """Images/s of ``work(i)`` over range(n), with ``work, n = build(*build_args)`` made in each
    of ``procs`` new processes running at once (processes, not threads, so the figure has no GIL
    hand-offs in it: on 64x64 images those would cost more than the decode); the best of
    ``runs`` passes after a warm-up pass, since other work on the machine (a contender's
    processes still exiting) can only slow a pass down. The processes are started with ``-c``
    (see ``_BOOT``), not through multiprocessing's spawn, which would run the caller's main
    script again in each."""
    children = [subprocess.Popen([sys.executable, "-I", "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                for _ in range(procs)]
    answers = []
    try:
        for t, child in enumerate(children):
            try:
                pickle.dump(sys.path, child.stdin)
                pickle.dump((build, build_args, t, procs, runs + 1), child.stdin)
                child.stdin.close()
            except BrokenPipeError:   # it has died already: its status is reported below
                pass
        for t, child in enumerate(children):
            data = child.stdout.read()
            if child.wait() != 0 or not data:
                raise RuntimeError(f"decode-limit process {t} of {procs} exited with status {child.returncode}")
            answers.append(pickle.loads(data))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
    for ok, value in answers:
        if not ok:
            raise value
    per_proc = [value for _, value in answers]
    rates = [sum(p[k] for p in per_proc) for k in range(1, runs + 1)]
    return max(rates), rates


def _read(paths: list[str]) -> list[bytes]:
    blobs = []
    for p in paths:
        with open(p, "rb") as f:
            blobs.append(f.read())
    return blobs


def _jpeg_work(paths, transforms, region: bool, through_pillow=()):
    from ..image.decode import pillow_decode
    from ..image.field import ImageField
    from .._kernels import _batch
    blobs = _read(paths)
    local = threading.local()
    field = ImageField(transforms) if region else None
    plan, (oh, ow) = (field.plan, field.size) if region else (None, (0, 0))
    pillow = set(through_pillow)
    calls = []
    probe = _batch.JpegDecoder()
    for i, data in enumerate(blobs):
        if paths[i] in pillow:   # as the loader: the crop's DCT scale through Image.draft
            calls.append(functools.partial(field.draft_size, seed=0, epoch=0, index=i) if region else None)
            continue
        if not region:
            calls.append((None, (0, 0), 1))
            continue
        info = probe.info(data)
        turned = _turned(info)
        (x0, y0, x1, y1), _ = plan.box(info["width"], info["height"], 0, 0, i, turned)
        r = (max(0, math.floor(x0)), max(0, math.floor(y0)),
             min(info["width"], math.ceil(x1)), min(info["height"], math.ceil(y1)))
        sw, sh = (oh, ow) if turned >= 5 else (ow, oh)   # the output's size in stored orientation
        min_size = (math.ceil(sw * (r[2] - r[0]) / (x1 - x0)), math.ceil(sh * (r[3] - r[1]) / (y1 - y0)))
        calls.append((r, min_size, 8))

    def work(i):
        if paths[i] in pillow:
            pillow_decode(blobs[i], paths[i], draft_size=calls[i])
            return
        d = getattr(local, "d", None)
        if d is None:
            d = local.d = _batch.JpegDecoder()
        r, min_size, max_denom = calls[i]
        d.decode(blobs[i], region=r, min_size=min_size, max_denom=max_denom, exif=False)   # turned as written
    return work, len(blobs)


def _pillow_load(data):
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        im.load()


def _png_work(paths, transforms, region: bool, through_pillow=()):
    from ..image.field import compile_plan
    from .._kernels import _batch
    blobs = _read(paths)
    local = threading.local()
    plan = compile_plan(transforms)[0] if region else None
    pillow = set(through_pillow)
    probe = _batch.PngDecoder()
    regions = []
    for i, data in enumerate(blobs):
        if not region or paths[i] in pillow:
            regions.append(None)
            continue
        info = probe.info(data)   # a turn only Pillow reads is Pillow's file, passed over above
        (x0, y0, x1, y1), _ = plan.box(info["width"], info["height"], 0, 0, i, _turned(info))
        regions.append((max(0, math.floor(x0)), max(0, math.floor(y0)),
                        min(info["width"], math.ceil(x1)), min(info["height"], math.ceil(y1))))

    def work(i):
        if paths[i] in pillow:
            _pillow_load(blobs[i])
            return
        d = getattr(local, "d", None)
        if d is None:
            d = local.d = _batch.PngDecoder()
        d.decode(blobs[i], region=regions[i], exif=False)
    return work, len(blobs)


def _pillow_work(paths):
    blobs = _read(paths)

    def work(i):
        _pillow_load(blobs[i])
    return work, len(blobs)


def _routes(paths: tuple, fmt: str | None) -> tuple[tuple, tuple]:
    """:func:`_decoded_routes` of ``paths``, asked again only of files changed since (size, time)."""
    from ._worker import file_stamp
    return _decoded_routes(tuple((p, file_stamp(p)) for p in paths), fmt)


@functools.lru_cache(maxsize=4)   # the scaling curve, and the files left out of the contenders, ask again
def _decoded_routes(stamped: tuple, fmt: str | None) -> tuple[tuple, tuple]:
    """The files of ``stamped`` ((path, stat stamp) pairs) the loader's decoder hands to Pillow, and
    (path, reason) of those neither reads: one decode of each file, by the route fastload's loader
    takes for it (see ``fastload.image.decode.read_image``); ``fmt`` "jpeg" or "png" for fastload's
    own decoder, None for Pillow's alone."""
    from .._kernels import _batch
    from ..errors import DecodeError
    native = {"jpeg": (_batch.JpegDecoder, (_batch.Unsupported,)),
              "png": (_batch.PngDecoder, (_batch.Unsupported, DecodeError))}.get(fmt)
    decoder = native and native[0]()
    pillow, unreadable = [], []
    for path, _ in stamped:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            unreadable.append((path, e.strerror or str(e)))
            continue
        try:
            if decoder is not None:
                try:
                    try:
                        turned = _turned(decoder.info(data))
                    except Exception:   # the decode below says what is wrong
                        turned = 0
                    decoder.decode(data, exif=turned == 0)
                    continue
                except native[1]:
                    pass   # Pillow's to decode, as in the loader
            _pillow_load(data)
            if decoder is not None:
                pillow.append(path)
        except Exception as e:
            unreadable.append((path, str(e) or type(e).__name__))
    return tuple(pillow), tuple(unreadable)


def _turned(info: dict) -> int:
    """The EXIF orientation (2 to 8) the loader's kernels apply to the stored pixels of a file with
    the decoder's ``info``, as they write it; 0: none, or one only Pillow reads (the loader's
    Pillow route turns those)."""
    orientation = info["orientation"]
    return orientation if 2 <= orientation <= 8 else 0


def _survey(paths: list[str]):
    """What :func:`decode_limits` times: (the files of the format most of ``paths`` are in, or all of
    them, readable ones only; that format ("jpeg", "png" or None); fastload's decoder of it ("jpeg",
    "png", or None for Pillow's); those of the files the loader hands to Pillow; (path, reason) of
    the unreadable ones, in listing order; a note on what was left out, for the decoder's
    description)."""
    from .._kernels import _batch
    listed, heads, unopened = paths, [], []
    for p in paths:
        try:
            with open(p, "rb") as f:
                heads.append(f.read(8))
        except OSError as e:   # a dangling link, a file without read permission
            unopened.append((p, e.strerror or str(e)))
            heads.append(None)
    paths = [p for p, b in zip(paths, heads) if b is not None]
    heads = [b for b in heads if b is not None]
    jpegs = [p for p, b in zip(paths, heads) if b[:2] == b"\xff\xd8"]
    pngs = [p for p, b in zip(paths, heads) if b == b"\x89PNG\r\n\x1a\n"]
    # A folder mostly of one format is measured on those files: Pillow decoding the whole mixed set
    # would be a limit fastload's own decoders beat, not one they approach.
    jpeg, png = len(jpegs) * 2 > len(paths), len(pngs) * 2 > len(paths)
    share = ""
    if jpeg or png:
        subset = jpegs if jpeg else pngs
        if len(subset) < len(paths):
            share = f"; its {len(subset)} {'JPEG' if jpeg else 'PNG'}s of {len(paths)} files"
        paths = subset
    fmt = "jpeg" if jpeg and _batch.HAVE_LIBJPEG_TURBO else "png" if png and _batch.HAVE_SPNG else None
    through_pillow, unreadable = _routes(tuple(paths), fmt)
    order = {p: i for i, p in enumerate(listed)}
    unreadable = sorted(unopened + list(unreadable), key=lambda u: order[u[0]])   # the first as listed
    left_out = {p for p, _ in unreadable}
    paths = [p for p in paths if p not in left_out]
    if through_pillow:
        share += f"; {len(through_pillow)} file(s) through Pillow, as the loader reads them"
    if unreadable:
        share += f"; {len(unreadable)} unreadable file(s) left out"
    return paths, "jpeg" if jpeg else "png" if png else None, fmt, through_pillow, unreadable, share


def unreadable_files(paths: list[str]) -> list[tuple[str, str]]:
    """(path, reason) of every file of ``paths`` that neither fastload's decoders nor Pillow read, in
    listing order: those :func:`decode_limits` leaves out (its decodes are reused), and those of the
    formats it does not time, decoded by Pillow."""
    timed, _, _, _, unreadable, _ = _survey(paths)
    seen = set(timed) | {p for p, _ in unreadable}
    others = tuple(p for p in paths if p not in seen)
    bad = list(unreadable) + (list(_routes(others, None)[1]) if others else [])
    order = {p: i for i, p in enumerate(paths)}
    return sorted(bad, key=lambda u: order[u[0]])


def decode_limits(paths: list[str], transforms, threads: int, runs: int = 3) -> dict:
    """{"full": {...}, "region": {...}} for JPEGs ({"full"} for other formats; PNGs with libspng linked
    add {"pillow"}), each with images/s (the best pass, and every pass), the decoder used, the thread
    count, the images timed, how many of them went through Pillow (``pillow_images``), and the
    files left out as unreadable (``unreadable``, the first with its reason in ``first_unreadable``).
    {} when no file can be read."""
    from PIL import features

    from .._kernels import _batch
    paths, majority, fmt, through_pillow, unreadable, share = _survey(paths)
    if not paths:
        return {}
    jpeg, png = majority == "jpeg", majority == "png"
    codec = ("libjpeg-turbo" if features.check_feature("libjpeg_turbo") else "libjpeg") if jpeg else \
        "zlib" if png else "its own decoders"   # a folder of no one format: each file by its plugin
    pillow = f"Pillow {features.version('pil')} ({codec}){share}"
    if fmt == "jpeg":
        decoder = f"{_batch.jpeg_version()} (fastload's decoder){share}"
        kinds = {"full": (_jpeg_work, (paths, transforms, False, through_pillow), decoder),
                 "region": (_jpeg_work, (paths, transforms, True, through_pillow), decoder)}
    elif fmt == "png":
        decoder = f"{_batch.png_version()} (fastload's decoder){share}"
        kinds = {"full": (_png_work, (paths, transforms, False, through_pillow), decoder),
                 "region": (_png_work, (paths, transforms, True, through_pillow), decoder),
                 "pillow": (_pillow_work, (paths,), pillow)}
    else:
        kinds = {"full": (_pillow_work, (paths,), pillow)}
    out = {}
    for kind, (build, args, decoder) in kinds.items():
        rate, rates = _parallel_rate(build, args, threads, runs)
        out[kind] = {"rate": rate, "runs": rates, "threads": threads, "decoder": decoder, "images": len(paths),
                     "pillow_images": len(through_pillow) if kind != "pillow" else len(paths),
                     "unreadable": len(unreadable)}
        if unreadable:
            out[kind]["first_unreadable"] = {"path": unreadable[0][0], "reason": unreadable[0][1]}
    return out
