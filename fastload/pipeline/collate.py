"""Collating the values of fields no kernel owns, as ``torch.utils.data.default_collate`` would.

Numbers become one array (bool, int64 or float64; integers past int64, such
as 64-bit ids and hashes, uint64 when none is negative, else a list of Python
ints), equal-shape arrays are stacked, a dict is collated key by key, and anything else (strings, ragged
arrays, ``None``, objects) stays a list, in batch order.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["collate_values"]


def collate_values(values: list, name: str = "field"):
    if not values:
        return values
    first = values[0]
    if isinstance(first, (bool, np.bool_)) and all(isinstance(v, (bool, np.bool_)) for v in values):
        return np.array(values, dtype=bool)
    if isinstance(first, numbers.Integral) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                                   for v in values):
        return _integers(values)
    if isinstance(first, numbers.Real) and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                               for v in values):
        return np.array(values, dtype=np.float64)
    if isinstance(first, np.ndarray) and all(isinstance(v, np.ndarray) and v.shape == first.shape
                                             and v.dtype == first.dtype for v in values):
        return np.stack(values)
    if isinstance(first, dict) and all(isinstance(v, dict) and v.keys() == first.keys() for v in values):
        return {k: collate_values([v[k] for v in values], f"{name}.{k}") for k in first}
    return list(values)


def _integers(values: list):
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:   # checked as Python ints: a cast of np.int64(-1) to uint64 would wrap
        ints = [int(v) for v in values]
        return np.array(ints, dtype=np.uint64) if min(ints) >= 0 and max(ints) < 2**64 else ints
