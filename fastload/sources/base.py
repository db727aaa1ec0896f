"""The record-source protocol every loader input follows.

A :class:`Source` is a finite, ordered, random-access sequence of records:
``len(src)`` and ``src[i]`` are cheap and read no payload (an image source
returns paths, not pixels). That is what lets a loader shuffle by index, split
deterministically, and resume mid-epoch from nothing but a position.

Records are plain Python values: a path string, a ``(path, label)`` tuple, or a
``dict`` of named fields for multi-field sources. ``record_id(i)`` names record
``i`` in error messages (a path or a key), never its payload.

Streaming stages (``map``, ``filter``, ``batch``, ...) come from
:class:`fastload.pipeline.fluent.Fluent` and return iterables; they give up
random access, so a :class:`~fastload.Loader` takes a Source, not a stream.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import FailedRecord, RecordError, named_record
from ..pipeline.fluent import Fluent
from .paths import PathTable

__all__ = ["Source", "Subset", "ListSource"]


class Source(Fluent):
    """Base class: subclasses implement ``__len__`` and ``__getitem__``."""

    #: Names of the fields of a dict record, or None for plain records.
    fields: tuple[str, ...] | None = None
    #: Whether records are ``(value, label)`` pairs, ``labels()`` giving the labels.
    pairs: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def stream_records(self) -> Iterator[Any]:
        """The records in order, as a stream step over this source reads them: one that cannot be
        read comes as a :class:`~fastload.errors.FailedRecord` naming it, as a stream's does, so the
        step goes on and a Loader's ``on_error`` policy applies (iterating the source raises)."""
        for i in range(len(self)):
            try:
                yield self[i]
            except RecordError as e:   # named as random access names it (a zip's record: every part's)
                where, part = self.record_id(i), str(e.record)
                yield FailedRecord(where if part in where else f"{where}: {part}", e.reason)

    def record_id(self, index: int) -> str:
        """A short, human-readable name of record ``index`` for error messages."""
        return f"{type(self).__name__}[{index}]"

    def gather(self, indices: np.ndarray) -> list:
        """The records at ``indices``; sources override this when a bulk read is cheaper."""
        return [self[i] for i in indices.tolist()]

    def split(self, test_size=None, train_size=None, seed: int = 0, stratify=None):
        """Deterministic, disjoint (train, test) subsets covering every record."""
        from .split import split
        return split(self, test_size=test_size, train_size=train_size, seed=seed, stratify=stratify)

    def key_by(self, key):
        """This source keyed by a field name or a function of the record, for :func:`fastload.join`."""
        from .align import key_by
        return key_by(self, key)

    def labels(self) -> np.ndarray | None:
        """Integer label of every record when the source knows them without reading payloads."""
        return None

    def local_listing(self):
        """The local files this source lists itself (a :class:`~fastload.sources.paths.PathTable`), or None.

        Under ``torch.distributed`` a Loader compares them across ranks: each rank
        lists a local folder on its own machine, where a URL is listed once for all."""
        return None

    def _check_index(self, index: int) -> int:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"{type(self).__name__} index {index} out of range for {n} records")
        return index


class Subset(Source):
    """The records of ``source`` at ``indices``, in that order."""

    def __init__(self, source: Source, indices: Sequence[int]):
        self.source = source
        given = np.asarray(indices)
        # 1.7 read as 1, a mask of booleans as the indices 1 and 0: refused, as NumPy's indexing does
        if given.size and (given.dtype.kind not in "iu" or given.ndim != 1):
            raise TypeError(f"Subset indices must be a list of integers, got {given.dtype} values of shape "
                            f"{given.shape}" + (" (for a mask: np.flatnonzero(mask))" if given.dtype == bool else ""))
        self.indices = given.astype(np.int64).reshape(-1)
        self.fields, self.pairs = source.fields, source.pairs
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(source)):
            raise IndexError("Subset indices out of range")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.source[int(self.indices[self._check_index(index)])]

    def record_id(self, index: int) -> str:
        return self.source.record_id(int(self.indices[self._check_index(index)]))

    def local_listing(self):
        """The parent's listing at this subset's records: ranks that split one folder with other
        seeds hold subsets of the same size and listing, but not the same records."""
        listing = self.source.local_listing()
        if listing is None:
            return None
        return PathTable([listing.take(self.indices)], listing.prefix)

    def labels(self):
        lab = self.source.labels()
        return None if lab is None else lab[self.indices]

    @property
    def paths(self) -> list:
        """The parent's files at this subset's records (the parent's own would pass for them)."""
        parent = self.source.paths   # AttributeError where the parent lists no files: then it has none
        return parent.take(self.indices) if hasattr(parent, "take") else [parent[int(i)] for i in self.indices]

    def __getattr__(self, name):  # classes, vocabularies, ... of the parent
        if name in ("source", "indices", "paths"):
            raise AttributeError(name)
        return getattr(self.source, name)


class ListSource(Source):
    """Records held in a Python sequence."""

    def __init__(self, records: Sequence[Any], name: str = "ListSource"):
        self.records = records
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        return self.records[self._check_index(index)]

    def record_id(self, index: int) -> str:
        return named_record(f"{self.name}[{index}]", self.records[index])
