"""Numeric feature rows: :class:`Numeric` copies them, :class:`Standardize` also scales them.

A row is anything NumPy reads as ``size`` floats (a CSVRows row, a list from
JSON, a scalar when ``size`` is 1). A row of the wrong length, a non-number (an
integer past float64's range included), or a NaN/inf is reported as a failure of
its record rather than written into the batch, because one NaN in a batch
poisons a whole gradient step.

The work per chunk is a handful of whole-array NumPy operations in float64
(NumPy releases the GIL for them), then one cast into the float32 batch rows;
Python touches single rows only when the chunk holds a bad one.
"""
from __future__ import annotations

import math
from itertools import islice
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..pipeline.fields import ChunkContext, Field, Output

__all__ = ["Numeric", "Standardize"]

_CHUNK = 4096  # rows per step of the statistics pass


def _blocks(chunks: Iterable[Iterable[Any]]) -> Iterator[list]:
    """The values of ``chunks`` in lists of at most ``_CHUNK``, records the loader skipped (None) left out.

    Bounding the list keeps memory at one block even when one chunk is the whole data set.
    """
    for chunk in chunks:
        it = iter(chunk)
        while taken := list(islice(it, _CHUNK)):   # a block of skipped records alone is not the end
            if block := [v for v in taken if v is not None]:
                yield block


def _as_row(value: Any, size: int | None) -> np.ndarray | str:
    """``value`` as a 1-D float row, or the reason it is not one."""
    if value is None:   # NumPy would read it as NaN
        return _not_finite(value)
    try:
        row = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        return f"not a numeric row ({type(value).__name__}): {e}"
    except OverflowError:   # a Python int past float64's range (JSON allows any size)
        return f"not a numeric row ({type(value).__name__}): a number too large for float64"
    if row.ndim > 1:
        return f"expected a 1-D row, got shape {row.shape}"
    row = row.reshape(-1)
    if size is not None and row.shape[0] != size:
        return f"expected {size} values, got {row.shape[0]}"
    if not np.isfinite(row).all():
        return "row holds NaN or inf"
    return row


def _not_finite(value) -> str:
    return "no value (None)" if value is None else "row holds NaN or inf"


class Numeric(Field):
    """Float32 rows of ``size`` values, copied as they are.

    ``size`` may be left to :meth:`prepare`, which takes it from the first
    training row.
    """

    def __init__(self, size: int | None = None, *, name: str = "number"):
        self.size = None if size is None else int(size)
        self.name = name

    def outputs(self) -> list[Output]:
        if self.size is None:
            raise RuntimeError(f"{type(self).__name__}({self.name!r}) does not know its row size: "
                               "pass size= (or mean=) or call prepare() with the training rows")
        return [Output(self.name, (self.size,), np.dtype(np.float32))]

    @property
    def needs_prepare(self) -> bool:
        """True while the row size is unknown (a preparation pass will take it from the data)."""
        return self.size is None

    def prepare(self, values: Iterable[Any]) -> None:
        """One pass over all training values: ``prepare_chunks([values])``."""
        self.prepare_chunks([values])

    def prepare_chunks(self, chunks: Iterable[Iterable[Any]]) -> None:
        """Take the row size from the first valid row; reads no further than that row."""
        if self.size is None:
            for block in _blocks(chunks):
                if self._size_from(block):
                    return
            raise ValueError(f"{type(self).__name__}({self.name!r}): no valid numeric row to take the size from")

    def _size_from(self, block: list) -> bool:
        for v in block:
            row = _as_row(v, None)
            if not isinstance(row, str):
                self.size = row.shape[0]
                return True
        return False

    def fill(self, values: Sequence[Any], outs: dict[str, np.ndarray],
             ctx: ChunkContext | None = None) -> dict[int, str]:
        rows = outs[self.name][: len(values)]
        if rows.shape[0] < len(values):
            raise ValueError(f"output {self.name!r} has {rows.shape[0]} rows for {len(values)} values")
        block, failures = self._read(values, rows.shape[1])
        out = self._transform(block)
        if rows.dtype.kind == "f":   # finite in float64 but not in the rows' dtype (1e300 in float32): inf
            largest = np.finfo(rows.dtype).max
            big = ~(np.abs(out) <= largest).all(axis=1)
            if big.any():
                for i in np.flatnonzero(big):
                    failures.setdefault(int(i), f"a value beyond {rows.dtype}'s range (largest {largest:.4g})")
                out = np.where(big[:, None], 0.0, out)
        rows[...] = out
        return failures

    def _read(self, values: Sequence[Any], size: int) -> tuple[np.ndarray, dict[int, str]]:
        """The rows as one float64 block (bad rows zeroed) and {i: reason} for the bad ones."""
        n = len(values)
        block = None
        # A None among rows is named by the slow path; NumPy would read it as NaN (and older NumPy
        # warns of rows beside it, which a -W error run turns into an exception).
        if not any(v is None for v in values):
            try:
                block = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):   # the slow path names the bad rows
                pass
        if block is not None and (block.shape == (n, size) or (size == 1 and block.shape == (n,))):
            block = block.reshape(n, size)
            finite = np.isfinite(block).all(axis=1)
            if finite.all():
                return block, {}
            block[~finite] = 0
            return block, {int(i): _not_finite(values[i]) for i in np.flatnonzero(~finite)}
        block = np.zeros((n, size))
        failures = {}
        for i, v in enumerate(values):  # slow path: find the bad rows
            row = _as_row(v, size)
            if isinstance(row, str):
                failures[i] = row
            else:
                block[i] = row
        return block, failures

    def _transform(self, block: np.ndarray) -> np.ndarray:
        """Hook for subclasses: the values to write, from the float64 block."""
        return block


class Standardize(Numeric):
    """Float32 rows scaled to ``(x - mean) / (std + eps)`` per column.

    Give ``mean`` and ``std``, or let :meth:`prepare` compute the missing ones
    from the training rows in one streaming pass (chunks of rows merged with
    Chan's parallel update of count, mean and sum of squared deviations, so
    memory stays one chunk however long the data). Rows holding NaN/inf are
    left out of the statistics. ``std`` is the population standard deviation.
    """

    def __init__(self, mean=None, std=None, *, eps: float = 1e-8, name: str = "number"):
        self.mean = None if mean is None else np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = None if std is None else np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean is not None and self.std is not None and self.mean.shape != self.std.shape:
            raise ValueError(f"mean has shape {self.mean.shape} but std has {self.std.shape}")
        for what, v in (("mean", self.mean), ("std", self.std)):   # NaN passed `std < 0`, inf gave inf rows
            if v is not None and (v.ndim != 1 or not np.isfinite(v).all()):
                raise ValueError(f"Standardize {what} must be one finite number per column, got {v.tolist()!r}")
        if self.std is not None and (self.std < 0).any():
            raise ValueError("std must be non-negative")
        if not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        given = self.mean if self.mean is not None else self.std
        super().__init__(None if given is None else given.shape[0], name=name)
        self.eps = float(eps)
        self._set_scale()

    def _set_scale(self) -> None:
        if self.mean is not None and self.std is not None:
            self._scale = 1.0 / (self.std + self.eps)

    @property
    def needs_prepare(self) -> bool:
        """False when ``mean`` and ``std`` were both given: nothing to compute, no pass over the data."""
        return self.mean is None or self.std is None

    def prepare_chunks(self, chunks: Iterable[Iterable[Any]]) -> None:
        """Statistics from chunks of values (any number of lists, any length), one block of rows in memory.

        None values (records a loader could not read) and invalid rows are left out.
        """
        if not self.needs_prepare:
            return
        count, mean, m2 = 0, None, None
        for values in _blocks(chunks):
            if self.size is None and not self._size_from(values):
                continue
            block, failures = self._read(values, self.size)
            if failures:
                block = np.delete(block, list(failures), axis=0)
            if len(block):
                count, mean, m2 = self._merge(count, mean, m2, block)
        if count == 0:
            raise ValueError(f"Standardize({self.name!r}): no valid numeric rows to compute statistics from")
        if self.mean is None:
            self.mean = mean
        if self.std is None:
            self.std = np.sqrt(m2 / count)
        self._set_scale()

    @staticmethod
    def _merge(count, mean, m2, block: np.ndarray):
        """Chan et al.'s pairwise update: statistics of (seen rows + block)."""
        k = block.shape[0]
        b_mean = block.mean(axis=0)
        b_m2 = ((block - b_mean) ** 2).sum(axis=0)
        if count == 0:
            return k, b_mean, b_m2
        total = count + k
        delta = b_mean - mean
        return total, mean + delta * (k / total), m2 + b_m2 + delta ** 2 * (count * k / total)

    def outputs(self) -> list[Output]:
        if self.mean is None or self.std is None:
            raise RuntimeError(f"Standardize({self.name!r}) has no statistics: pass mean= and std= "
                               "or call prepare() with the training rows")
        return super().outputs()

    def _transform(self, block: np.ndarray) -> np.ndarray:
        block -= self.mean        # in float64: a float32 x - mean loses digits when std << |mean|
        block *= self._scale
        return block
