# cython: language_level=3, boundscheck=False, wraparound=False
"""The common tar header in one call: what :mod:`fastload.sources._tar` reads from every member.

A shard of small samples is mostly headers, and reading one field by field in
Python costs about 2.5 us. :func:`header` takes a whole 512-byte block and
returns ``(name, size, type)`` when it is the plain case: the checksum matches
(as unsigned or signed bytes) and both numbers are octal digits, with
whitespace around them and a NUL after them allowed. Anything else (base-256 numbers, stray characters,
a bad checksum) returns None, and the Python reader reads that header itself,
with its error messages.
"""
from cpython.unicode cimport PyUnicode_DecodeUTF8

cdef enum:
    NAME = 0
    SIZE = 124
    CHKSUM = 148
    TYPE = 156
    PREFIX = 345


cdef inline bint _space(unsigned char c):
    # bytes.strip()'s whitespace
    return c == 0x20 or c == 0x09 or c == 0x0A or c == 0x0B or c == 0x0C or c == 0x0D


cdef long long _octal(const unsigned char[::1] b, Py_ssize_t at, Py_ssize_t n):
    """The field's value, or -1 unless it is octal digits between whitespace, up to a NUL."""
    cdef Py_ssize_t end = at, i
    cdef long long v = 0
    while end < at + n and b[end] != 0:
        end += 1
    while at < end and _space(b[at]):
        at += 1
    while end > at and _space(b[end - 1]):
        end -= 1
    for i in range(at, end):
        if b[i] < 0x30 or b[i] > 0x37:
            return -1
        v = v * 8 + (b[i] - 0x30)
    return v


cdef str _text(const unsigned char[::1] b, Py_ssize_t at, Py_ssize_t n):
    cdef Py_ssize_t end = at
    while end < at + n and b[end] != 0:
        end += 1
    return PyUnicode_DecodeUTF8(<const char *>&b[at], end - at, "surrogateescape")


def header(const unsigned char[::1] block not None):
    """``(name, size, type byte)`` of a plain header block (see the module docstring), else None."""
    if block.shape[0] != 512:
        return None
    cdef long long want = _octal(block, CHKSUM, 8)
    cdef long long size = _octal(block, SIZE, 12)
    if want < 0 or size < 0:
        return None
    cdef long total = 0, signed_total = 0
    cdef Py_ssize_t i
    for i in range(512):
        total += block[i]
        signed_total += <signed char>block[i]
    for i in range(CHKSUM, CHKSUM + 8):   # the checksum field counts as eight spaces
        total -= block[i]
        signed_total -= <signed char>block[i]
    if want != total + 8 * 0x20 and want != signed_total + 8 * 0x20:
        return None
    cdef unsigned char kind = block[TYPE]
    name = _text(block, NAME, 100)
    if block[PREFIX] and kind != 0x53:   # S: GNU sparse, whose header holds sparse maps there
        name = _text(block, PREFIX, 155) + "/" + name
    return name, size, kind
