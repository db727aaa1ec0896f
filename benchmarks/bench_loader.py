"""fastload vs the tutorial's naive generator vs torch's DataLoader, on the same files, in one run.

    python benchmarks/bench_loader.py [--n 1280] [--small-n 8000] [--repeats 5]

Task: RandomResizedCrop + horizontal flip + normalise into float32 NCHW
batches of 64; 224 px on an ImageNet-like set (JPEG q90, ~460x400), 64 px on a
64x64 set. fastload and torch both get 2 workers (threads vs processes).
fastload also runs with ``copy=True`` (batches the caller owns: a new buffer each).
Targets: >= 2.3x torch on the ImageNet-like set, >= 5x on the 64x64 set.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import fastload as fl  # noqa: E402
from common import MEAN, STD, dataset, epochs_per_second, header, line, peak_rss_mb  # noqa: E402

from fastload.bench._worker import pil_sample  # noqa: E402   the suite's per-image PIL reference work

BATCH = 64


def naive_epoch(source, size):
    """The classic generator: per-image PIL work, list append, np.stack, NumPy normalise."""
    rng = random.Random(0)
    mean = np.array(MEAN, np.float32) * 255
    std = np.array(STD, np.float32) * 255
    order = list(range(len(source)))
    rng.shuffle(order)
    count = 0
    for b in range(0, len(order), BATCH):
        images, labels = [], []
        for i in order[b:b + BATCH]:
            path, label = source[i]
            images.append(pil_sample(path, "rrc", size, rng))
            labels.append(label)
        x = ((np.stack(images).astype(np.float32) - mean) / std).transpose(0, 3, 1, 2)
        y = np.array(labels)
        count += min(len(x), len(y))
    return count


def counting_epoch(loader):
    """An epoch function for ``epochs_per_second``: one pass over ``loader``'s (x, y) batches,
    returning the number of samples."""
    def epoch():
        n = 0
        for x, y in loader:
            n += len(x)
        return n
    return epoch


def make_torch_loader(source, size):
    import torch

    from fastload.bench._worker import TorchImages
    return torch.utils.data.DataLoader(TorchImages(list(source), "rrc", size), batch_size=BATCH, shuffle=True,
                                       num_workers=2, persistent_workers=True)


def make_fastload_loader(source, size, copy=False):
    return fl.Loader(source, batch_size=BATCH, shuffle=True, seed=0, workers=2, copy=copy,
                     transforms=[fl.RandomResizedCrop(size), fl.RandomHorizontalFlip(),
                                 fl.Normalize(MEAN, STD)], dtype="float32", layout="NCHW")


def first_batch_seconds(make, source, size):
    """From constructing a loader to holding its first batch (median of 3)."""
    times = []
    for _ in range(3):
        t = time.perf_counter()
        it = iter(make(source, size))
        next(it)
        times.append(time.perf_counter() - t)
        del it
    return statistics.median(times)


def compare(title, path, size, repeats, naive_limit):
    source = fl.ImageFolder(path)
    header(f"{title}: {len(source)} images, RandomResizedCrop({size}) + flip + normalise -> "
           f"float32 NCHW, batch {BATCH}")
    rate_fl, runs_fl = epochs_per_second(counting_epoch(make_fastload_loader(source, size)), len(source), repeats)
    print(line("fastload (2 threads)", rate_fl, runs_fl))
    rate_cp, runs_cp = epochs_per_second(counting_epoch(make_fastload_loader(source, size, copy=True)), len(source),
                                         repeats)
    print(line("fastload, copy=True (arrays you own)", rate_cp, runs_cp))
    sub = fl.Subset(source, range(min(len(source), naive_limit)))
    rate_nv, runs_nv = epochs_per_second(lambda: naive_epoch(sub, size), len(sub), max(3, repeats // 2))
    print(line("naive generator (PIL + np.stack)", rate_nv, runs_nv))
    try:
        import torch  # noqa: F401
    except ImportError:
        print("  torch DataLoader: skipped (torch not installed: pip install 'fastload[torch]')")
        rate_t = None
    else:
        torch.set_num_threads(1)
        rate_t, runs_t = epochs_per_second(counting_epoch(make_torch_loader(source, size)), len(source), repeats)
        print(line("torch DataLoader (2 processes)", rate_t, runs_t))
        print(f"  time to first batch: fastload {first_batch_seconds(make_fastload_loader, source, size):.3f} s, "
              f"torch {first_batch_seconds(make_torch_loader, source, size):.3f} s")
    ratios = f"  ratios: fastload/naive = {rate_fl / rate_nv:.2f}x, copy=True/default = {rate_cp / rate_fl:.2f}x"
    if rate_t:
        ratios += f", fastload/torch = {rate_fl / rate_t:.2f}x, torch/naive = {rate_t / rate_nv:.2f}x"
    print(ratios)
    return rate_fl, rate_t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1280, help="ImageNet-like images")
    ap.add_argument("--small-n", type=int, default=8000, help="64x64 images")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    big = dataset("imagenet", args.n)
    small = dataset("small", args.small_n)
    f1, t1 = compare("ImageNet-like (JPEG q90, ~460x400)", big, 224, args.repeats, naive_limit=320)
    f2, t2 = compare("64x64 JPEGs", small, 64, args.repeats, naive_limit=2000)
    print("\n== summary")
    if t1:
        print(f"  224 px: fastload/torch = {f1 / t1:.2f}x (target >= 2.3x)")
        print(f"  64 px:  fastload/torch = {f2 / t2:.2f}x (target >= 5x)")
    print(f"  peak RSS of this process: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
