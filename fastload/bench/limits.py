"""The physical limit of a task: decode-only throughput on the same files with the same thread count.

JPEGs go through fastload's own libjpeg-turbo decoder (``_batch.JpegDecoder``),
one process per thread of the contenders, so the figure is what libjpeg-turbo
itself delivers here. Two limits per JPEG task:

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
"""
from __future__ import annotations

import math
import statistics
import multiprocessing
import threading
import time

__all__ = ["decode_limits"]


_WORK = None   # the decode function the forked processes run


def _share(args) -> list[float]:
    """In a forked process: images/s of this process's share of the files, per pass (warm-up first).

    The passes run on a thread of their own, as a loader's decodes do. On a main thread the
    decode of a small JPEG takes 25 us or 32 us depending on where the heap happened to put
    libjpeg's buffers (the size of the environment is enough to flip it), so the 64 px limit
    moved by 30% between runs; on a new thread it takes the fast time every time.
    """
    t, procs, n, passes = args
    rates, failed = [], []

    def run():
        try:
            for _ in range(passes):
                t0 = time.perf_counter()
                for i in range(t, n, procs):
                    _WORK(i)
                rates.append(len(range(t, n, procs)) / (time.perf_counter() - t0))
        except BaseException as e:   # raised again on the calling thread
            failed.append(e)
    thread = threading.Thread(target=run, name=f"decode-limit-{t}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return rates


def _parallel_rate(work, n: int, procs: int, runs: int) -> tuple[float, list[float]]:
    """Images/s of ``work(i)`` over range(n) split across ``procs`` processes running at once
    (processes, not threads, so the figure has no GIL hand-offs in it: on 64x64 images those
    would cost more than the decode); the median of ``runs`` passes after a warm-up pass."""
    global _WORK
    _WORK = work
    try:
        if procs == 1:
            per_proc = [_share((0, 1, n, runs + 1))]
        else:
            with multiprocessing.get_context("fork").Pool(procs) as pool:
                per_proc = pool.map(_share, [(t, procs, n, runs + 1) for t in range(procs)])
    finally:
        _WORK = None
    rates = [sum(p[k] for p in per_proc) for k in range(1, runs + 1)]
    return statistics.median(rates), rates


def _jpeg_work(blobs, transforms, region: bool):
    from ..image.field import compile_plan
    from .._kernels import _batch
    local = threading.local()
    plan, (oh, ow) = compile_plan(transforms) if region else (None, (0, 0))
    calls = []
    probe = _batch.JpegDecoder()
    for i, data in enumerate(blobs):
        info = probe.info(data)
        if not region:
            calls.append((None, (0, 0), 1))
            continue
        (x0, y0, x1, y1), _ = plan.box(info["width"], info["height"], 0, 0, i)
        r = (max(0, math.floor(x0)), max(0, math.floor(y0)),
             min(info["width"], math.ceil(x1)), min(info["height"], math.ceil(y1)))
        min_size = (math.ceil(ow * (r[2] - r[0]) / (x1 - x0)), math.ceil(oh * (r[3] - r[1]) / (y1 - y0)))
        calls.append((r, min_size, 8))

    def work(i):
        d = getattr(local, "d", None)
        if d is None:
            d = local.d = _batch.JpegDecoder()
        r, min_size, max_denom = calls[i]
        d.decode(blobs[i], region=r, min_size=min_size, max_denom=max_denom)
    return work


def _png_work(blobs, transforms, region: bool):
    from ..image.field import compile_plan
    from .._kernels import _batch
    local = threading.local()
    plan = compile_plan(transforms)[0] if region else None
    probe = _batch.PngDecoder()
    regions = []
    for i, data in enumerate(blobs):
        if not region:
            regions.append(None)
            continue
        info = probe.info(data, exif=False)
        (x0, y0, x1, y1), _ = plan.box(info["width"], info["height"], 0, 0, i)
        regions.append((max(0, math.floor(x0)), max(0, math.floor(y0)),
                        min(info["width"], math.ceil(x1)), min(info["height"], math.ceil(y1))))

    def work(i):
        d = getattr(local, "d", None)
        if d is None:
            d = local.d = _batch.PngDecoder()
        d.decode(blobs[i], region=regions[i], exif=False)
    return work


def _pillow_work(blobs):
    import io

    from PIL import Image

    def work(i):
        with Image.open(io.BytesIO(blobs[i])) as im:
            im.load()
    return work


def decode_limits(paths: list[str], transforms, threads: int, runs: int = 3) -> dict:
    """{"full": {...}, "region": {...}} for JPEGs ({"full"} for other formats; PNGs with libspng linked
    add {"pillow"}), each with images/s (median and runs), the decoder used and the thread count."""
    from PIL import features

    from .._kernels import _batch
    blobs = []
    for p in paths:
        with open(p, "rb") as f:
            blobs.append(f.read())
    jpeg = all(b[:2] == b"\xff\xd8" for b in blobs)
    png = all(b[:8] == b"\x89PNG\r\n\x1a\n" for b in blobs)
    pillow = f"Pillow {features.version('pil')} ({'libjpeg-turbo' if jpeg else 'zlib'})"
    if jpeg and _batch.HAVE_LIBJPEG_TURBO:
        decoder = f"{_batch.jpeg_version()} (fastload's decoder)"
        kinds = {"full": (_jpeg_work(blobs, transforms, False), decoder),
                 "region": (_jpeg_work(blobs, transforms, True), decoder)}
    elif png and _batch.HAVE_SPNG:
        decoder = f"{_batch.png_version()} (fastload's decoder)"
        kinds = {"full": (_png_work(blobs, transforms, False), decoder),
                 "region": (_png_work(blobs, transforms, True), decoder),
                 "pillow": (_pillow_work(blobs), pillow)}
    else:
        kinds = {"full": (_pillow_work(blobs), pillow)}
    out = {}
    for kind, (work, decoder) in kinds.items():
        rate, rates = _parallel_rate(work, len(blobs), threads, runs)
        out[kind] = {"rate": rate, "runs": rates, "threads": threads, "decoder": decoder, "images": len(blobs)}
    return out
