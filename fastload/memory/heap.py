"""Freed memory kept for reuse rather than handed back to the kernel page by page.

glibc's malloc returns the top of a heap to the kernel as soon as that much of
it is free, and each page it later takes back is a page fault that zeroes it.
A loader frees in one thread what another allocated a moment before: a
sample's encoded bytes (the stream's reader allocates them, a worker frees them
once decoded), libjpeg's image buffers, each several hundred kilobytes. So the
same memory goes back and forth, a fault per 4 KiB: a fifth of the CPU time of
a stream of 150 KB PNGs.

:func:`keep_freed_memory` sets glibc's ``M_TOP_PAD``: each heap keeps that much
free memory at its top. It is process-wide, so it is set once, the first time a
Loader iterates, and only where the user has not set it: ``MALLOC_TOP_PAD_`` or
``GLIBC_TUNABLES`` naming ``glibc.malloc.top_pad`` are left as they are, and
``FASTLOAD_MALLOC_TOP_PAD`` (bytes; ``0``: leave malloc alone) overrides the
default. Memory kept this way was in use a moment before, so the peak resident
size does not grow; what changes is that it is not returned between batches.

Setting any of malloc's thresholds turns off glibc's sliding mmap threshold, which
otherwise rises to the size of the largest block freed (up to 32 MiB): left at
its start value of 128 KiB, every larger allocation in the process (a NumPy
copy of a batch, a training step's tensors) would be a fresh ``mmap``,
faulted in a zeroed page at a time and unmapped when freed; a 3 MB copy took
23 times as long. So ``M_MMAP_THRESHOLD`` is set with it, to where the sliding
threshold would have risen, unless the user set that one too
(``MALLOC_MMAP_THRESHOLD_``, ``glibc.malloc.mmap_threshold``).
"""
from __future__ import annotations

import ctypes
import os
import threading

__all__ = ["TOP_PAD", "keep_freed_memory"]

#: Bytes each glibc heap keeps free at its top once a Loader has run.
TOP_PAD = 64 << 20

#: The highest the sliding mmap threshold goes (glibc's DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD = 32 << 20 if ctypes.sizeof(ctypes.c_void_p) == 8 else 512 << 10

_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3   # mallopt's parameter numbers, from <malloc.h>
_lock = threading.Lock()
_done: list = []   # the result, once decided


def keep_freed_memory() -> int | None:
    """Set glibc's ``M_TOP_PAD`` once per process (see the module docstring).

    Returns the bytes set, or None where nothing was changed: not glibc, the
    user's own setting, or ``FASTLOAD_MALLOC_TOP_PAD=0``.
    """
    with _lock:
        if not _done:
            _done.append(_set())
        return _done[0]


def _set() -> int | None:
    if _user_set("MALLOC_TOP_PAD_", "glibc.malloc.top_pad"):
        return None
    try:
        pad = int(os.environ.get("FASTLOAD_MALLOC_TOP_PAD", TOP_PAD))
    except ValueError:
        raise ValueError(f"FASTLOAD_MALLOC_TOP_PAD must be a number of bytes, got "
                         f"{os.environ['FASTLOAD_MALLOC_TOP_PAD']!r}") from None
    if pad <= 0:
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):   # not glibc (macOS, Windows, musl)
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not _user_set("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"):
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)   # the pad alone would leave it fixed at 128 KiB
    return pad if mallopt(_M_TOP_PAD, min(pad, 2**31 - 1)) == 1 else None


def _user_set(variable: str, tunable: str) -> bool:
    return variable in os.environ or tunable in os.environ.get("GLIBC_TUNABLES", "")
