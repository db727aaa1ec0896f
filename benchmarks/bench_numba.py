"""User augmentations as Numba kernels on the worker threads vs the same ones as Python stages.

    python benchmarks/bench_numba.py [--images 1000] [--batch 64] [--runs 3] [--workers 2]

Two augmentations, on the same 64x64 JPEGs and transforms (RandomResizedCrop-56,
flip, normalise):

* Gaussian noise on every float, the generator tutorial's ``add_noise``. As a
  Python stage it is one vectorised NumPy call per batch
  (``x + rng.standard_normal(x.shape)``), NumPy at its best;
* cutout, a random 16x16 square zeroed in each sample. As a Python stage it is
  a loop over the batch's samples, as such code is usually written.

Each runs as a Numba kernel (on the worker threads right after the fill, GIL
released) and as a Python stage on the consumer's thread after the loader;
``no augmentation`` is the loader alone, the ceiling. Prints median images/s
and the ratios numba / python for each augmentation.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import fastload as fl  # noqa: E402
from common import MEAN, STD, dataset, epochs_per_second, header, line  # noqa: E402
from fastload.ops.numba_ops import KernelField, integers, normal  # noqa: E402


@fl.numba_transform
def add_noise(img, rng):
    flat = img.reshape(-1)
    for i in range(flat.size):
        flat[i] += np.float32(normal(rng))


@fl.numba_transform
def cutout(img, rng):
    y, x = integers(rng, 0, img.shape[1] - 15), integers(rng, 0, img.shape[2] - 15)
    img[:, y:y + 16, x:x + 16] = 0


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
    header(f"user augmentations, {len(records)} 64x64 JPEGs, batch {args.batch}, "
           f"{args.workers} workers")

    def loader(image):
        return fl.Loader(records, batch_size=args.batch, shuffle=True, workers=args.workers,
                         fields={"image": image, "label": "index"}, as_tuple=True)

    plain = loader(transforms)
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

    def python_cutout(x):
        x = x.copy()   # the loader's batch buffer is reused
        for img in x:
            y0, x0 = rng.integers(0, img.shape[1] - 15), rng.integers(0, img.shape[2] - 15)
            img[:, y0:y0 + 16, x0:x0 + 16] = 0
        return x

    results = {}
    for name, fn in (("no augmentation", run(plain)),
                     ("noise: numba kernel", run(loader(KernelField(transforms, [add_noise])))),
                     ("noise: python stage", run(plain, python_noise)),
                     ("cutout: numba kernel", run(loader(KernelField(transforms, [cutout])))),
                     ("cutout: python stage", run(plain, python_cutout))):
        rate, rates = epochs_per_second(fn, len(records), args.runs)
        results[name] = rate
        print(line(name, rate, rates))
    for aug in ("noise", "cutout"):
        print(f"  {aug}: numba kernel / python stage: "
              f"{results[aug + ': numba kernel'] / results[aug + ': python stage']:.2f}x")

if __name__ == "__main__":
    main()
