"""A compact, read-only list of paths for sources with millions of files.

A Python list of ``str`` costs about 130 bytes per path (the object header,
the characters, the list's pointer); a folder source over ImageNet would hold
~170 MB of them in every process that opens it. :class:`PathTable` keeps the
part of each path after a shared prefix (the dataset root) as bytes in one
buffer, with one end offset per path: the name's own length plus 4 bytes.
Paths are decoded on access, which costs well under a microsecond each and is
paid only for the records a batch reads.

Names are stored with :func:`os.fsencode` and read back with
:func:`os.fsdecode`, so names that are not valid UTF-8 round-trip exactly.
"""
from __future__ import annotations

import hashlib
import os
import sys
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["PathTable", "labelled"]

_FS_CODEC = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())   # what os.fsdecode uses


class PathTable(Sequence):
    """An immutable sequence of path strings, all starting with ``prefix``.

    Build it from chunks (e.g. one sorted list per class folder) so that no
    list of every path ever exists at once.
    """

    __slots__ = ("prefix", "_blob", "_ends")

    def __init__(self, chunks: Iterable[Sequence[str]] = (), prefix: str = ""):
        self.prefix = prefix
        blobs, ends, total = [], [], 0
        cut = len(prefix)
        for chunk in chunks:
            if not len(chunk):
                continue
            names = []
            for p in chunk:
                if not p.startswith(prefix):
                    raise ValueError(f"PathTable: {p!r} does not start with the prefix {prefix!r}")
                names.append(os.fsencode(p[cut:]))
            lengths = np.fromiter(map(len, names), dtype=np.int64, count=len(names))
            ends.append(total + np.cumsum(lengths))
            total = int(ends[-1][-1])
            blobs.append(b"".join(names))
        self._blob = b"".join(blobs)
        ends = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        self._ends = ends.astype(np.uint32) if total < 2 ** 32 else ends   # 4 bytes a path when it fits

    @classmethod
    def of(cls, paths: Sequence[str]) -> "PathTable":
        """A table of ``paths`` with their longest common directory as the prefix."""
        paths = [os.fsdecode(p) for p in paths]
        prefix = os.path.commonprefix(paths) if paths else ""
        cut = max(prefix.rfind("/"), prefix.rfind(os.sep)) + 1   # whole directory names only
        return cls([paths], prefix[:cut])

    def __len__(self) -> int:
        return len(self._ends)

    def _name(self, i: int) -> str:
        start = int(self._ends[i - 1]) if i else 0
        return self.prefix + os.fsdecode(self._blob[start:int(self._ends[i])])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._name(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        i = index.__index__()
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"path index {index} out of range for {n} paths")
        return self._name(i)

    def take(self, indices: Iterable[int]) -> list[str]:
        """The paths at ``indices`` (in range, non-negative), as a list."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"path indices out of range for {len(self)} paths")
        ends = self._ends[idx]
        starts = np.where(idx > 0, self._ends[np.maximum(idx - 1, 0)], 0)
        blob, prefix, codec = self._blob, self.prefix, _FS_CODEC
        return [prefix + blob[s:e].decode(*codec) for s, e in zip(starts.tolist(), ends.tolist())]

    def __iter__(self) -> Iterator[str]:
        start, blob, prefix, fsdecode = 0, self._blob, self.prefix, os.fsdecode
        for block in range(0, len(self), 4096):   # offsets as Python ints a block at a time
            for end in self._ends[block:block + 4096].tolist():
                yield prefix + fsdecode(blob[start:end])
                start = end

    def __eq__(self, other):
        if isinstance(other, (PathTable, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __getstate__(self):
        return self.prefix, self._blob, self._ends

    def __setstate__(self, state):
        self.prefix, self._blob, self._ends = state

    def relative(self) -> "PathTable":
        """The same names without the prefix (sharing this table's buffers)."""
        table = PathTable.__new__(PathTable)
        table.__setstate__(("", self._blob, self._ends))
        return table

    def digest(self) -> bytes:
        """A hash of the names after the prefix and of where each ends: the same files under
        another root (a dataset on another machine) give the same digest."""
        h = hashlib.blake2b(self._ends.astype(np.int64).tobytes(), digest_size=16)
        h.update(self._blob)
        return h.digest()

    def nbytes(self) -> int:
        """Bytes held: the names and their offsets."""
        return len(self._blob) + self._ends.nbytes

    def __repr__(self) -> str:
        return f"PathTable({len(self)} paths under {self.prefix!r})"


def labelled(listings: dict[str, Iterable[str]]) -> PathTable | None:
    """One table of several sources' names (label -> names relative to their root), each name after
    its label, so that a difference between two such tables names the source; None for none."""
    chunks = [[f"{label}: {name}" for name in names] for label, names in listings.items()]
    return PathTable(chunks) if chunks else None
