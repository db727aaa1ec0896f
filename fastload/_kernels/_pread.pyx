# cython: language_level=3, boundscheck=False, wraparound=False
"""A batch of positional reads in one call, with the GIL released for all of them.

An indexed shard (a tar shard, a packed shard) is read one sample at a time: a
batch of small images is a few hundred ``pread`` calls, and through ``os.pread``
each costs about a microsecond of Python around its system call, with the GIL
held. :func:`pread_ranges` allocates every result first, then reads them all
without the GIL. POSIX only (Windows has no ``pread``): :data:`AVAILABLE` says
whether this build has it.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdlib cimport free, malloc

import os

cdef extern from *:
    """
    #ifdef _WIN32
    #define FL_HAVE_PREAD 0
    static long long fl_pread_all(int fd, char *buf, long long n, long long off)
    {
        (void)fd; (void)buf; (void)n; (void)off;
        return -38;   /* ENOSYS */
    }
    #else
    #include <errno.h>
    #include <unistd.h>
    #define FL_HAVE_PREAD 1
    /* Bytes read (short only at the end of the file), or -errno. */
    static long long fl_pread_all(int fd, char *buf, long long n, long long off)
    {
        long long got = 0;
        while (got < n) {
            ssize_t r = pread(fd, buf + got, (size_t)(n - got), (off_t)(off + got));
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (r == 0)
                break;
            got += r;
        }
        return got;
    }
    #endif
    """
    bint FL_HAVE_PREAD
    long long fl_pread_all(int fd, char *buf, long long n, long long off) nogil

#: Whether :func:`pread_ranges` reads (False on Windows).
AVAILABLE = bool(FL_HAVE_PREAD)

cdef struct _Read:
    int fd
    char *buf
    long long n
    long long off
    long long got


def pread_ranges(list ranges, dict fds):
    """``(key, start, end)`` ranges read from ``fds[key]`` (a descriptor, or the ``OSError``
    of opening it). Returns ``(items, bad)``: each item is the range's bytes, shorter
    where the file ends first, or the ``OSError`` of its read (or of its descriptor);
    ``bad`` lists the positions of the items that are not the whole range."""
    cdef Py_ssize_t n = len(ranges), i
    cdef long long start, end
    cdef _Read *reads = <_Read *>malloc(max(n, 1) * sizeof(_Read))
    if reads == NULL:
        raise MemoryError()
    out, bad = [None] * n, []
    try:
        for i in range(n):
            key, start, end = ranges[i]
            fd = fds[key]
            reads[i].n = -1
            if isinstance(fd, OSError):
                out[i] = fd
                bad.append(i)
                continue
            if start < 0 or end < start:
                raise ValueError(f"bad range {start}..{end} of {key!r}")
            b = PyBytes_FromStringAndSize(NULL, end - start)
            out[i] = b
            reads[i].fd, reads[i].buf, reads[i].n, reads[i].off = fd, PyBytes_AS_STRING(b), end - start, start
        with nogil:
            for i in range(n):
                if reads[i].n >= 0:
                    reads[i].got = fl_pread_all(reads[i].fd, reads[i].buf, reads[i].n, reads[i].off)
        for i in range(n):
            if reads[i].n < 0:
                continue
            if reads[i].got < 0:
                out[i] = OSError(-reads[i].got, os.strerror(-reads[i].got))
                bad.append(i)
            elif reads[i].got < reads[i].n:
                out[i] = out[i][:reads[i].got]
                bad.append(i)
        return out, bad
    finally:
        free(reads)
