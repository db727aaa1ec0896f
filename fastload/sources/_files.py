"""Positional reads of a descriptor that worker threads share, on every OS.

POSIX ``os.pread`` carries its own offset, so threads need no lock. Windows has
no ``pread``: there the descriptor's one offset is moved and read under the
caller's lock, as one step.
"""
from __future__ import annotations

import os
import threading


def pread_positional(fd: int, n: int, offset: int, lock: threading.Lock) -> bytes:
    return os.pread(fd, n, offset)


def pread_seek(fd: int, n: int, offset: int, lock: threading.Lock) -> bytes:
    with lock:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)


pread = pread_positional if hasattr(os, "pread") else pread_seek


def open_binary(path: str) -> int:
    """A read-only descriptor (binary mode on Windows, where text mode is the default)."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
