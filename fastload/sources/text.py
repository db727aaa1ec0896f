"""Records from a JSON file: a JSON array, or JSON Lines streamed line by line.

JSON Lines is the format to use for anything large. Opening one reads the file
once, in fixed-size chunks, to index the byte offset of every non-blank line
(16 bytes of index per record, 24 where blank lines shift the line numbers; at
the speed of a NumPy scan for its newlines); ``src[i]`` then reads that one line with
``os.pread`` and parses it. The file is never held in memory, and ``pread``
carries its own offset, so worker threads share one descriptor without a lock
(Windows, which has no ``pread``, takes one: :mod:`fastload.sources._files`).

A JSON array cannot be cut into records without parsing it, so it is loaded
whole with the :mod:`json` module: fine for thousands of captions, wrong for a
multi-gigabyte corpus (convert that to JSON Lines).

A UTF-8 byte-order mark at the start of the file (Windows tools write one) is
skipped, as ``encoding="utf-8-sig"`` would: it is neither a record nor part of
the first one.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any

import numpy as np

from ..errors import RecordError
from . import _files
from .base import Source
from .remote import local_copy

__all__ = ["JSONRecords"]

_CHUNK = 1 << 20
_DECODER = json.JSONDecoder()
_BOM = b"\xef\xbb\xbf"


def _has_bom(f) -> bool:
    f.seek(0)
    return f.read(3) == _BOM


def _first_char(f) -> str:
    """The first non-whitespace character of binary file ``f`` after any byte-order mark ('' when there is none)."""
    f.seek(len(_BOM) if _has_bom(f) else 0)
    while chunk := f.read(4096):
        stripped = chunk.lstrip()
        if stripped:
            return chr(stripped[0])
    return ""


def _index_lines(f, chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(start, end, line number) of every non-blank line of binary file ``f``, reading ``chunk_size``
    bytes at a time; the line numbers are None when no line is blank (line i + 1 is record i).

    A line is blank when it holds only JSON whitespace. Each chunk is cut at its
    newlines and one ``logical_or.reduceat`` over its non-whitespace bytes tells
    which of its lines hold any (a line's newline is whitespace, so it can be
    counted in); a line that runs on into the next chunk carries its start and
    whether it held anything so far.
    """
    starts, ends, numbers = [], [], []
    buf = bytearray(max(chunk_size, len(_BOM)))
    bom = _has_bom(f)
    f.seek(0)
    base = 0
    line_start, line_has, line_no = (len(_BOM) if bom else 0), False, 1   # the line begun, not yet ended
    blanks = False
    while n := f.readinto(buf):
        arr = np.frombuffer(buf, dtype=np.uint8, count=n)
        nl = np.flatnonzero(arr == 10)
        filled = arr > 32
        # Bytes below 32 other than whitespace (not JSON; the line is a record that fails): the
        # exact test only where they may be, three times the cost of the counts that rule them out.
        others = np.count_nonzero(arr < 32) - len(nl)
        if others and others != np.count_nonzero(arr == 13) + np.count_nonzero(arr == 9):
            filled |= (arr < 32) & (arr != 9) & (arr != 10) & (arr != 13)
        if bom and base == 0:
            filled[: len(_BOM)] = False   # the mark is not content: a line of only the mark is blank
        cuts = np.concatenate([[0], nl + 1])
        if cuts[-1] == n:   # the chunk ends with a newline: no line begun after it here
            cuts = cuts[:-1]
        has = np.logical_or.reduceat(filled, cuts)   # cuts holds 0 at least: n > 0
        has[0] |= line_has
        if len(nl):   # lines ended in this chunk: the one carried in, then one after each newline but the last
            line_starts = np.concatenate([[line_start], nl[:-1] + 1 + base])
            kept = has[:len(nl)]
            blanks = blanks or not kept.all()
            starts.append(line_starts[kept])
            ends.append(nl[kept] + base)
            numbers.append(np.flatnonzero(kept) + line_no)
            line_no += len(nl)
            line_start = int(nl[-1]) + 1 + base
            line_has = bool(has[len(nl)]) if len(has) > len(nl) else False
        else:
            line_has = bool(has[0])
        base += n
    if line_has:   # the last line, without a newline at its end
        starts.append(np.array([line_start]))
        ends.append(np.array([base]))
        numbers.append(np.array([line_no]))

    def joined(parts):
        return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, np.int64)
    return joined(starts), joined(ends), joined(numbers) if blanks else None


class JSONRecords(Source):
    """One record per JSON Lines line or JSON array element.

    Args:
        path: the file.
        field: return ``record[field]`` instead of the whole object; a record
            that is not an object or lacks the key raises :class:`RecordError`.
        lines: True for JSON Lines, False for a JSON array, None to decide from
            the extension (``.jsonl``/``.ndjson``) or else the first
            non-whitespace character (``[`` means an array).
        chunk_size: bytes read at a time while indexing JSON Lines.

    A malformed line raises :class:`RecordError` naming ``path:line N`` when it
    is read, so a loader's error policy can skip just that record. Blank lines
    are not records.
    """

    def __init__(self, path: str | os.PathLike, field: str | None = None, *,
                 lines: bool | None = None, chunk_size: int = _CHUNK, **storage):
        self.path = os.fspath(path)          # a URL stays the name records are reported under
        # Held open while this source lives: a copy in a disk cache may be evicted, the descriptor
        # still reads it. Another process (unpickled) opens it anew, fetching it again if need be.
        self._local, self._fd = local_copy(self.path, "JSONRecords", **storage)
        self._storage = storage
        self._fd_lock = threading.Lock()
        self.field = field
        with open(self._fd, "rb", closefd=False) as f:
            if lines is None:
                ext = os.path.splitext(self.path)[1].lower()
                lines = ext in (".jsonl", ".ndjson") or _first_char(f) != "["
            self.lines = bool(lines)
            if self.lines:
                self._starts, self._ends, self._lineno = _index_lines(f, chunk_size)
                self._items = None
                return
            f.seek(0)
            text = f.read()
        self._close()   # an array is read whole
        try:
            items = json.loads(text.decode("utf-8-sig"))
        except json.JSONDecodeError as e:
            raise RecordError(f"{self.path}:line {e.lineno}", f"malformed JSON: {e.msg}") from e
        except UnicodeDecodeError as e:
            bom = 3 if text.startswith(b"\xef\xbb\xbf") else 0   # decoded with utf-8-sig: offsets after it
            raise RecordError(self.path, f"not UTF-8 text at byte {e.start + bom}") from e
        except (ValueError, RecursionError) as e:   # valid JSON Python will not read: see _parse
            raise RecordError(self.path, f"unreadable JSON: {e}") from e
        if not isinstance(items, list):
            raise RecordError(self.path, f"expected a JSON array, found {type(items).__name__}")
        self._items = items

    def __len__(self) -> int:
        return len(self._starts) if self.lines else len(self._items)

    def record_id(self, index: int) -> str:
        index = self._check_index(index)
        if self.lines:
            return f"{self.path}:line {index + 1 if self._lineno is None else self._lineno[index]}"
        return f"{self.path}[{index}]"

    def __getitem__(self, index: int) -> Any:
        index = self._check_index(index)
        if not self.lines:
            return self._select(self._items[index], index)
        start, end = int(self._starts[index]), int(self._ends[index])
        return self._parse(_files.pread(self._descriptor(), end - start, start, self._fd_lock), index)

    def gather(self, indices: np.ndarray) -> list:
        """Bulk read for a loader chunk: one ``pread`` and one parse per line, no per-record Python indexing."""
        if not self.lines:
            return [self[i] for i in indices.tolist()]
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"JSONRecords indices out of range for {len(self)} records")
        fd, starts, ends = self._descriptor(), self._starts[idx].tolist(), self._ends[idx].tolist()
        lock = self._fd_lock
        return [self._parse(_files.pread(fd, e - s, s, lock), i) for i, s, e in zip(idx.tolist(), starts, ends)]

    def _parse(self, raw: bytes, index: int) -> Any:
        # raw_decode on a str skips json.loads' encoding sniffing and whitespace regex: ~2x faster per line
        try:
            text = raw.decode("utf-8").strip()
            value, end = _DECODER.raw_decode(text)
            if end != len(text):
                raise json.JSONDecodeError("extra data after the value", text, end)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RecordError(self.record_id(index), f"malformed JSON: {e}") from e
        except (ValueError, RecursionError) as e:   # valid JSON Python will not read: an integer over
            # sys.get_int_max_str_digits() digits, or nesting deeper than the recursion limit
            raise RecordError(self.record_id(index), f"unreadable JSON: {e}") from e
        return self._select(value, index)

    def _select(self, value: Any, index: int) -> Any:
        if self.field is None:
            return value
        if not isinstance(value, dict) or self.field not in value:
            raise RecordError(self.record_id(index), f"no field {self.field!r} in {type(value).__name__} record")
        return value[self.field]

    def _descriptor(self) -> int:
        if self._fd is None:
            with self._fd_lock:
                if self._fd is None:
                    try:
                        self._fd = _files.open_binary(self._local)
                    except FileNotFoundError:   # a cached copy evicted since: fetched again
                        self._local, self._fd = local_copy(self.path, "JSONRecords", **self._storage)
        return self._fd

    def _close(self, close=os.close) -> None:   # bound now: at interpreter exit os.close may be gone
        if getattr(self, "_fd", None) is not None:
            close(self._fd)
            self._fd = None

    def __getstate__(self):  # a descriptor does not cross a process boundary; reopen lazily
        state = self.__dict__.copy()
        state["_fd"] = None
        del state["_fd_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._fd_lock = threading.Lock()

    def __del__(self):
        self._close()

    def __repr__(self) -> str:
        kind = "JSON Lines" if self.lines else "JSON array"
        return f"JSONRecords({self.path!r}, field={self.field!r}, {kind}, {len(self)} records)"
