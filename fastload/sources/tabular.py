"""Numeric rows of a CSV file, parsed once into one float array.

Why parse up front rather than index offsets like JSON Lines: a CSV of numbers
is compact (a million rows of 32 float32 features is 128 MB), and parsing it
once turns every later ``src[i]`` into an array view instead of a ``csv`` +
``float()`` round trip per sample per epoch. The file is still read as a
stream (the ``csv`` reader pulls one line at a time), converted a block of rows
at a time.

A malformed row (wrong number of fields, a value that is not a number, bytes
that are not UTF-8, a field over ``csv.field_size_limit()``) does not fail the
file: it is recorded with its line number and reason, and reading it raises
:class:`~fastload.errors.RecordError` naming ``path:line N``, so a loader's skip
policy drops that one record and keeps the rest aligned. Bytes that are not
UTF-8 in a column left out by ``columns=`` are no error: that column is never
parsed. On Python before 3.11 the ``csv`` module refuses any line holding a NUL
byte, even in a column left out.
"""
from __future__ import annotations

import csv
import io
import itertools
import operator
import os
from typing import Sequence

import numpy as np

from ..errors import RecordError
from .base import Source
from .remote import local_copy

__all__ = ["CSVRows"]

_BLOCK = 4096  # rows converted per NumPy call


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _not_utf8(text: str) -> bytes | None:
    """The bytes of ``text`` when some were not UTF-8 (read with surrogateescape), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return None


def _row_problem(row: list[str] | str, width: int, keep: list[int]) -> str:
    """Why ``row`` cannot become a numeric row: ``width`` fields, the ``keep`` ones numbers.
    A str is the reason the csv module refused the record."""
    if isinstance(row, str):
        return row
    if len(row) != width:
        return f"expected {width} fields, found {len(row)}"
    for col in keep:
        if not _is_number(row[col]):
            raw = _not_utf8(row[col])
            if raw is not None:
                return f"column {col}: not UTF-8 text: {raw!r}"
            return f"column {col}: not a number: {row[col]!r}"
    return ""


def _blocks(reader, size: int):
    """``(first lines, rows, refused)`` of up to ``size`` records that are not blank lines: a quoted
    field may span lines, and a record is named by the line it starts on. A record the csv module
    refuses (a field over its size limit) is the reason, a str, in place of its fields: it fails
    alone, the reader goes on at the next line (inside a quoted field, the field's later lines are
    read as records of their own); ``refused`` says whether the block holds one."""
    end, lines, rows, refused = 0, [], [], False
    while True:
        if len(rows) >= size:   # (a record refused may have filled it)
            yield lines, rows, refused
            lines, rows, refused = [], [], False
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                if row and (len(row) > 1 or row[0].strip()):   # a line of spaces is blank too
                    lines.append(start)
                    rows.append(row)
                    if len(rows) == size:
                        yield lines, rows, refused
                        lines, rows, refused = [], [], False
            break
        except csv.Error as e:
            start, end = end + 1, reader.line_num
            hint = "; csv.field_size_limit(n) raises the limit" if "field limit" in str(e) else ""
            lines.append(start)
            rows.append(f"malformed CSV: {e}{hint}")
            refused = True
    if rows:
        yield lines, rows, refused


class CSVRows(Source):
    """Each data row of a CSV file as a 1-D float array (a read-only view).

    Args:
        path: the file.
        header: ``"auto"`` (a first row with no numeric field is a header, a
            fully numeric one is data, a mixed one is an error asking you to
            say which), ``True``, ``False``, or a list of column names (the
            file then has no header row).
        columns: keep only these columns, by name or index, in this order; only
            they are parsed, so the others may hold text (names, ids).
        dtype: a floating dtype for the values.
        delimiter: field separator.

    ``.columns`` holds the column names (``"0"``, ``"1"``, ... without a
    header); ``.errors`` maps the index of each malformed row to its reason.
    Blank lines (empty, or only spaces and tabs) are not records.
    """

    def __init__(self, path: str | os.PathLike, *, header: bool | str | Sequence[str] = "auto",
                 columns: Sequence[str | int] | None = None, dtype="float32", delimiter: str = ",",
                 **storage):
        self.path = os.fspath(path)          # a URL stays the name rows are reported under
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"CSVRows dtype must be floating, got {self.dtype}")
        if not (header in ("auto", True, False) or isinstance(header, (list, tuple))):
            raise ValueError(f"header must be 'auto', True, False or a list of names, got {header!r}")
        # utf-8-sig: a byte-order mark (Excel writes one) must not become part of the first column's name;
        # surrogateescape: a byte that is not UTF-8 fails its row if in a kept column, not the whole file
        _, fd = local_copy(self.path, "CSVRows", **storage)
        with io.TextIOWrapper(io.FileIO(fd, closefd=True), encoding="utf-8-sig", errors="surrogateescape",
                              newline="") as f:
            blocks = _blocks(csv.reader(f, delimiter=delimiter), _BLOCK)
            head = next(blocks, ([], [], False))
            first = (head[0][0], head[1][0]) if head[0] else None
            if first is not None and isinstance(first[1], str) and not isinstance(header, (list, tuple)):
                raise ValueError(f"{self.path}:line {first[0]}: {first[1]} (in the first row, which names "
                                 "or counts the columns)")
            names, first_is_data = self._resolve_header(first and first[1], header)
            # only the columns kept are parsed: a column of names or ids beside them is no error
            keep = self._keep(columns, names)
            if first is not None and not first_is_data:
                self._check_names(first[0], names, keep)
                head = (head[0][1:], head[1][1:], head[2])
            self._read(itertools.chain([head], blocks), names, keep)

    def _resolve_header(self, first: list[str] | None, header) -> tuple[list[str], bool]:
        if first is None:
            return (list(header) if isinstance(header, (list, tuple)) else []), False
        if isinstance(header, (list, tuple)):
            return list(header), True
        if header == "auto":
            numeric = [_is_number(t) for t in first]
            if all(numeric):
                header = False
            elif not any(numeric):
                header = True
            else:
                raise ValueError(f"{self.path}:line 1 mixes numbers and text ({first!r}); "
                                 "pass header=True or header=False")
        if header:
            return [t.strip() for t in first], False
        return [str(i) for i in range(len(first))], True

    def _check_names(self, line: int, names: list[str], keep: list[int]) -> None:
        for i in keep:
            raw = _not_utf8(names[i])
            if raw is not None:
                raise ValueError(f"{self.path}:line {line}: the name of column {i} is not UTF-8 text ({raw!r}); "
                                 "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or leave the "
                                 "column out with columns=")

    def _read(self, blocks, names: list[str], keep: list[int]) -> None:
        width = len(names)
        every = keep == list(range(width))
        pick = operator.itemgetter(*keep) if len(keep) > 1 else (lambda row: (row[keep[0]],)) if keep else None
        parts, lines, self.errors = [], [], {}
        for row_lines, rows, refused in blocks:
            if not rows:   # a file of a header alone
                continue
            block = np.full((len(rows), len(keep)), np.nan, dtype=self.dtype)
            try:
                # float() of each cell, as NumPy converts str objects (its str_ dtype parses on its
                # own: it dropped a trailing NUL); a refused record (a str) or a row of another
                # width fails the block, which is then converted row by row to find it.
                if refused or set(map(len, rows)) - {width}:
                    raise ValueError("a row refused, or of another width")
                if keep:
                    block[...] = np.array(rows if every else list(map(pick, rows)), dtype=np.float64)
            except ValueError:
                start = sum(len(b) for b in parts)
                for k, row in enumerate(rows):
                    problem = _row_problem(row, width, keep)
                    if problem:
                        self.errors[start + k] = problem
                    else:
                        block[k] = [float(row[i]) for i in keep]
            parts.append(block)
            lines.append(np.asarray(row_lines, dtype=np.int64))
        self.data = np.concatenate(parts) if parts else np.zeros((0, len(keep)), self.dtype)
        self.data.flags.writeable = False
        self._lines = np.concatenate(lines) if lines else np.zeros(0, np.int64)
        self.columns = tuple(names[i] for i in keep)

    def _keep(self, columns, names: list[str]) -> list[int]:
        """The indices of ``columns`` (names or indices) among ``names``; every one for None."""
        if columns is None:
            return list(range(len(names)))
        index = []
        for c in columns:
            if isinstance(c, (int, np.integer)):
                if not -len(names) <= c < len(names):
                    raise IndexError(f"{self.path}: column {c} out of range for {len(names)} columns")
                index.append(int(c) % len(names))
            elif names.count(c) > 1:
                raise KeyError(f"{self.path}: column {c!r} is named {names.count(c)} times in the header; "
                               f"give it by index: {[i for i, n in enumerate(names) if n == c]}")
            elif c in names:
                index.append(names.index(c))
            else:
                raise KeyError(f"{self.path}: no column {c!r}; columns are {list(names)}")
        return index

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> np.ndarray:
        index = self._check_index(index)
        if index in self.errors:
            raise RecordError(self.record_id(index), self.errors[index])
        return self.data[index]

    def record_id(self, index: int) -> str:
        return f"{self.path}:line {self._lines[self._check_index(index)]}"

    def __repr__(self) -> str:
        return f"CSVRows({self.path!r}, {len(self)} rows x {len(self.columns)} columns, {len(self.errors)} malformed)"
