"""Your own augmentations, compiled with Numba, on fastload's worker threads.

    python examples/augment_numba.py [PATH]

Two kernels written in plain Python and compiled by Numba (nopython, GIL
released): Gaussian noise on every sample (the generator tutorial's
``add_noise``), and cutout on the batch rows. Each draws from the generator it
is handed, keyed by (seed, epoch, record index): the batches are the same for
any number of workers, and a resumed run reproduces them.
Set FASTLOAD_DISABLE_JIT=1 to run the kernels as plain Python (to step through them).
"""
import argparse
import os
import tempfile
import time

import numpy as np

import fastload as fl
from fastload.ops.numba_ops import KernelField, integers, normal
from fastload.synthetic import make_image_folder


@fl.numba_transform
def add_noise(img, rng):
    """Gaussian noise of standard deviation 0.1 on every value of one sample."""
    flat = img.reshape(-1)
    for i in range(flat.size):
        flat[i] += np.float32(0.1 * normal(rng))


@fl.numba_transform(batch=True)
def cutout(rows, rngs):
    """Zero a random 16x16 square of each NHWC sample."""
    for i in range(rows.shape[0]):
        y = integers(rngs[i], 0, rows.shape[1] - 15)
        x = integers(rngs[i], 0, rows.shape[2] - 15)
        rows[i, y:y + 16, x:x + 16, :] = 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", help="class-per-subfolder image directory (default: a synthetic one)")
    args = ap.parse_args()
    scratch = tempfile.TemporaryDirectory()   # removed when main() returns
    path = args.path or make_image_folder(os.path.join(scratch.name, "train"), classes=4, per_class=32,
                                          size=(120, 140))
    folder = fl.ImageFolder(path)
    records = fl.ListSource([{"image": p, "label": int(y)} for p, y in folder])
    image = KernelField(
        [fl.RandomResizedCrop(64), fl.RandomHorizontalFlip(), fl.Normalize([0.5] * 3, [0.25] * 3)],
        [add_noise, cutout], layout="NHWC")
    for workers in (1, 2):
        loader = fl.Loader(records, batch_size=32, shuffle=True, seed=0, workers=workers, copy=True,
                           fields={"image": image, "label": "index"}, as_tuple=True)
        next(iter(loader))   # Numba compiles the kernels at their first call: not timed
        loader.set_epoch(0)  # and the timed pass is the whole epoch again, from its first batch
        t = time.perf_counter()
        batches = list(loader)
        x, y = batches[0]
        print(f"{workers} worker(s): {sum(len(b[1]) for b in batches)} images in {time.perf_counter() - t:.2f} s; "
              f"first batch {x.shape} {x.dtype}, checksum {float(np.abs(x).sum()):.4f}")


if __name__ == "__main__":
    main()
