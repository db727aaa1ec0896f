"""Shared pieces of the benchmarks: datasets, timing, reporting.

Figures are medians over several timed epochs after a warm-up epoch, and every
ratio compares runs made in the same process on the same files, because a
2-core machine is too noisy for absolute times to mean much.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import fastload as fl
from fastload.bench import datasets

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def dataset(kind: str, n: int, root: str | None = None) -> str:
    """The folder of ``fastload bench``'s data set ``kind`` ('imagenet': ~460x400 JPEGs, q90; 'small':
    64x64; 'png'; see fastload.bench.datasets.KINDS) with n images, written on first use and shared
    with the suite (under its cache, or ``root``)."""
    if n < 1:
        raise ValueError(f"a data set needs at least one image, not {n}")
    t = time.perf_counter()
    path = datasets.dataset(kind, n, cache=root)
    if time.perf_counter() - t > 1:   # written now, not found
        print(f"  (generated {n} {kind} images in {time.perf_counter() - t:.0f} s under {path})")
    return path


def epochs_per_second(run_epoch, n_images: int, repeats: int) -> tuple[float, list[float]]:
    """Median images/s over `repeats` timed epochs after one warm-up epoch."""
    run_epoch()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        count = run_epoch()
        rates.append((count or n_images) / (time.perf_counter() - t))
    return statistics.median(rates), rates


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def line(name: str, rate: float, rates: list[float], extra: str = "") -> str:
    spread = ", ".join(f"{r:.0f}" for r in rates)
    return f"  {name:<34} {rate:9.0f} img/s   (runs: {spread}){extra}"


def header(title: str) -> None:
    print(f"\n== {title}")
    print(f"   jpeg: {fl.features()['jpeg_decoder']}; simd: {fl.features()['simd']}; "
          f"cores: {os.cpu_count()}")


_CHILD_EPOCH = r"""
import json, resource, sys, time
import fastload as fl
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
path, size = sys.argv[1], int(sys.argv[2])
loader = fl.Loader(fl.ImageFolder(path), batch_size=64, shuffle=True, seed=0, workers=2,
                   transforms=[fl.RandomResizedCrop(size), fl.RandomHorizontalFlip(), fl.Normalize(MEAN, STD)])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
sum(len(x) for x, _ in loader)                      # warm-up: page cache, threads
t, c = time.perf_counter(), cpu()
n = sum(len(x) for x, _ in loader)
print(json.dumps({"rate": n / (time.perf_counter() - t), "cpu_us": (cpu() - c) / n * 1e6,
                  "jpeg": fl.features()["jpeg_decoder"]}))
"""


def child_epoch(home: str, path: str, size: int) -> dict:
    """One timed epoch (after a warm-up) of the fastload checkout at ``home``, in a child process
    (two builds cannot share one): RandomResizedCrop(size) + flip + normalise, batches of 64, 2
    threads. ``rate`` images/s, ``cpu_us`` CPU microseconds per image (all threads), ``jpeg`` its
    JPEG decoder."""
    env = dict(os.environ, PYTHONPATH=home)
    out = subprocess.run([sys.executable, "-c", _CHILD_EPOCH, path, str(size)], env=env, check=True,
                         capture_output=True, text=True, cwd=os.path.dirname(home) or "/").stdout
    return json.loads(out.strip().splitlines()[-1])
