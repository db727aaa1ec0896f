"""How a Loader turns one field of a chunk of records into rows of batch buffers.

A :class:`Field` declares its outputs before the epoch starts (name, per-sample
shape, dtype); the loader allocates every batch slot once from that
declaration. During the epoch a worker thread calls :meth:`Field.fill` with a
chunk of records' values and views of the slot rows they own. ``fill`` writes
in place, releases the GIL for heavy work, allocates nothing per batch in
steady state, and reports the records it could not convert instead of raising,
so that the loader can apply the user's error policy to the whole record.

Random choices are a pure function of ``(seed, epoch, index)`` where ``index``
is the record's position in the source, never of the thread that runs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Field", "Output", "ChunkContext"]


@dataclass(frozen=True)
class Output:
    """One array a field writes per sample: batch buffers are (batch_size, *shape)."""
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def __post_init__(self):   # checked here: at the batch buffer's allocation it named nothing
        shape = self.shape
        if not isinstance(shape, (tuple, list)) or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise TypeError(f"Output {self.name!r}: shape must be a tuple of sizes >= 0, e.g. (2,) or () for one "
                            f"value a sample, got {shape!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))


@dataclass(frozen=True)
class ChunkContext:
    """What a field may know about the chunk it fills."""
    seed: int
    epoch: int
    indices: np.ndarray      # uint64 positions of the records in the source


class Field:
    """Base class of per-field converters. Subclasses set ``name``."""

    name: str = "field"

    def outputs(self) -> list[Output]:
        raise NotImplementedError

    def prepare(self, values) -> None:
        """Optional pass over the training values before the first epoch (e.g. statistics)."""

    def fill(self, values: Sequence[Any], outs: dict[str, np.ndarray], ctx: ChunkContext) -> dict[int, str]:
        """Write ``values[i]`` into ``outs[name][i]`` for every output; return {i: reason} for failures
        (``i`` a position in ``values``). A record that could not be read is never among ``values``."""
        raise NotImplementedError
