"""Random access to one batch of a Loader, built on the Loader's present internals.

``batch_at(loader, b, epoch)`` is batch ``b`` of ``epoch`` exactly as iteration
yields it (same records, same augmentation draws, same structure), written into
freshly allocated arrays the caller owns. It is a pure function of
``(seed, epoch, b)`` and safe to call from several threads at once, which is
what lets a framework's own workers (Keras ``PyDataset``) fetch batches by
index. It is the reference for a ``Loader.batch_at(b, epoch=None)`` method with
the same contract.
"""
from __future__ import annotations

import numpy as np

__all__ = ["batch_at", "current_epoch", "image_layouts"]


def batch_at(loader, b: int, epoch: int | None = None):
    """Batch ``b`` of ``epoch`` (default: the epoch the loader runs next), in owned arrays."""
    method = getattr(loader, "batch_at", None)
    if method is not None:   # the Loader's own, where it has one
        return method(b, epoch)
    if not getattr(loader, "_random_access", False):
        raise TypeError("random access to batches needs a random-access Source, not a stream")
    total = len(loader)
    if not 0 <= b < total:
        raise IndexError(f"batch {b} outside [0, {total})")
    epoch = current_epoch(loader) if epoch is None else int(epoch)
    B = loader.batch_size
    idx = np.ascontiguousarray(loader.order(epoch)[b * B:(b + 1) * B])
    loader._prepare()
    slot = {o.name: np.empty((len(idx), *o.shape), dtype=o.dtype) for o in loader._outputs}
    raw = {name: [None] * len(idx) for name in loader._raw}
    failures = loader._fill_chunk(slot, raw, 0, idx, None, epoch)
    n = loader._apply_policy(slot, raw, len(idx), failures) if failures else len(idx)
    return loader._present(None, b, slot, raw, n)


def current_epoch(loader) -> int:
    """The epoch the loader's next iteration runs, from its resumable state."""
    return int(loader.state_dict()["epoch"])


def image_layouts(loader) -> dict:
    """{output name: "NCHW" | "NHWC"} of the loader's image fields."""
    out = {}
    for binding in getattr(loader, "_bindings", ()):
        layout = getattr(binding.field, "layout", None)
        if layout is not None:
            out[binding.field.name] = layout
    return out
