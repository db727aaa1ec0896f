"""The batch-slot ring: every batch buffer a loader will ever use, allocated once.

Protocol. A loader with ``prefetch = P`` owns ``P + 2`` slots. Batch ``i`` of
an epoch is written into slot ``i % (P + 2)`` by worker threads and handed to
the consumer as views of that slot. The slot is reused for batch ``i + P + 2``,
which the loader only starts filling once the consumer has asked for batch
``i + 2``: a yielded batch stays valid while the consumer works on it and the
next one (room for an asynchronous host-to-device copy of the previous batch to
finish). Pass ``copy=True`` to the loader for batches you keep longer.

With a GPU the slots are page-locked (pinned) so ``tensor.to("cuda",
non_blocking=True)`` runs asynchronously; a CUDA event recorded after that copy
guards the slot against being refilled before the copy has read it.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from ..pipeline.fields import Output

__all__ = ["BatchRing", "pinned_empty"]

log = logging.getLogger("fastload")


def pinned_empty(shape, dtype):
    """A page-locked NumPy array backed by a torch tensor, or None when that is not possible."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        t = torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), pin_memory=True)
        return t.numpy()
    except (ImportError, RuntimeError) as e:  # no torch, or the driver refused to pin
        warnings.warn(f"fastload: pinned memory unavailable ({e}); using pageable buffers", RuntimeWarning)
        return None


class BatchRing:
    """``slots`` preallocated batches, each a dict of arrays (batch_size, *output.shape)."""

    def __init__(self, outputs: list[Output], batch_size: int, slots: int, pin: bool = False):
        self.outputs, self.batch_size, self.pinned = outputs, batch_size, pin
        self.slots = []
        for _ in range(slots):
            slot = {}
            for o in outputs:
                shape = (batch_size, *o.shape)
                arr = pinned_empty(shape, o.dtype) if pin else None
                if arr is None:
                    self.pinned = False
                    arr = np.empty(shape, dtype=o.dtype)
                slot[o.name] = arr
            self.slots.append(slot)
        self.events = [None] * slots   # CUDA events guarding slots read by async copies

    def __len__(self):
        return len(self.slots)

    def acquire(self, i: int) -> dict:
        """The slot for batch ``i``, after any copy still reading it has finished."""
        k = i % len(self.slots)
        ev = self.events[k]
        if ev is not None:
            ev.synchronize()
            self.events[k] = None
        return self.slots[k]

    def guard(self, i: int, event) -> None:
        self.events[i % len(self.slots)] = event

    def nbytes(self) -> int:
        return sum(a.nbytes for s in self.slots for a in s.values())
