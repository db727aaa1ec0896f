"""The JPEG route without libjpeg-turbo's headers (Pillow, DCT-scaled by draft()) vs the linked route.

    python benchmarks/bench_routes.py --pillow-build DIR [--n 1280] [--small-n 8000] [--repeats 3]

DIR is a checkout built in place with FASTLOAD_NO_LIBJPEG=1 (what a machine
without the headers gets); the linked route is the fastload this script
imports. The two builds cannot share a process, so each epoch runs in a child
process of its build, alternating linked / Pillow so both see the same machine
state; the figures are medians of those epochs. Same task as bench_loader.py:
RandomResizedCrop + flip + normalise into float32 NCHW batches of 64, 2 worker
threads. Targets: Pillow route >= 0.7x the linked one at 224 px, >= 0.6x at 64 px.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
import fastload as fl  # noqa: E402
from common import child_epoch, dataset  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pillow-build", required=True, help="a checkout built with FASTLOAD_NO_LIBJPEG=1")
    ap.add_argument("--n", type=int, default=1280, help="ImageNet-like images")
    ap.add_argument("--small-n", type=int, default=8000, help="64x64 images")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    linked_home = os.path.dirname(os.path.dirname(os.path.abspath(fl.__file__)))
    pillow_home = os.path.abspath(args.pillow_build)
    summary = []
    for title, kind, n, size, target in (("ImageNet-like (~460x400) -> 224 px", "imagenet", args.n, 224, 0.7),
                                         ("64x64 -> 64 px", "small", args.small_n, 64, 0.6)):
        path = dataset(kind, n)
        runs = {"linked": [], "pillow": []}
        names = {}
        for _ in range(args.repeats):
            for route, home in (("linked", linked_home), ("pillow", pillow_home)):
                r = child_epoch(home, path, size)
                rate, names[route] = r["rate"], r["jpeg"]
                runs[route].append(rate)
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"\n== {title}: {n} images, RandomResizedCrop({size}) + flip + normalise, 2 threads")
        for route in ("linked", "pillow"):
            spread = ", ".join(f"{r:.0f}" for r in runs[route])
            print(f"  {route:<7} {med[route]:8.0f} img/s   (runs: {spread})   {names[route][:70]}")
        ratio = med["pillow"] / med["linked"]
        print(f"  ratio: pillow/linked = {ratio:.2f}x (target >= {target}x)")
        summary.append(f"  {size} px: pillow/linked = {ratio:.2f}x (target >= {target}x)")
    print("\n== summary")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
