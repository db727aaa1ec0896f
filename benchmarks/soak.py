"""Soak: RSS and thread count over many epochs must stay flat.

    python benchmarks/soak.py [--epochs 20] [--n 512]

Runs a shuffling, augmenting loader for --epochs epochs (breaking out of
every third epoch early, and running a second loader beside the first on odd
epochs) and prints, per epoch, the process's resident memory and live thread
count; the last line compares the last epoch with the second.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
import fastload as fl  # noqa: E402
from common import MEAN, STD, dataset  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--n", type=int, default=512)
    args = ap.parse_args(argv)
    src = fl.ImageFolder(dataset("imagenet", args.n))
    tr = [fl.RandomResizedCrop(224), fl.RandomHorizontalFlip(), fl.ColorJitter(0.2, 0.2, 0.2),
          fl.Normalize(MEAN, STD)]
    a = fl.Loader(src, batch_size=64, shuffle=True, workers=2, transforms=tr)
    b = fl.Loader(src, batch_size=32, shuffle=True, workers=2, transforms=tr[:-1], dtype="uint8")
    history = []
    for epoch in range(args.epochs):
        for i, _ in enumerate(a):
            if epoch % 3 == 2 and i == 2:
                break   # early exit must release its threads
        if epoch % 2:
            for _ in b:
                pass
        history.append((rss_mb(), threading.active_count()))
        print(f"epoch {epoch:3d}: RSS {history[-1][0]:7.1f} MB, threads {history[-1][1]}")
    (r1, t1), (rn, tn) = history[1], history[-1]
    print(f"soak: RSS epoch 1 -> {args.epochs - 1}: {r1:.1f} -> {rn:.1f} MB ({rn - r1:+.1f} MB); "
          f"threads {t1} -> {tn}")
    return 0 if tn <= t1 and rn - r1 < 50 else 1


if __name__ == "__main__":
    raise SystemExit(main())
