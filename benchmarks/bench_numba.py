"""A user augmentation as a Numba kernel on the worker threads vs the same one as a Python stage.

    python benchmarks/bench_numba.py [--images 1000] [--batch 64] [--runs 3] [--workers 2]

The augmentation is the generator tutorial's ``add_noise`` (Gaussian noise on
every float). Contenders, on the same 64x64 JPEGs and transforms
(RandomResizedCrop-56, flip, normalise):

* ``no noise``: the loader alone, the ceiling;
* ``numba kernel``: ``add_noise`` compiled by Numba, run by the image field on
  the worker threads right after the fill, GIL released;
* ``python stage``: the loader, then NumPy noise on each batch in the
  consumer's thread (``x + rng.standard_normal(x.shape)``), as the tutorial does.

Prints median images/s and the ratios numba / python and numba / no-noise.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import fastload as fl  # noqa: E402
from common import MEAN, STD, dataset, epochs_per_second, header, line  # noqa: E402
from fastload.ops.numba_ops import KernelField, normal  # noqa: E402


@fl.numba_transform
def add_noise(img, rng):
    flat = img.reshape(-1)
    for i in range(flat.size):
        flat[i] += np.float32(normal(rng))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    folder = fl.ImageFolder(dataset("small", args.images))
    records = fl.ListSource([{"image": p, "label": int(y)} for p, y in folder])
    transforms = [fl.RandomResizedCrop(56), fl.RandomHorizontalFlip(), fl.Normalize(MEAN, STD)]
    header(f"user augmentation (Gaussian noise), {len(records)} 64x64 JPEGs, batch {args.batch}, "
           f"{args.workers} workers")

    def loader(image):
        return fl.Loader(records, batch_size=args.batch, shuffle=True, workers=args.workers,
                         fields={"image": image, "label": "index"}, as_tuple=True)

    plain, numba = loader(transforms), loader(KernelField(transforms, [add_noise]))
    rng = np.random.default_rng(0)

    def run(it, stage=None):
        def epoch():
            n = 0
            for x, y in it:
                if stage is not None:
                    x = stage(x)
                n += len(y)
            return n
        return epoch

    def python_noise(x):
        return x + rng.standard_normal(x.shape, dtype=np.float32)

    results = {}
    for name, fn in (("no noise", run(plain)), ("numba kernel", run(numba)),
                     ("python stage", run(plain, python_noise))):
        rate, rates = epochs_per_second(fn, len(records), args.runs)
        results[name] = rate
        print(line(name, rate, rates))
    print(f"  numba kernel / python stage: {results['numba kernel'] / results['python stage']:.2f}x; "
          f"numba kernel / no noise: {results['numba kernel'] / results['no noise']:.2f}x")


if __name__ == "__main__":
    main()
