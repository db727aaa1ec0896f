"""Records from arrays already in memory (or memory-mapped), and from one-pass streams.

:class:`ArrayRecords` is random access: a record is a row view, so an
``np.memmap`` of any size is read one row at a time, when that row is used.

:class:`IterableRecords` wraps what cannot be indexed (a database cursor, a
network stream). It is a stream, not a :class:`~fastload.sources.base.Source`:
it cannot be shuffled by index or split, and it has a length only when told.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..pipeline.fluent import Fluent
from .base import Source

__all__ = ["ArrayRecords", "IterableRecords"]


class ArrayRecords(Source):
    """Row ``i`` of one array, a tuple of rows of several, or a dict of rows of named arrays.

    ``ArrayRecords(x)`` gives ``x[i]``; ``ArrayRecords(x, y)`` gives ``(x[i], y[i])``;
    ``ArrayRecords(image=x, label=y)`` gives ``{"image": x[i], "label": y[i]}``.
    Every array must have the same first dimension. A 1-D integer array named
    ``label`` (or the last of several positional arrays) is reported by
    :meth:`labels`, so :func:`~fastload.split` can stratify on it.
    """

    def __init__(self, *arrays, **named):
        if arrays and named:
            raise TypeError("ArrayRecords takes positional arrays or named arrays, not both")
        if not arrays and not named:
            raise TypeError("ArrayRecords needs at least one array")
        self._named = bool(named)
        items = named if named else {str(i): a for i, a in enumerate(arrays)}
        self.arrays = {k: a if isinstance(a, np.ndarray) else np.asarray(a) for k, a in items.items()}
        lengths = {k: (a.shape[0] if a.ndim else None) for k, a in self.arrays.items()}
        if None in lengths.values() or len(set(lengths.values())) != 1:
            desc = ", ".join(f"{k}: {'scalar' if n is None else n}" for k, n in lengths.items())
            raise ValueError(f"ArrayRecords arrays must share their first dimension; got {desc}")
        self._n = next(iter(lengths.values()))
        self.fields = tuple(self.arrays) if named else None
        self.pairs = not named and len(self.arrays) == 2 and self.labels() is not None   # (x, y) tuples

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Any:
        index = self._check_index(index)
        if self._named:
            return {k: a[index] for k, a in self.arrays.items()}
        rows = tuple(a[index] for a in self.arrays.values())
        return rows[0] if len(rows) == 1 else rows

    def labels(self) -> np.ndarray | None:
        if self._named:
            lab = self.arrays.get("label")
        else:
            lab = list(self.arrays.values())[-1] if len(self.arrays) > 1 else None
        if lab is None or lab.ndim != 1 or lab.dtype.kind not in "iu":
            return None
        return np.asarray(lab, dtype=np.int64)


class IterableRecords(Fluent):
    """Records from an iterable, or from a zero-argument factory called at every pass.

    Give a factory (``lambda: cursor.execute(query)``) to iterate more than once:
    each ``iter()`` calls it afresh. A one-shot iterator can be passed through
    only once; a second pass raises rather than yielding an empty epoch.

    ``len()`` works only when ``length`` is given, and then the stream is held
    to it: yielding more or fewer records raises ``ValueError``.
    """

    def __init__(self, iterable_or_factory: Iterable[Any] | Callable[[], Iterable[Any]], length: int | None = None):
        self._factory = iterable_or_factory if callable(iterable_or_factory) else None
        self._iterable = None if self._factory else iterable_or_factory
        self.one_shot = self._factory is None and iter(iterable_or_factory) is iterable_or_factory
        self._spent = False
        self.length = None if length is None else int(length)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("IterableRecords has no length; pass length= if the stream's size is known")
        return self.length

    def __iter__(self) -> Iterator[Any]:
        if self._factory is not None:
            source = self._factory()
        else:
            if self.one_shot and self._spent:
                raise RuntimeError("this IterableRecords wraps a one-shot iterator that was already consumed; "
                                   "pass a factory (a function returning a fresh iterator) to iterate again")
            self._spent = True
            source = self._iterable
        return self._checked(iter(source))

    def _checked(self, it: Iterator[Any]) -> Iterator[Any]:
        count = 0
        for record in it:
            count += 1
            if self.length is not None and count > self.length:
                raise ValueError(f"IterableRecords yielded more than its declared length {self.length}")
            yield record
        if self.length is not None and count != self.length:
            raise ValueError(f"IterableRecords yielded {count} records, declared length {self.length}")
