"""The physical limit of a task: decode-only throughput on the same files with the same thread count.

JPEGs go through fastload's own libjpeg-turbo decoder (``_decode.JpegDecoder``,
one per thread, GIL released), so the figure is what libjpeg-turbo itself
delivers here. Two limits per JPEG task:

* ``full``: every image decoded whole at full scale;
* ``region``: only the rectangle the task's transform crops (the same boxes the
  loader draws for seed 0, epoch 0), at the DCT scale the loader may use
  (1/2, 1/4, 1/8 while the crop stays at least the output size): the decode
  work the loader cannot avoid.

PNGs go through Pillow's decoder (zlib; it releases the GIL too): ``full`` only.
The files are read into memory first: this is decode alone, not file reading.
"""
from __future__ import annotations

import math
import statistics
import threading
import time

__all__ = ["decode_limits"]


def _threaded_rate(work, n: int, threads: int, runs: int) -> tuple[float, list[float]]:
    """Images/s of ``work(i)`` over range(n) split across ``threads``; median of ``runs`` after a warm-up."""
    def one_pass():
        barrier = threading.Barrier(threads + 1)

        def loop(t):
            barrier.wait()
            for i in range(t, n, threads):
                work(i)
        pool = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        barrier.wait()
        t0 = time.perf_counter()
        for th in pool:
            th.join()
        return n / (time.perf_counter() - t0)
    one_pass()
    rates = [one_pass() for _ in range(runs)]
    return statistics.median(rates), rates


def _jpeg_work(blobs, transforms, region: bool):
    from ..image.field import compile_plan
    from .._kernels import _decode
    local = threading.local()
    plan, (oh, ow) = compile_plan(transforms) if region else (None, (0, 0))
    calls = []
    probe = _decode.JpegDecoder()
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
            d = local.d = _decode.JpegDecoder()
        r, min_size, max_denom = calls[i]
        d.decode(blobs[i], region=r, min_size=min_size, max_denom=max_denom)
    return work


def _pillow_work(blobs):
    import io

    from PIL import Image

    def work(i):
        with Image.open(io.BytesIO(blobs[i])) as im:
            im.load()
    return work


def decode_limits(paths: list[str], transforms, threads: int, runs: int = 3) -> dict:
    """{"full": {...}, "region": {...}} for JPEGs ({"full"} for other formats), each with images/s
    (median and runs), the decoder used and the thread count."""
    from .._kernels import _decode
    blobs = []
    for p in paths:
        with open(p, "rb") as f:
            blobs.append(f.read())
    jpeg = all(b[:2] == b"\xff\xd8" for b in blobs)
    out = {}
    if jpeg and _decode.HAVE_LIBJPEG_TURBO:
        decoder = f"{_decode.version()} (fastload's decoder)"
        kinds = {"full": _jpeg_work(blobs, transforms, False), "region": _jpeg_work(blobs, transforms, True)}
    else:
        from PIL import features
        decoder = f"Pillow {features.version('pil')} ({'libjpeg-turbo' if jpeg else 'zlib'})"
        kinds = {"full": _pillow_work(blobs)}
    for kind, work in kinds.items():
        rate, rates = _threaded_rate(work, len(blobs), threads, runs)
        out[kind] = {"rate": rate, "runs": rates, "threads": threads, "decoder": decoder, "images": len(blobs)}
    return out
