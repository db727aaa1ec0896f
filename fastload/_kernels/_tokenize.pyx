# cython: language_level=3
"""Tokenizer loops: word lookup and byte ids, written into the caller's rows without the GIL.

Input protocol (prepared by ``fastload.text.tokenize``): ``data`` is the UTF-8
of n already-normalised texts back to back and ``lengths[r]`` the byte length
of text r. Output rows are the caller's: ``ids[r, :]`` gets the ids (optional
bos first, optional eos last, truncated to the row width, padded with pad_id),
``length[r]`` the count of real ids, ``mask[r, :]`` 1 over them and 0 over the
padding. Nothing is allocated per call.

Word level splits on the bytes that ``str.split()`` treats as whitespace in
ASCII (non-ASCII whitespace is mapped to a space before encoding) and finds
each word in a :class:`WordTable`, an open-addressing hash table over the
vocabulary's UTF-8 bytes, probed with no Python objects.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcmp

import numpy as np


cdef inline uint64_t _fnv1a(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h


cdef inline bint _is_space(uint8_t c) noexcept nogil:
    # str.split() whitespace within ASCII: \t \n \v \f \r, \x1c-\x1f, space
    return c == 32 or 9 <= c <= 13 or 28 <= c <= 31


cdef class WordTable:
    """Immutable map from token (UTF-8 bytes) to id; safe to probe from many threads."""

    cdef bytes _text             # every token's bytes, back to back
    cdef const uint8_t* _ptr     # into _text, which this object keeps alive
    cdef int64_t[::1] _start
    cdef int64_t[::1] _len
    cdef int32_t[::1] _ids
    cdef int64_t[::1] _slots     # entry number, or -1 for an empty slot
    cdef uint64_t _mask

    def __init__(self, tokens, ids):
        """``tokens``: distinct ``bytes``; ``ids``: their ids, same order."""
        cdef Py_ssize_t n = len(tokens), e
        cdef uint64_t slot
        self._text = b"".join(tokens)
        lens = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=n)
        self._len = lens
        self._start = np.cumsum(lens) - lens
        self._ids = np.asarray(ids, dtype=np.int32)
        if self._ids.shape[0] != n:
            raise ValueError("WordTable: tokens and ids differ in length")
        capacity = 8
        while capacity < 2 * n:
            capacity *= 2
        self._slots = np.full(capacity, -1, dtype=np.int64)
        self._mask = capacity - 1
        self._ptr = self._text
        for e in range(n):
            if self._find(self._ptr + self._start[e], self._len[e]) >= 0:
                raise ValueError(f"WordTable: duplicate token {tokens[e]!r}")
            slot = _fnv1a(self._ptr + self._start[e], self._len[e]) & self._mask
            while self._slots[slot] >= 0:
                slot = (slot + 1) & self._mask
            self._slots[slot] = e

    cdef inline Py_ssize_t _find(self, const uint8_t* p, Py_ssize_t n) noexcept nogil:
        """Entry number of the token p[:n], or -1."""
        cdef uint64_t slot = _fnv1a(p, n) & self._mask
        cdef int64_t e
        while True:
            e = self._slots[slot]
            if e < 0:
                return -1
            if self._len[e] == n and memcmp(self._ptr + self._start[e], p, n) == 0:
                return e
            slot = (slot + 1) & self._mask

    def __len__(self):
        return self._ids.shape[0]

    def lookup(self, bytes token, int32_t missing=-1):
        """The id of ``token``, or ``missing``."""
        cdef Py_ssize_t e = self._find(token, len(token))
        return missing if e < 0 else self._ids[e]


cdef void _finish_row(int32_t[:, ::1] ids, uint8_t[:, ::1] mask, Py_ssize_t r, Py_ssize_t k,
                      int32_t pad_id) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(k):
        mask[r, c] = 1
    for c in range(k, ids.shape[1]):
        ids[r, c] = pad_id
        mask[r, c] = 0


cdef int _check(Py_ssize_t n, const int64_t[::1] lengths, Py_ssize_t data_len, int32_t[:, ::1] ids,
                int32_t[:] length, uint8_t[:, ::1] mask, int specials) except -1:
    cdef Py_ssize_t r, total = 0
    for r in range(n):
        if lengths[r] < 0:
            raise ValueError("negative text length")
        if lengths[r] > data_len - total:   # (not total + length > data_len: the sum may wrap)
            raise ValueError(f"lengths sum past the {data_len} bytes data holds, at text {r}")
        total += lengths[r]
    if total != data_len:
        raise ValueError(f"lengths sum to {total} bytes but data holds {data_len}")
    if ids.shape[0] < n or length.shape[0] < n or mask.shape[0] < n:
        raise ValueError(f"output rows too few for {n} texts: ids {ids.shape[0]}, "
                         f"length {length.shape[0]}, mask {mask.shape[0]}")
    if mask.shape[1] != ids.shape[1]:
        raise ValueError(f"mask width {mask.shape[1]} != ids width {ids.shape[1]}")
    if ids.shape[1] < specials:
        raise ValueError(f"row width {ids.shape[1]} cannot hold the {specials} bos/eos ids")
    return 0


def encode_words(bytes data, const int64_t[::1] lengths, WordTable table,
                 int32_t[:, ::1] ids, int32_t[:] length, uint8_t[:, ::1] mask,
                 int32_t pad_id, int32_t unk_id, int32_t bos_id=-1, int32_t eos_id=-1):
    """Split each text on whitespace, look words up (unknown -> unk_id), write rows. bos/eos < 0: none."""
    cdef Py_ssize_t n = lengths.shape[0]
    _check(n, lengths, len(data), ids, length, mask, (bos_id >= 0) + (eos_id >= 0))
    cdef const uint8_t* base = data
    cdef Py_ssize_t r, i, j, k, end, pos = 0, e
    cdef Py_ssize_t limit = ids.shape[1] - (1 if eos_id >= 0 else 0)
    with nogil:
        for r in range(n):
            end = pos + lengths[r]
            k = 0
            if bos_id >= 0:
                ids[r, 0] = bos_id
                k = 1
            i = pos
            while k < limit:
                while i < end and _is_space(base[i]):
                    i += 1
                if i >= end:
                    break
                j = i
                while j < end and not _is_space(base[j]):
                    j += 1
                e = table._find(base + i, j - i)
                ids[r, k] = unk_id if e < 0 else table._ids[e]
                k += 1
                i = j
            if eos_id >= 0:
                ids[r, k] = eos_id
                k += 1
            length[r] = <int32_t>k
            _finish_row(ids, mask, r, k, pad_id)
            pos = end


def encode_bytes(bytes data, const int64_t[::1] lengths,
                 int32_t[:, ::1] ids, int32_t[:] length, uint8_t[:, ::1] mask,
                 int32_t offset, int32_t pad_id, int32_t bos_id=-1, int32_t eos_id=-1):
    """Id of each UTF-8 byte b is b + offset; truncate, add bos/eos, pad, as encode_words."""
    cdef Py_ssize_t n = lengths.shape[0]
    _check(n, lengths, len(data), ids, length, mask, (bos_id >= 0) + (eos_id >= 0))
    cdef const uint8_t* base = data
    cdef Py_ssize_t r, i, k, take, pos = 0
    cdef Py_ssize_t limit = ids.shape[1] - (1 if eos_id >= 0 else 0)
    with nogil:
        for r in range(n):
            k = 0
            if bos_id >= 0:
                ids[r, 0] = bos_id
                k = 1
            take = lengths[r]
            if take > limit - k:
                take = limit - k
            for i in range(take):
                ids[r, k + i] = base[pos + i] + offset
            k += take
            if eos_id >= 0:
                ids[r, k] = eos_id
                k += 1
            length[r] = <int32_t>k
            _finish_row(ids, mask, r, k, pad_id)
            pos += lengths[r]
