"""Combining sources into multi-field records, by position (:func:`zip`) or by key (:func:`join`).

Both fix the pairing once, before any payload is read, as index arrays. A
record that later fails to decode therefore drops *the whole record*, and every
other record keeps its own caption and numbers: the failure mode of zipping
three generators (one bad image shifts every later pairing) cannot happen.

Neither silently loses records: unequal lengths are an error (or a warning
with ``strict=False``), and keys missing from a side of a join are counted and
named in a warning.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Hashable

import numpy as np

from ..errors import RecordError
from ..pipeline.fluent import Fluent
from .base import ListSource, Source
from .paths import labelled

__all__ = ["zip", "join", "stem", "key_by", "KeyedSource", "ZippedSource", "JoinedSource"]

_SHOW = 5  # keys quoted in a warning


def _as_source(name: str, obj) -> Source:
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, Fluent) or not hasattr(obj, "__getitem__") or not hasattr(obj, "__len__"):
        raise TypeError(f"source {name!r} ({type(obj).__name__}) is not random-access; "
                        "zip and join need sources with len() and indexing")
    return ListSource(obj, name=name)


def _pair_part(parts: dict[str, Source], how: str) -> str | None:
    """The part whose records are ``(value, label)`` pairs (an ImageFolder's, or an array source's
    ``(x, y)``), if any: its record gives two fields, the value under the part's name and the class
    index under ``"label"``, so that both reach fields= (a tuple would reach an image field whole)."""
    paired = [name for name, p in parts.items() if p.pairs]
    if not paired:
        return None
    if len(paired) > 1 or "label" in parts:
        clash = f"parts {paired} each" if len(paired) > 1 else f"part {paired[0]!r}"
        raise ValueError(f"{how}: {clash} gives (value, label) records, whose label becomes the field "
                         f"'label'{', as does the part named so' if 'label' in parts else ''}: keep one "
                         "labelled part (an ImageFiles of the other's images has no label)")
    return paired[0]


def _take_parts(src: Source, parts: dict[str, Source], how: str) -> None:
    """A zipped or joined source's parts, fields, and (through a labelled part) classes."""
    src.parts = parts
    src._pair = _pair_part(parts, how)
    src.fields = tuple(parts) + (("label",) if src._pair else ())
    if src._pair and hasattr(parts[src._pair], "classes"):
        src.classes = parts[src._pair].classes   # for a "onehot" label field


def _record(pair: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """A zipped or joined record from its parts' records (None: a left join's missing part)."""
    if pair is not None:
        value = values[pair]
        values[pair], values["label"] = (None, None) if value is None else value
    return values


def _single_labels(parts: dict[str, Source], rows: dict[str, np.ndarray]) -> np.ndarray | None:
    """Labels of the one part that has them, gathered at ``rows``; None if zero or several parts do."""
    found = [(name, lab) for name, lab in ((n, p.labels()) for n, p in parts.items()) if lab is not None]
    if len(found) != 1:
        return None
    name, lab = found[0]
    idx = rows[name]
    return None if (idx < 0).any() else np.asarray(lab)[idx]


class ZippedSource(Source):
    """Record ``i`` is ``{name: part[i]}`` for every named part."""

    def __init__(self, parts: dict[str, Source], length: int):
        _take_parts(self, parts, "zip")
        self._n = length

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check_index(index)
        return _record(self._pair, {name: part[index] for name, part in self.parts.items()})

    def gather(self, indices: np.ndarray) -> list[dict[str, Any]]:
        """Bulk read: each part fetches its rows with its own (possibly faster) ``gather``."""
        columns = {name: part.gather(indices) for name, part in self.parts.items()}
        return [_record(self._pair, {name: col[j] for name, col in columns.items()})
                for j in range(len(indices))]

    def record_id(self, index: int) -> str:
        index = self._check_index(index)
        return " | ".join(f"{name}={part.record_id(index)}" for name, part in self.parts.items())

    def labels(self) -> np.ndarray | None:
        rows = np.arange(self._n)
        return _single_labels(self.parts, {name: rows for name in self.parts})

    def local_listing(self):
        """The local files of the parts that list theirs (see :meth:`Source.local_listing`), each
        name after its part's: ranks compare them as a folder's."""
        listed = {name: listing.relative()[:self._n] for name, listing in _listings(self.parts)}
        return labelled(listed) if listed else None


def zip(*sources, strict: bool = True, **named) -> ZippedSource:  # noqa: A001 - fl.zip mirrors builtins.zip
    """Pair records by position into dict records; positional sources are named "0", "1", ...

    With ``strict=True`` (the default) sources of unequal length are an error
    naming every source and its length. ``strict=False`` truncates to the
    shortest and warns how many records each longer source loses.
    """
    parts = {str(i): s for i, s in enumerate(sources)}
    for name in named:
        if name in parts:
            raise TypeError(f"zip: field name {name!r} given twice")
    parts.update(named)
    if not parts:
        raise TypeError("zip needs at least one source")
    parts = {name: _as_source(name, s) for name, s in parts.items()}
    lengths = {name: len(s) for name, s in parts.items()}
    shortest = min(lengths.values())
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        if strict:
            raise ValueError(f"zip: sources have different lengths ({desc}); "
                             "fix the data, use join() to align by key, or pass strict=False to truncate")
        lost = ", ".join(f"{name} loses {n - shortest}" for name, n in lengths.items() if n > shortest)
        warnings.warn(f"zip(strict=False): truncating to the shortest source ({shortest} records; {desc}); {lost}",
                      stacklevel=2)
    return ZippedSource(parts, shortest)


def stem(path_or_record) -> str:
    """The file name without directory or extension: ``"a/b/cat_01.jpg"`` -> ``"cat_01"``.

    Accepts a path, a ``(path, label)`` tuple, or a dict record with a "path" field,
    so it can key an image source directly.
    """
    value = path_or_record
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    elif isinstance(value, dict) and "path" in value:
        value = value["path"]
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"stem() needs a path, a (path, label) record or a dict with 'path'; got {type(value).__name__}")
    return os.path.splitext(os.path.basename(os.fspath(value)))[0]


UNREAD = object()   # the key of a record join(on_error="skip") could not read or key


class KeyedSource(Source):
    """A source whose records each carry a join key: ``key(record)`` or ``record[key]``.

    Keys are computed on first use (which reads every record once: for a JSON
    Lines source that parses every line) and cached.
    """

    def __init__(self, source: Source, key: Callable[[Any], Hashable] | str):
        self.source = _as_source("keyed", source)
        self.key = key
        self.fields, self.pairs = self.source.fields, self.source.pairs
        self._keys: list[Hashable] | None = None
        self._unread: list[RecordError] = []   # the records keys(skip=True) could not read

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Any:
        return self.source[index]

    def record_id(self, index: int) -> str:
        return self.source.record_id(index)

    def labels(self) -> np.ndarray | None:
        return self.source.labels()

    def local_listing(self):
        return self.source.local_listing()

    def keys(self, skip: bool = False) -> list[Hashable]:
        """The key of every record, in order. A record without one is a RecordError naming it (and
        a record that cannot be read raises its own); with ``skip``, its key is ``UNREAD`` instead."""
        if self._keys is None or (not skip and self._unread):
            keys, self._unread = [], []
            for i in range(len(self.source)):
                try:
                    keys.append(self._key_of(i))
                except RecordError as e:
                    if not skip:
                        raise
                    self._unread.append(e)
                    keys.append(UNREAD)
            self._keys = keys
        return self._keys

    def _key_of(self, index: int) -> Hashable:
        record, key = self.source[index], self.key
        try:
            k = key(record) if callable(key) else record[key]
        except Exception as e:   # a missing field, a record of another shape, the function's own
            why = f"no field {key!r}" if isinstance(e, KeyError) and not callable(key) else \
                f"its key cannot be taken ({type(e).__name__}: {e})"
            raise RecordError(self.source.record_id(index), f"join: {why}") from e
        try:
            hash(k)
        except TypeError:   # a JSON list or object as the id
            raise RecordError(self.source.record_id(index), f"join: its key {k!r} is a {type(k).__name__}, "
                              "which cannot be a key: key_by a function that returns a hashable "
                              "value (a str, a number, a tuple)") from None
        return k


def key_by(source: Source, key: Callable[[Any], Hashable] | str) -> KeyedSource:
    """Attach a join key to ``source``: a function of the record, or the name of a dict field."""
    return KeyedSource(source, key)


def _key_index(name: str, src: KeyedSource, skip: bool) -> dict[Hashable, int]:
    index: dict[Hashable, int] = {}
    for i, k in enumerate(src.keys(skip)):
        if k is UNREAD:
            continue
        j = index.setdefault(k, i)
        if j != i:
            raise ValueError(f"join: duplicate key {k!r} in source {name!r} "
                             f"({src.record_id(j)} and {src.record_id(i)})")
    return index


class JoinedSource(Source):
    """Record ``i`` is ``{name: part[rows[name][i]]}``; a row of -1 (left join) gives None."""

    def __init__(self, parts: dict[str, Source], rows: dict[str, np.ndarray], keys: list[Hashable]):
        _take_parts(self, parts, "join")
        self.rows = rows
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check_index(index)
        out = {}
        for name, part in self.parts.items():
            row = int(self.rows[name][index])
            out[name] = None if row < 0 else part[row]
        return _record(self._pair, out)

    def record_id(self, index: int) -> str:
        index = self._check_index(index)
        where = ", ".join(f"{name}={part.record_id(int(self.rows[name][index]))}"
                          for name, part in self.parts.items() if self.rows[name][index] >= 0)
        return f"key {self.keys[index]!r} ({where})"

    def labels(self) -> np.ndarray | None:
        return _single_labels(self.parts, self.rows)

    def local_listing(self):
        """The local files of the parts that list theirs at the rows joined (see
        :meth:`Source.local_listing`), each name after its part's."""
        listed = {name: listing.relative().take(self.rows[name][self.rows[name] >= 0])
                  for name, listing in _listings(self.parts)}
        return labelled(listed) if listed else None


def _listings(parts: dict[str, Source]):
    for name, part in parts.items():
        listing = part.local_listing()
        if listing is not None:
            yield name, listing


def join(how: str = "inner", on_error: str = "raise", **named: KeyedSource) -> JoinedSource:
    """Align keyed sources by key into dict records, in the key order of the first source.

    ``how="inner"`` keeps keys present in every source. ``how="left"`` keeps
    every record of the first source and puts None in the fields of sources
    that lack its key (a field then reports that record as failed, so a skip
    policy drops it). Either way, keys missing from any source are counted and
    the first few named in a warning; a key repeated within a source is an error.

    The keys are read when the join is made: a record that cannot be read or
    keyed (a malformed JSON line) is an error naming it, or under
    ``on_error="skip"`` is left out of its source, as if its key were missing
    there, and counted in a warning that names the first few.
    """
    if how not in ("inner", "left"):
        raise ValueError(f"join: how must be 'inner' or 'left', got {how!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"join: on_error must be 'raise' or 'skip', got {on_error!r}")
    if not named:
        raise TypeError("join needs at least one keyed source, e.g. join(image=key_by(images, stem), ...)")
    for name, src in named.items():
        if not isinstance(src, KeyedSource):
            raise TypeError(f"join: source {name!r} has no key; wrap it with key_by(source, key)")
    indexes = {name: _key_index(name, src, on_error == "skip") for name, src in named.items()}
    unread = [(name, e) for name, src in named.items() for e in src._unread]
    if unread:
        shown = "; ".join(f"{name}: {e}" for name, e in unread[:_SHOW])
        warnings.warn(f"join(on_error='skip'): {len(unread)} records could not be read for their keys and "
                      f"are left out ({shown})", stacklevel=2)
    first = next(iter(named))
    every = list(indexes[first])
    seen = set(every)
    for name, index in indexes.items():
        for k in index:
            if k not in seen:
                seen.add(k)
                every.append(k)
    missing = {name: [k for k in every if k not in index] for name, index in indexes.items()}
    if how == "inner":
        keys = [k for k in indexes[first] if all(k in index for index in indexes.values())]
    else:
        keys = list(indexes[first])
    if any(missing.values()):
        desc = "; ".join(f"missing from {name!r}: {len(ks)} (first: {', '.join(map(repr, ks[:_SHOW]))})"
                         for name, ks in missing.items() if ks)
        if how == "inner":
            what = f"{len(every) - len(keys)} of {len(every)} keys are not in every source and were dropped"
        else:
            filled = sum(1 for k in keys if any(k not in index for index in indexes.values()))
            what = (f"{len(every) - len(keys)} of {len(every)} keys are not in the first source {first!r} and "
                    f"were dropped; {filled} records are kept with None in their missing fields")
        warnings.warn(f"join(how={how!r}): {what}. {desc}", stacklevel=2)
    rows = {name: np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
            for name, index in indexes.items()}
    parts = {name: src.source for name, src in named.items()}
    return JoinedSource(parts, rows, keys)

