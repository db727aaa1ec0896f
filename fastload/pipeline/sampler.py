"""Which records each batch of an epoch holds, on each rank: one global order, cut into global steps.

An epoch has one global order of the ``n`` records (a seeded permutation, or
0..n-1). Global step ``k`` covers the ``G = batch_size * world_size`` positions
starting at ``offset + k * G``; rank ``r`` takes the ``batch_size`` positions
starting at ``r * batch_size`` within it. So the records of a global step, and
(because augmentation is keyed by record index) their pixels, are the same for
any world size with the same global batch, and the position to resume from is
one number, the global sample ``offset``, valid at any world size.

The last global step: with ``drop_last`` a partial step is dropped; otherwise
with one rank it is a short batch, and with several ranks it is padded by
repeating records from the start of the order, so every rank yields the same
number of full batches (a rank with one batch fewer would hang a collective).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import rng

__all__ = ["Sampler", "epoch_order", "distributed_world"]


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The record indices of ``epoch`` in the order they are batched (uint64)."""
    if not shuffle:
        return np.arange(n, dtype=np.uint64)
    return rng.generator(seed, rng.ORDER, epoch).permutation(n).astype(np.uint64)


def distributed_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world_size): as given, else from torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    import os
    import sys
    if rank is None and world_size is None:
        dist = sys.modules.get("torch.distributed")   # never imports torch itself
        if dist is not None and dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        elif "WORLD_SIZE" in os.environ:
            rank, world_size = _env_world(os.environ)
        else:
            rank, world_size = 0, 1
    elif rank is None or world_size is None:
        raise ValueError("give both rank= and world_size=, or neither")
    for name, v in (("rank", rank), ("world_size", world_size)):   # 2.2 of 2.5 read as 2 of 2: another rank's share
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


def _env_world(env) -> tuple[int, int]:
    """(RANK, WORLD_SIZE) from a launcher's environment; WORLD_SIZE alone is a rank-0 trap, refused."""
    try:
        world_size = int(env["WORLD_SIZE"])
        rank = int(env["RANK"]) if "RANK" in env else None
    except ValueError:
        raise ValueError(f"RANK and WORLD_SIZE must be integers, got RANK={env.get('RANK')!r}, "
                         f"WORLD_SIZE={env['WORLD_SIZE']!r}") from None
    if rank is None:
        if world_size != 1:   # every process would be rank 0 and load the same share
            raise ValueError(f"WORLD_SIZE={world_size} is set but RANK is not: set both (torchrun does), "
                             "give rank= and world_size=, or initialise torch.distributed first")
        rank = 0
    return rank, world_size


class Sampler:
    """Positions of this rank's batches in one epoch (see the module docstring)."""

    def __init__(self, n: int, batch_size: int, drop_last: bool, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.drop_last = n, batch_size, drop_last
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size

    def steps(self, offset: int = 0) -> int:
        """Batches each rank yields from global sample ``offset`` to the end of the epoch."""
        left = max(self.n - offset, 0)
        return left // self.global_batch if self.drop_last else math.ceil(left / self.global_batch)

    def offset_after(self, offset: int, steps: int) -> int:
        """The global sample offset once ``steps`` more global steps are consumed."""
        return min(offset + steps * self.global_batch, self.n)

    def positions(self, offset: int, step: int) -> np.ndarray:
        """Positions in the epoch's order of this rank's batch ``step`` (counted from ``offset``)."""
        start = offset + step * self.global_batch + self.rank * self.batch_size
        pos = np.arange(start, start + self.batch_size, dtype=np.int64)
        if self.world_size == 1:
            return pos[pos < self.n]
        return pos % self.n   # padding: every rank a full batch

    def batches(self, order: np.ndarray, offset: int):
        """(step, record indices) for the rest of the epoch."""
        for step in range(self.steps(offset)):
            yield step, order[self.positions(offset, step)]
