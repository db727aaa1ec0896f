"""The classic generator tutorial, in plain Python and Pillow.

These are the stages people write by hand: a callable that reads and resizes
images with Pillow, coroutines for augmentation, rescaling and shuffling, and
a generator function that adds noise. They are the reference that fastload's
compiled stages (``fastload.stages``) are tested against
(tests/test_generators.py) and benchmarked against
(benchmarks/bench_generators.py). ``augment`` and ``shuffle`` make the same
random draws as their compiled counterparts, so results can be compared
batch for batch.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from fastload.pipeline import rng as flrng

__all__ = ["add_noise", "drive", "py_augment", "py_read_images", "py_rescale", "py_shuffle"]


def py_read_images(target_size):
    """A plain callable: paths -> float32 images, through Pillow."""
    h, w = target_size

    def read_images(batch):
        paths, labels = batch
        x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32)
                      for p in paths])
        return x, labels
    return read_images


def py_augment(rotate90=True, flip=True, seed=0):
    """A coroutine stage, written the classic way (same draws as stages.augment)."""
    i = 0
    while True:
        images, labels = yield
        rng = flrng.generator(seed, flrng.STAGE, i)
        i += 1
        k = rng.integers(0, 4, len(images))
        flips = rng.random(len(images)) < 0.5
        images = np.stack([np.fliplr(np.rot90(im, kk)) if f else np.rot90(im, kk)
                           for im, kk, f in zip(images, k, flips)])
        yield images, labels


def py_rescale(mean):
    """A coroutine stage: RGB -> BGR, minus the per-channel mean."""
    mean = np.asarray(mean, dtype=np.float32)
    while True:
        images, labels = yield
        yield images[..., ::-1] - mean, labels


def add_noise(batches, seed=0):
    """A generator-function stage: Gaussian noise on every float, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    for x, y in batches:
        yield x + rng.standard_normal(x.shape, dtype=np.float32), y


def py_shuffle(seed=0):
    """A coroutine stage: shuffles the samples of each batch (same draws as stages.shuffle_samples)."""
    i = 0
    while True:
        x, y = yield
        perm = flrng.generator(seed, flrng.STAGE, i).permutation(len(x))
        i += 1
        yield x[perm], y[perm]


def drive(coro, items):
    """The hand-driven coroutine loop of the tutorial."""
    next(coro)
    for item in items:
        out = coro.send(item)
        next(coro)
        yield out
