"""The one randomness convention: every random decision is a pure function of (seed, key...).

Python-side decisions (an epoch's order, a split, a shuffle buffer's pass,
mixing, a compiled stage's batch) draw from :func:`generator` keyed by the
user's seed, a domain naming the decision, and the epoch, pass or position.
Per-sample augmentation in the C kernels uses the same rule through a
counter-based stream keyed by ``(seed, epoch, record index)`` (``src_c/rng.h``).
Nothing reads global state, so results never depend on threads, worker count
or world size.
"""
from __future__ import annotations

import numbers

import numpy as np
import numpy.random  # noqa: F401  (NumPy 2 imports it on first use: in a training loop, where its
#                                    module set-up swallowed a Ctrl-C arriving meanwhile)

__all__ = ["generator", "check_seed", "ORDER", "SPLIT", "SHUFFLE", "BATCHES", "MIX", "STAGE", "STAGE_EPOCH"]

# Domains: the same seed gives unrelated streams for unrelated decisions.
ORDER = ()              # an epoch's record order: [seed, epoch] (kept short: it defines resumable state)
SPLIT = (0x5B117,)
SHUFFLE = (0x5D0FF,)
BATCHES = (0xBA7C5,)   # a random-access source's order under .batches(shuffle=True), per pass
MIX = (0x313C5,)
STAGE = (0x57A6E,)         # a compiled stage's batch by its count: [seed, STAGE, count]
STAGE_EPOCH = (0x57A6F,)   # by its place in an epoch's pass: [seed, STAGE_EPOCH, epoch, position]

_U64 = 1 << 64
_WORD = 1 << 32


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int in [0, 2**64), or a ValueError/TypeError naming the argument."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if not 0 <= seed < _U64:
        raise ValueError(f"{name} must be in [0, 2**64), got {seed}")
    return seed


def generator(seed: int, domain: tuple = ORDER, *key: int) -> np.random.Generator:
    """A NumPy Generator that depends only on ``seed``, ``domain`` and ``key`` (epoch, pass, position)."""
    entropy = [int(seed), *domain, *(int(k) for k in key)]
    if any(v >= _WORD for v in entropy):
        # SeedSequence reads an int as however many 32-bit words it needs, and trailing zero
        # words add nothing: seed 2**32 + 5's epoch 0 would be seed 5's epoch 1. Wide values
        # are written as two words each, ending in a 1 that no all-narrow entropy (at most
        # four words, as the domains above go) has; narrow ones keep their streams.
        entropy = [w for v in entropy for w in (v % _WORD, v // _WORD)] + [1]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
