"""Collating the values of fields no kernel owns, as ``torch.utils.data.default_collate`` would.

Numbers become one array (bool, int64 or float64; integers past int64, such
as 64-bit ids and hashes, uint64 when none is negative, else a list of Python
ints; a column of numbers past float64 stays a list), equal-shape arrays are
stacked (torch, JAX and TensorFlow tensors on the CPU too, as NumPy arrays), a
dict is collated key by key, and anything else (strings, ragged arrays,
``None``, objects) stays a list, in batch order.
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
        try:
            return np.array(values, dtype=np.float64)
        except OverflowError:   # an int past float64 (JSON allows 10**400)
            return list(values)
    if isinstance(first, np.ndarray) and all(isinstance(v, np.ndarray) and v.shape == first.shape
                                             and v.dtype == first.dtype for v in values):
        return np.stack(values)
    if _tensor(first) and all(type(v) is type(first) and _tensor(v) and v.shape == first.shape
                              and v.dtype == first.dtype for v in values):
        try:   # a framework's tensors (a torch Dataset's usual record): as NumPy, then the output's tensors
            return np.stack([np.asarray(v) for v in values])
        except (TypeError, ValueError, RuntimeError):   # on a GPU, or a dtype NumPy lacks (bfloat16)
            return list(values)
    if isinstance(first, dict) and all(isinstance(v, dict) and v.keys() == first.keys() for v in values):
        return {k: collate_values([v[k] for v in values], f"{name}.{k}") for k in first}
    return list(values)


def _tensor(v) -> bool:
    """A framework's array (NumPy's protocol, a shape and a dtype), not a NumPy array or a scalar."""
    return hasattr(v, "__array__") and hasattr(v, "shape") and hasattr(v, "dtype") and not np.isscalar(v)


def _integers(values: list):
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:   # checked as Python ints: a cast of np.int64(-1) to uint64 would wrap
        ints = [int(v) for v in values]
        return np.array(ints, dtype=np.uint64) if min(ints) >= 0 and max(ints) < 2**64 else ints
