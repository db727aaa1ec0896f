"""``fastload doctor PATH``: profile the standard pipeline on an image folder for a few seconds.

It runs ``ImageFolder(PATH).batches(...)`` -> ``read_images`` -> ``augment`` ->
``rescale`` -> ``shuffle_samples`` in a :class:`~fastload.GeneratorPipeline`,
consuming batches as fast as they come (so the loader, not a model, is the
limit), then prints every stage's figures and says in plain words which stage
limits throughput and what to do about it. The pipeline and its threads are
closed before it returns.
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Callable

from .pipeline.fluent import Stream
from .pipeline.generators import GeneratorPipeline
from .pipeline.stats import Stats
from .sources.folders import ImageFolder
from .stages import augment, read_images, rescale, shuffle_samples

__all__ = ["doctor"]


def doctor(path: str | os.PathLike, seconds: float = 5.0, out: Callable[[str], object] = print,
           batch_size: int = 32, size: tuple[int, int] = (224, 224), workers: int | None = None) -> Stats:
    """Profile the standard pipeline on ``path`` for about ``seconds``; print the report
    through ``out`` and return the :class:`~fastload.pipeline.stats.Stats`."""
    source = ImageFolder(path)
    out(f"fastload doctor: {source!r}, {os.cpu_count()} CPU cores, batches of {batch_size} at {size[0]}x{size[1]}")
    epochs = Stream(lambda: itertools.chain.from_iterable(
        source.batches(batch_size, shuffle=True, seed=epoch) for epoch in itertools.count()),
        name=f"{type(source).__name__}.batches({batch_size})")
    decode = read_images(size, workers=workers)
    pipeline = GeneratorPipeline(epochs, decode, augment(), rescale(), shuffle_samples())
    images = 0
    with pipeline:
        start = time.perf_counter()
        for x, _ in pipeline:
            images += len(x)
            if time.perf_counter() - start >= seconds:
                break
        elapsed = time.perf_counter() - start
    stats = pipeline.stats()
    out(f"throughput: {images / elapsed:.0f} images/s with {decode.workers} decode workers "
        f"({images} images in {elapsed:.1f}s)")
    out(str(stats))            # the table ends with the verdict
    return stats
