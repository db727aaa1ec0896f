"""The generator tutorial pipeline: pure Python/Pillow stages vs fastload's compiled stages.

    python benchmarks/bench_generators.py [--images 1000] [--batch 32] [--runs 3] [--data DIR]

Writes ~460x400 photo-like JPEGs (q90) to a temporary folder (or reuses
``--data``), then times one warm-up epoch and ``--runs`` measured epochs of:

* ``python, plain generators``: the tutorial as people run it, a chain of
  generators and hand-driven coroutines in one thread;
* ``python, GeneratorPipeline``: the same Python stages, one thread per stage;
* ``compiled, GeneratorPipeline``: read_images / augment / rescale /
  shuffle_samples from fastload, with the tutorial's Python ``add_noise``.

Each is run as in the tutorial, then without ``add_noise`` (Gaussian noise on
every float, a costly stage both sides share). Prints the median images/s of
each, the ratios to the plain-Python baseline, and the compiled pipeline's own
verdict on its bottleneck.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))   # tests/tutorial, the reference stages
from fastload.synthetic import encode, photo_like  # noqa: E402
from tutorial import add_noise, drive, py_augment, py_read_images, py_rescale, py_shuffle  # noqa: E402

from fastload import stages  # noqa: E402
from fastload.pipeline.generators import GeneratorPipeline  # noqa: E402
from fastload.sources.folders import ImageFolder  # noqa: E402

SIZE = (224, 224)
MEAN = [103.939, 116.779, 123.68]


def write_folder(root: str, n: int, classes: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = os.path.join(root, f"c{i % classes}")
        os.makedirs(d, exist_ok=True)
        h, w = int(rng.integers(360, 440)), int(rng.integers(420, 500))
        with open(os.path.join(d, f"{i:05d}.jpg"), "wb") as f:
            f.write(encode(photo_like(h, w, seed=i), quality=90))


# ----------------------------------------------------------------- variants

def plain_python(folder, batch, noise=True):
    it = map(py_read_images(SIZE), ImageFolder(folder).batches(batch, labels="onehot"))
    it = drive(py_augment(rotate90=True), it)
    it = drive(py_rescale(MEAN), it)
    if noise:
        it = add_noise(it)
    return drive(py_shuffle(seed=0), it)


def python_pipeline(folder, batch, noise=True):
    steps = [py_read_images(SIZE), py_augment(rotate90=True), py_rescale(MEAN), add_noise, py_shuffle(seed=0)]
    return GeneratorPipeline(ImageFolder(folder).batches(batch, labels="onehot"),
                             *[s for s in steps if noise or s is not add_noise])


def compiled_pipeline(folder, batch, noise=True):
    steps = [stages.read_images(SIZE), stages.augment(rotate90=True), stages.rescale(MEAN), add_noise,
             stages.shuffle_samples(seed=0)]
    return GeneratorPipeline(ImageFolder(folder).batches(batch, labels="onehot"),
                             *[s for s in steps if noise or s is not add_noise])


VARIANTS = [("python, plain generators", plain_python),
            ("python, GeneratorPipeline", python_pipeline),
            ("compiled, GeneratorPipeline", compiled_pipeline)]


def epoch(make, folder, batch, noise):
    """Images/s over one epoch, and the pipeline (for its stats)."""
    pipeline = make(folder, batch, noise)
    t0 = time.perf_counter()
    n = sum(len(x) for x, _ in pipeline)
    return n / (time.perf_counter() - t0), pipeline


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", help="existing (or to be created) image folder")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or tmp
        if not os.path.isdir(folder) or not os.listdir(folder):
            t0 = time.perf_counter()
            write_folder(folder, args.images)
            print(f"wrote {args.images} JPEGs to {folder} in {time.perf_counter() - t0:.1f}s")
        n = len(ImageFolder(folder))
        print(f"{n} images, batches of {args.batch}, {SIZE[0]}x{SIZE[1]}, {os.cpu_count()} CPU cores; "
              f"median of {args.runs} epochs after one warm-up")
        for noise in (True, False):
            print("the tutorial pipeline" if noise else "the same without the Python add_noise stage")
            results = {}
            for name, make in VARIANTS:
                epoch(make, folder, args.batch, noise)                 # warm-up: page cache, pools
                runs = [epoch(make, folder, args.batch, noise) for _ in range(args.runs)]
                results[name] = statistics.median(r for r, _ in runs)
                spread = ", ".join(f"{r:.0f}" for r, _ in runs)
                print(f"  {name:<30} {results[name]:8.0f} images/s   (runs: {spread})")
                last = runs[-1][1]
            base = results[VARIANTS[0][0]]
            for name, _ in VARIANTS[1:]:
                print(f"  ratio {name} / {VARIANTS[0][0]}: {results[name] / base:.2f}x")
            print(f"  compiled pipeline verdict: {last.stats().bottleneck()}")


if __name__ == "__main__":
    main()
