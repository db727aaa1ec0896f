"""Compiled drop-in replacements for the classic generator-tutorial stages.

Each stage is a callable ``batch -> batch`` for :class:`~fastload.GeneratorPipeline`
(or ``stream.map``). A batch is either an array or a tuple whose first element
is the array to transform (``(images, labels)``); the other elements pass
through unchanged, except in :func:`shuffle_samples`, which permutes them all.

* ``read_images``: paths -> (N, H, W, 3) images. Chunks of the batch are
  decoded and resized by :class:`fastload.image.field.ImageField` (one GIL-free
  C call per chunk) on the stage's own thread pool.
* ``augment``, ``rescale``, ``shuffle_samples``: NumPy copy and ufunc loops
  with ``out=``, which run in C with the GIL released.

Buffers. Every output array comes from the stage's
:class:`~fastload.memory.pool.ArrayPool` and holds a lease on its buffer: it is
reused once nothing references it, so a batch still queued downstream, viewed
(``np.rot90`` returns views) or kept by the training loop is never
overwritten, and in steady state no stage allocates.

Randomness. ``augment`` and ``shuffle_samples`` draw each batch's parameters
from its key (see :meth:`Stage.generator`), so the output depends only on the
seed and the order of batches, never on threads:

* in a stream given an epoch (``stream.set_epoch``, which a Loader reading the
  stream calls before each pass), ``stream.map(stage)`` keys the batch at
  position ``p`` of the pass of epoch ``e`` as ``(e, p)``: an epoch's batches are
  the same however it is reached, resumed or interrupted;
* otherwise (a GeneratorPipeline, a direct call) batch ``i`` is the ``i``-th this
  stage object has processed: reusing it for another pass continues the count
  (a new pass gets new draws); make a new one to replay.

``stream.map(stage, workers=N)`` numbers the batches in stream order, as they
are handed to its threads; a stage called from inside another function on
those threads (``.map(lambda b: stage(load(b)), workers=N)``) would be numbered
in the order the threads reach it, so it refuses.

Threads. Only ``read_images`` owns threads (a pool created on first use);
``close()`` (called by the pipeline at shutdown) stops them, and a later call
starts a new pool.
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import os
import threading
from typing import Any, Sequence

import numpy as np

from .errors import DecodeError
from .memory.pool import ArrayPool
from .pipeline import rng
from .pipeline.fields import ChunkContext
from .pipeline.node import DaemonPool

__all__ = ["Stage", "read_images", "augment", "rescale", "shuffle_samples"]


# What a threaded stream.map tells the stages its threads call: ``index``, the number it drew, in
# stream order, for the batch of a stage it was given; ``threaded``, while it runs any other function.
_call = threading.local()


class Stage:
    """Base of compiled stages: ``name``, ``__call__(batch) -> batch``, ``close()``."""

    name = "stage"
    compiled = True
    numbered = False   # whether a batch's draws depend on its number (the Randomness section above)

    def __init__(self):
        self._buffers = ArrayPool()
        self._count = 0
        self._count_lock = threading.Lock()

    def generator(self, key: int | tuple[int, int]) -> np.random.Generator:
        """The draws of the batch keyed ``key``: ``rng.generator(seed, STAGE, i)`` for the ``i``-th batch
        this stage processed, ``rng.generator(seed, STAGE_EPOCH, e, p)`` for key ``(e, p)``, position ``p``
        of epoch ``e``'s pass of a stream."""
        if isinstance(key, tuple):
            return rng.generator(self.seed, rng.STAGE_EPOCH, *key)
        return rng.generator(self.seed, rng.STAGE, key)

    def _next_index(self) -> int | tuple[int, int]:
        index = getattr(_call, "index", None)
        if index is not None:
            return index
        if getattr(_call, "threaded", False):
            raise RuntimeError(
                f"{self.name} draws each batch's randomness from the batch's number, counted as it is called, "
                "and a function given to .map(..., workers=N) is called in the order its threads take the "
                f"records: give the stage its own map, .map(fn, workers=N).map({self.name}(...), workers=N), "
                "which numbers the batches in stream order, or call it where the calls are in order")
        with self._count_lock:
            i = self._count
            self._count += 1
            return i

    def _rewind(self, index: int) -> None:
        """Number the next batch ``index``: a threaded map gives back numbers it drew for batches it
        never yielded."""
        with self._count_lock:
            self._count = min(self._count, index)

    def __call__(self, batch):
        raise NotImplementedError

    def trim(self) -> None:
        """Give back output buffers grown for batches a consumer kept in the last pass (a pipeline
        calls it as each run starts, as a Loader trims its slots each epoch)."""
        self._buffers.trim()

    def close(self) -> None:
        """Release threads; the stage stays usable."""

    def __repr__(self) -> str:
        return f"{self.name}()"


def _split(batch) -> tuple[Any, tuple]:
    if isinstance(batch, tuple):
        if not batch:
            raise ValueError("empty tuple batch")
        return batch[0], batch[1:]
    return batch, None


def _join(x, rest):
    return x if rest is None else (x, *rest)


class read_images(Stage):
    """Paths -> (N, H, W, 3) ``dtype`` images resized to ``target_size = (h, w)``.

    Equals ``np.asarray(Image.open(p).convert("RGB").resize((w, h), BILINEAR), dtype)``
    up to decoder and resampler rounding (mean absolute difference below 1).
    The orientation tag is ignored unless ``exif=True``: the stored pixels, as
    Pillow's ``open`` gives them for JPEG, PNG and WebP (Pillow's TIFF reader turns
    a TIFF itself; ``read_images`` gives its stored pixels all the same).
    ``dct_scale=True`` lets the JPEG decoder downscale by 1/2, 1/4 or 1/8 when the
    output is at least that much smaller: faster, but no longer Pillow's pixels.
    ``workers`` threads (default: the CPU count, at most 8) each take chunks of
    the batch; an unreadable file raises :class:`~fastload.errors.DecodeError`.
    """

    name = "read_images"

    def __init__(self, target_size: int | Sequence[int], resample: str = "bilinear",
                 dtype: str = "float32", workers: int | None = None, exif: bool = False,
                 dct_scale: bool = False):
        super().__init__()
        from .image.field import ImageField     # imported here: pulls in the compiled kernels
        from .ops.geometry import Resize, _size2
        h, w = _size2(target_size, "read_images target")
        self.target_size = (h, w)
        self.dtype = np.dtype(dtype)
        self.workers = workers or min(os.cpu_count() or 1, 8)
        self._field = ImageField([Resize((h, w), interpolation=resample)], dtype=self.dtype.name,
                                 layout="NHWC", exif=exif, dct_scale=dct_scale)
        self._pool: DaemonPool | None = None
        self._pool_lock = threading.Lock()

    def __call__(self, batch):
        paths, rest = _split(batch)
        paths = list(paths)
        n = len(paths)
        out = self._buffers.get((n, *self.target_size, 3), self.dtype)
        step = max(1, math.ceil(n / (2 * self.workers)))     # two chunks per worker evens out slow files
        spans = [(a, min(a + step, n)) for a in range(0, n, step)]
        if len(spans) <= 1 or self.workers == 1:
            for a, b in spans:
                self._fill(paths, out, a, b)
        else:
            pool = self._get_pool()
            futures = [pool.submit(self._fill, paths, out, a, b) for a, b in spans]
            cf.wait(futures)       # every chunk has stopped writing before we return or raise
            for f in futures:
                f.result()
        return _join(out, rest)

    def _fill(self, paths, out, a, b) -> None:
        chunk = paths[a:b]
        ctx = ChunkContext(seed=0, epoch=0, indices=np.arange(a, b, dtype=np.uint64))
        failures = self._field.fill(chunk, {self._field.name: out[a:b]}, ctx)
        if failures:
            i, reason = min(failures.items())
            raise DecodeError(os.fspath(chunk[i]), reason)

    def _get_pool(self) -> DaemonPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = DaemonPool(self.workers, "fastload-read_images")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"read_images({self.target_size}, dtype={self.dtype.name!r}, workers={self.workers})"


class augment(Stage):
    """Per sample, rotate by 90°·k then flip left-right, on square (N, S, S, C) images.

    The batch keyed ``key`` (see the module's Randomness section) draws, with ``rng = self.generator(key)``:
    ``k = rng.integers(0, 4, n)`` if ``rotate90`` else zeros, then
    ``flips = rng.random(n) < 0.5`` if ``flip`` else all False; sample j becomes
    ``np.fliplr(np.rot90(x[j], k[j])) if flips[j] else np.rot90(x[j], k[j])``.
    """

    name = "augment"
    numbered = True

    def __init__(self, rotate90: bool = True, flip: bool = True, seed: int = 0):
        super().__init__()
        self.rotate90, self.flip, self.seed = rotate90, flip, rng.check_seed(seed)

    def params(self, key: int | tuple[int, int], n: int) -> tuple[np.ndarray, np.ndarray]:
        """The (k, flips) arrays the batch of ``n`` samples keyed ``key`` gets."""
        gen = self.generator(key)
        k = gen.integers(0, 4, n) if self.rotate90 else np.zeros(n, np.int64)
        flips = gen.random(n) < 0.5 if self.flip else np.zeros(n, bool)
        return k, flips

    def __call__(self, batch):
        x, rest = _split(batch)
        x = np.asarray(x)
        if x.ndim < 3 or (self.rotate90 and x.shape[1] != x.shape[2]):
            raise ValueError(f"augment needs a batch of square images, got shape {x.shape}")
        k, flips = self.params(self._next_index(), len(x))
        out = self._buffers.get(x.shape, x.dtype)
        for j in range(len(x)):
            v = np.rot90(x[j], int(k[j]))
            if flips[j]:
                v = v[:, ::-1]
            if x.ndim == 4 and (k[j] or flips[j]):   # one plane at a time: long inner loops
                for c in range(x.shape[3]):
                    np.copyto(out[j, ..., c], v[..., c])
            else:
                np.copyto(out[j], v)
        return _join(out, rest)

    def __repr__(self) -> str:
        return f"augment(rotate90={self.rotate90}, flip={self.flip}, seed={self.seed})"


class rescale(Stage):
    """Caffe-style preprocessing: ``(x[..., ::-1] - mean) / std`` for ``order="BGR"``.

    ``mean`` and ``std`` are per channel in the *output* order: with the classic
    ``mean=[103.939, 116.779, 123.68]`` the images go RGB -> BGR first and 103.939
    is the blue mean, as in Keras' ``preprocess_input(mode="caffe")``.
    ``order="RGB"`` keeps the channel order: ``(x - mean) / std``. The output is
    float32 for integer input, else the input's dtype.
    """

    name = "rescale"

    def __init__(self, mean: Sequence[float] = (103.939, 116.779, 123.68), std: Sequence[float] | None = None,
                 order: str = "BGR"):
        super().__init__()
        if order not in ("RGB", "BGR"):
            raise ValueError(f"order must be 'RGB' or 'BGR', got {order!r}")
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        if self.std is not None and (self.std == 0).any():
            raise ValueError("std must be non-zero")
        self.order = order

    def __call__(self, batch):
        x, rest = _split(batch)
        x = np.asarray(x)
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        out = self._buffers.get(x.shape, dtype)
        channels = x.shape[-1]
        mean = np.broadcast_to(self.mean, (channels,))
        std = None if self.std is None else np.broadcast_to(self.std, (channels,))
        for c in range(channels):       # one channel at a time: 4x faster than x[..., ::-1] - mean
            dst = out[..., c]
            np.subtract(x[..., channels - 1 - c] if self.order == "BGR" else x[..., c], mean[c], out=dst, dtype=dtype)
            if std is not None:
                np.divide(dst, std[c], out=dst, dtype=dtype)
        return _join(out, rest)

    def __repr__(self) -> str:
        def show(a):
            return None if a is None else [round(float(v), 4) for v in a]
        return f"rescale(mean={show(self.mean)}, std={show(self.std)}, order={self.order!r})"


class shuffle_samples(Stage):
    """Apply one permutation to every element of a batch (images, labels, paths...).

    The batch keyed ``key`` (see the module's Randomness section) uses ``self.generator(key).permutation(n)``.
    Arrays are gathered with ``np.take(..., out=)``; other sequences become lists.
    """

    name = "shuffle_samples"
    numbered = True

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = rng.check_seed(seed)

    def __call__(self, batch):
        parts = batch if isinstance(batch, tuple) else (batch,)
        n = len(parts[0])
        if any(len(p) != n for p in parts):
            raise ValueError(f"batch elements differ in length: {[len(p) for p in parts]}")
        perm = self.generator(self._next_index()).permutation(n)
        out = tuple(np.take(p, perm, axis=0, mode="clip", out=self._buffers.get(p.shape, p.dtype))
                    if isinstance(p, np.ndarray) else [p[i] for i in perm] for p in parts)
        return out if isinstance(batch, tuple) else out[0]

    def __repr__(self) -> str:
        return f"shuffle_samples(seed={self.seed})"
