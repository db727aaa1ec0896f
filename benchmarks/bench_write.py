"""The final write of a sample into its batch slot (normalise, convert, layout, flip) on every
SIMD path this CPU has, and, given a build without its vector paths, the loader end to end.

    python benchmarks/bench_write.py [--repeats 7] [--base DIR] [--n 1280] [--small-n 8000] [--epochs 3]

The write alone: one resampled RGB sample (224 x 224 and 64 x 64) written by
``_batch.write_sample`` with the tables the Loader builds: Normalize(ImageNet)
into float32 and float16, raw uint8; NCHW and NHWC; every other call mirrored
(RandomHorizontalFlip). Each figure is the median over --repeats timings of a
loop of calls, the paths taking turns; the ratio is against the portable loops in the
same process.

End to end (--base DIR: a checkout built in place before the vector write, e.g.
``git worktree add DIR main`` and ``python setup.py build_ext --inplace`` there):
RandomResizedCrop + flip + normalise into float32 NCHW batches of 64 with 2
worker threads, as bench_loader.py, at 224 px and 64 px. The two builds cannot
share a process, so each epoch runs in a child process of its build,
alternating base / this build; the figures are medians of those epochs, the median
of the ratios of back-to-back pairs, and the CPU time per image (user + system, all
threads), which other processes on a shared machine disturb far less than wall time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import fastload as fl  # noqa: E402
from common import MEAN, STD, child_epoch, dataset  # noqa: E402
from fastload._kernels import _batch  # noqa: E402
from fastload.ops.normalize import make_lut  # noqa: E402
from fastload.synthetic import photo_like  # noqa: E402

CASES = (("float32", "NCHW"), ("float32", "NHWC"), ("float16", "NCHW"), ("uint8", "NCHW"))


def write_times(size: int, dtype: str, layout: str, repeats: int) -> dict[str, tuple[float, str]]:
    """Median microseconds per write, and the route write_path reports, for every SIMD path."""
    img = photo_like(size, size, 3, seed=size)
    lut, perm = make_lut(dtype=dtype) if dtype == "uint8" else make_lut(mean=MEAN, std=STD, dtype=dtype)
    lay = _batch.NCHW if layout == "NCHW" else _batch.NHWC
    out = np.empty((3, size, size) if layout == "NCHW" else (size, size, 3), lut.dtype)
    calls = max(20, 2_000_000 // (size * size))
    default = _batch.simd()
    times = {path: [] for path in _batch.simd_paths()}
    routes = {}
    try:
        for _ in range(repeats):           # the paths take turns, so all see the same machine load
            for path in times:
                _batch.set_simd(path)
                routes[path] = _batch.write_path(img, out, 0, True, False, perm, lut, lay)
                t = time.perf_counter()
                for i in range(calls):
                    _batch.write_sample(img, out, 0, i & 1, False, perm, lut, lay)
                times[path].append((time.perf_counter() - t) / calls)
    finally:
        _batch.set_simd(default)
    result = {path: (statistics.median(t) * 1e6, routes[path]) for path, t in times.items()}
    return result


def end_to_end(base: str, n: int, small_n: int, epochs: int) -> None:
    this_home = os.path.dirname(os.path.dirname(os.path.abspath(fl.__file__)))
    base_home = os.path.abspath(base)
    for title, kind, count, size in (("ImageNet-like (~460x400) -> 224 px", "imagenet", n, 224),
                                     ("64x64 -> 64 px", "small", small_n, 64)):
        path = dataset(kind, count)
        runs = {"base": [], "this": []}
        cpu = {"base": [], "this": []}
        for _ in range(epochs):
            for name, home in (("base", base_home), ("this", this_home)):
                r = child_epoch(home, path, size)
                rate, us = r["rate"], r["cpu_us"]
                runs[name].append(rate)
                cpu[name].append(us)
        med = {k: statistics.median(v) for k, v in runs.items()}
        cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"\n== loader, {title}: {count} images, RandomResizedCrop({size}) + flip + normalise, "
              f"float32 NCHW, 2 threads")
        for name in ("base", "this"):
            spread = ", ".join(f"{r:.0f}" for r in runs[name])
            print(f"  {name:<5} {med[name]:8.0f} img/s   {cpu_med[name]:7.1f} CPU us/img   (runs: {spread})")
        pairs = [t / b for t, b in zip(runs["this"], runs["base"])]
        print(f"  img/s this/base = {med['this'] / med['base']:.3f}x (medians), "
              f"{statistics.median(pairs):.3f}x (median of back-to-back pairs); "
              f"CPU time per image this/base = {cpu_med['this'] / cpu_med['base']:.3f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="timings per write figure")
    ap.add_argument("--base", help="a checkout built in place without the vector write (end-to-end run)")
    ap.add_argument("--n", type=int, default=1280, help="ImageNet-like images (end to end)")
    ap.add_argument("--small-n", type=int, default=8000, help="64x64 images (end to end)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per build (end to end)")
    args = ap.parse_args(argv)
    f = fl.features()
    print(f"== the write alone: simd {f['simd']} (paths {', '.join(f['simd_paths'])}); "
          f"vector kernels: {', '.join(f['simd_kernels']) or 'none'}; cores: {os.cpu_count()}")
    for size in (224, 64):
        print(f"\n  {size} x {size} RGB, every other write mirrored; us per write (x portable) [route]")
        for dtype, layout in CASES:
            res = write_times(size, dtype, layout, args.repeats)
            base = res["portable"][0]
            cells = "   ".join(f"{p} {t:6.2f} ({base / t:4.2f}x) [{r}]" for p, (t, r) in res.items())
            print(f"  {dtype:>7} {layout}:  {cells}")
    if args.base:
        end_to_end(args.base, args.n, args.small_n, args.epochs)


if __name__ == "__main__":
    main()
