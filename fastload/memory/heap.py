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
"""
from __future__ import annotations

import ctypes
import os
import threading

__all__ = ["TOP_PAD", "keep_freed_memory"]

#: Bytes each glibc heap keeps free at its top once a Loader has run.
TOP_PAD = 64 << 20

_M_TOP_PAD = -2   # mallopt's parameter number, from <malloc.h>
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
    if "MALLOC_TOP_PAD_" in os.environ or "glibc.malloc.top_pad" in os.environ.get("GLIBC_TUNABLES", ""):
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
    return pad if mallopt(_M_TOP_PAD, min(pad, 2**31 - 1)) == 1 else None
